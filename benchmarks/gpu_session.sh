#!/usr/bin/env bash
# One-command GPU session: install, GPU tests, benchmarks; logs under $OUT (or ./out).
#   bash benchmarks/gpu_session.sh [stage...]   kernel stages: test quick sweep full prefill (default: test quick)
#   calibration stages (issue 5): calibnew calibold (Omni-3B dims, first 4 layers, extrapolated), calib (all 36
#   layers, the <= 10 min target), cmcsolver, core. One device call runs at most 10 min: one calib* stage per call.
set -u
OUT=${OUT:-out}; mkdir -p "$OUT"
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
python3 -m pip install --no-deps --no-build-isolation -e . -q > "$OUT/pip.log" 2>&1 || tail -5 "$OUT/pip.log"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$OUT/gpu.txt" 2>&1; cat "$OUT/gpu.txt"
stages=${*:-test quick}
for st in $stages; do
  echo "=== $st $(date -u +%T)"
  case $st in
    test)   timeout 200 python3 -m pytest tests -q -m gpu -p no:cacheprovider --tb=short > "$OUT/test_gpu.log" 2>&1; grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/test_gpu.log" | cut -c1-400 | tail -30;;
    quick)  timeout 170 python3 benchmarks/qmatmul.py --quick --gemm-only --json "$OUT/quick.json" 2>&1 | grep -v Warning > "$OUT/quick.log"; cat "$OUT/quick.log";;
    sweep)  timeout 200 python3 benchmarks/qmatmul.py --sweep --models 3b --linears q,gate/up --m 2048 --reps 3 --json "$OUT/sweep.json" 2>&1 > "$OUT/sweep.log"; cat "$OUT/sweep.log";;
    sweepdec) timeout 120 python3 benchmarks/qmatmul.py --sweep --models 7b --linears gate/up --m 1 --reps 3 --json "$OUT/sweepdec.json" > "$OUT/sweepdec.log" 2>&1; grep -v Warning "$OUT/sweepdec.log";;
    full3b) timeout 170 python3 benchmarks/qmatmul.py --models 3b --m 2048,1,8192,512,16 --gemm-only --json "$OUT/full3b.json" 2>&1 | grep -v Warning > "$OUT/full3b.log"; cat "$OUT/full3b.log";;
    full7b) timeout 150 python3 benchmarks/qmatmul.py --models 7b --m 2048,1,8192,16 --ranks 64 --json "$OUT/full7b.json" 2>&1 | grep -v Warning > "$OUT/full7b.log"; cat "$OUT/full7b.log";;
    ab)     timeout 60 python3 -m pytest tests/kernels -q -m gpu -k "wprepass or split" -p no:cacheprovider 2>&1 | tail -2
            timeout 100 python3 benchmarks/qmatmul.py --lora-ab --models 3b --m 2048 --json "$OUT/lora_ab.json" 2>&1 | grep -v Warning > "$OUT/lora_ab.log"; cat "$OUT/lora_ab.log";;
    full)   timeout 420 python3 benchmarks/qmatmul.py --gemm-only --json "$OUT/full.json" 2>&1 | grep -v Warning > "$OUT/full.log"; cat "$OUT/full.log";;
    calibnew) timeout 560 python3 benchmarks/calibrate.py --config omni3b --layers 4 --variants bfloat16:gram --json "$OUT/calibnew.json" 2>&1 | grep -v Warning > "$OUT/calibnew.log"; tail -25 "$OUT/calibnew.log";;
    calibold) timeout 560 python3 benchmarks/calibrate.py --config omni3b --layers 4 --variants float32:svd --json "$OUT/calibold.json" 2>&1 | grep -v Warning > "$OUT/calibold.log"; tail -25 "$OUT/calibold.log";;
    calib)  timeout 580 python3 benchmarks/calibrate.py --config omni3b --progress --json "$OUT/calib.json" 2>&1 | grep -v Warning > "$OUT/calib.log"; tail -30 "$OUT/calib.log";;
    cmcsolver) timeout 300 python3 benchmarks/cmc_solver.py --reps 3 2>&1 | grep -v Warning > "$OUT/cmcsolver.log"; cat "$OUT/cmcsolver.log";;
    core)   timeout 300 python3 benchmarks/core.py 2>&1 | grep -v Warning > "$OUT/core.log"; tail -30 "$OUT/core.log";;
    prefill) timeout 120 python3 benchmarks/thinker_prefill.py --layers 12 --reps 3 --variants bf16,w8a8,w4a8,w4a8_lr32,w4a16 2>&1 | grep -v Warning > "$OUT/prefill.log"; cat "$OUT/prefill.log";;
  esac
done
echo "=== done $(date -u +%T)"
