#!/usr/bin/env bash
# One-command GPU run: install, GPU tests, benchmarks; logs under $OUT (or ./out).
#   bash benchmarks/gpu_run.sh [stage...]   (default: smoke)
#   smoke: compiled kernel tests (tests/kernels -m gpu: Triton, the Mosaic GPU GEMM / producer / merged GEMMs,
#          plus the merged-artefact tests), jax's own Mosaic GPU Hopper matmul against jnp.dot (does Mosaic GPU
#          compile here?), a short per-linear table with Triton and mosaic_* rows, decode tok/s through
#          generate at Omni-3B dims (~8 min)
#   issue 27 (one call each, each <= 8 min, each prints its table as it goes):
#     linear:  per-linear table, Omni-3B and 7B shapes, M 1/16/2048/8192, rank 0 (w4a8) and 64 (w4a8_lr64),
#              Triton rows (w8a8, w4a8, w4a16, w4a8_lr64), mosaic_* rows, XLA dequant+dot, ratios vs bf16 jnp.dot
#              (linear3b / linear7b: the two halves, if one call cannot hold both), then `producer`: the Mosaic
#              producer kernel against the XLA pre-pass it replaces (benchmarks/producer.py)
#     prefill: 12-layer Omni-3B stack, cuDNN flash attention in every arm, Triton vs Mosaic per setting
#     decode:  tok/s through generate at Omni-3B dims, W8A8 / W4A8 / W4A16, Triton vs Mosaic artefacts
#     mosaicsweep: Mosaic GEMM tile configs (MosaicConfig) on 3B q and gate/up at M 2048 and 1, ratios vs bf16
#     calib:   Omni-3B calibration speed, first 4 layers extrapolated to 36 (was calibnew; the full 36-layer
#              run is calibfull)
#   older kernel stages: test quick sweep sweepdec full3b full7b ab full
#   calibration stages (issue 5): calib (= calibnew) calibold (Omni-3B dims, first 4 layers, extrapolated), calibfull
#   (all 36 layers, the <= 10 min target), cmcsolver, core. One device call runs at most 10 min: one calib* stage per call.
#   kernels v2 (issue 16): v2 = v2a, v2b, v2c (about 20 min in all); under a 10-minute call limit, one call each:
#     v2a: compiled GPU tests (merged GEMMs included), the per-linear table with the merged qkv / gate_up
#          (SwiGLU epilogue) shapes, the 12-layer stack prefill with cuDNN flash attention in every arm (~8 min)
#     v2b: decode through generate at Omni-3B dims (bf16 baseline, merged and unmerged artefacts) (~3 min)
#     v2c: Omni-3B calibration speed, first 4 layers extrapolated to 36 (benchmarks/calibrate.py) (~9 min)
set -u
OUT=${OUT:-out}; mkdir -p "$OUT"
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
# Wheels the GPU image lacks (gguf) travel in .whl/ (see docs/kernels.md); installed beside the image's packages.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    > "$OUT/pip_whl.log" 2>&1 && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} || tail -3 "$OUT/pip_whl.log"
fi
python3 -m pip install --no-deps --no-build-isolation -e . -q > "$OUT/pip.log" 2>&1 || tail -5 "$OUT/pip.log"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$OUT/gpu.txt" 2>&1; cat "$OUT/gpu.txt"
expanded=""
for st in ${*:-smoke}; do
  case $st in
    smoke) expanded="$expanded kerneltests mosaictests probe smokelinear smokedecode";;
    linear) expanded="$expanded linear3b linear7b producer";;
    v2)  expanded="$expanded test v2linear v2prefill v2decode calibnew";;
    v2a) expanded="$expanded test v2linear v2prefill";;
    v2b) expanded="$expanded v2decode";;
    v2c) expanded="$expanded calibnew";;
    *)   expanded="$expanded $st";;
  esac
done
for st in $expanded; do
  echo "=== $st $(date -u +%T)"
  case $st in
    kerneltests) timeout 100 python3 -m pytest tests/kernels tests/artifact/test_merged.py -q -m gpu -k "not Mosaic and not Producer and not mosaic" -p no:cacheprovider --tb=short > "$OUT/kerneltests.log" 2>&1; grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/kerneltests.log" | cut -c1-300 | tail -20;;
    mosaictests) timeout 200 python3 -m pytest tests/kernels/test_qmatmul.py tests/kernels/test_producer.py tests/kernels/test_merge.py tests/artifact/test_merged.py -v -m gpu -k "Mosaic or Producer or mosaic" -p no:cacheprovider --tb=line -rfE > "$OUT/mosaictests.log" 2>&1; echo "mosaic GPU tests passed: $(grep -c ' PASSED' "$OUT/mosaictests.log")"; grep -E "^(FAILED|ERROR)|^E |passed|failed" "$OUT/mosaictests.log" | cut -c1-300 | tail -40;;
    probe)  timeout 45 python3 benchmarks/mosaic_probe.py 2>&1 | grep -v Warning > "$OUT/probe.log"; cat "$OUT/probe.log";;
    smokelinear) timeout 80 python3 benchmarks/qmatmul.py --models 3b --linears q,gate/up --m 2048,1 --ranks 64 --impl pallas --mosaic --rotate 2 --reps 3 --json "$OUT/smokelinear.json" 2>&1 | grep -v Warning | tee "$OUT/smokelinear.log";;
    smokedecode) timeout 80 python3 benchmarks/generate.py --model toy:omni3b --dtype bfloat16 --presets w8a8,w4a16 --batches 1 --prompt 256 --new 32 --reps 2 --implementation pallas,mosaic 2>&1 | grep -v Warning | tee "$OUT/smokedecode.log";;
    linear3b) timeout 200 python3 benchmarks/qmatmul.py --models 3b --m 2048,8192,1,16 --ranks 64 --impl pallas --mosaic --rotate 2 --reps 3 --json "$OUT/linear3b.json" 2>&1 | grep -v Warning | tee "$OUT/linear3b.log";;
    linear7b) timeout 200 python3 benchmarks/qmatmul.py --models 7b --m 2048,8192,1,16 --ranks 64 --impl pallas --mosaic --rotate 2 --reps 3 --json "$OUT/linear7b.json" 2>&1 | grep -v Warning | tee "$OUT/linear7b.log";;
    mosaicsweep) timeout 400 python3 benchmarks/qmatmul.py --sweep --sweep-impl mosaic --sweep-settings w8a8,w4a8,w4a16 --models 3b --linears q,gate/up --m 2048,1 --rotate 2 --reps 3 --json "$OUT/mosaicsweep.json" 2>&1 | grep -v Warning | tee "$OUT/mosaicsweep.log";;
    producer) timeout 60 python3 benchmarks/producer.py 2>&1 | grep -v Warning | tee "$OUT/producer.log";;
    prefill) timeout 460 python3 benchmarks/thinker_prefill.py --layers 12 --reps 3 --attention cudnn --variants bf16,bf16_m,w8a8@pallas,w8a8@mosaic,w4a8@pallas,w4a8@mosaic,w4a8_lr64@pallas,w4a8_lr64@mosaic,w4a8_m@pallas,w4a8_m@mosaic,w4a16@xla,w4a16@mosaic 2>&1 | grep -v Warning | tee "$OUT/prefill.log";;
    decode) timeout 460 python3 benchmarks/generate.py --model toy:omni3b --dtype bfloat16 --presets w8a8,w4a8,w4a16 --batches 1 --prompt 256 --new 64 --reps 2 --implementation pallas,mosaic 2>&1 | grep -v Warning | tee "$OUT/decode.log";;
    test)   timeout 200 python3 -m pytest tests -q -m gpu -p no:cacheprovider --tb=short > "$OUT/test_gpu.log" 2>&1; grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/test_gpu.log" | cut -c1-400 | tail -30;;
    quick)  timeout 170 python3 benchmarks/qmatmul.py --quick --gemm-only --json "$OUT/quick.json" 2>&1 | grep -v Warning > "$OUT/quick.log"; cat "$OUT/quick.log";;
    sweep)  timeout 200 python3 benchmarks/qmatmul.py --sweep --models 3b --linears q,gate/up --m 2048 --reps 3 --json "$OUT/sweep.json" 2>&1 > "$OUT/sweep.log"; cat "$OUT/sweep.log";;
    sweepdec) timeout 120 python3 benchmarks/qmatmul.py --sweep --models 7b --linears gate/up --m 1 --reps 3 --json "$OUT/sweepdec.json" > "$OUT/sweepdec.log" 2>&1; grep -v Warning "$OUT/sweepdec.log";;
    full3b) timeout 170 python3 benchmarks/qmatmul.py --models 3b --m 2048,1,8192,512,16 --gemm-only --json "$OUT/full3b.json" 2>&1 | grep -v Warning > "$OUT/full3b.log"; cat "$OUT/full3b.log";;
    full7b) timeout 150 python3 benchmarks/qmatmul.py --models 7b --m 2048,1,8192,16 --ranks 64 --json "$OUT/full7b.json" 2>&1 | grep -v Warning > "$OUT/full7b.log"; cat "$OUT/full7b.log";;
    ab)     timeout 60 python3 -m pytest tests/kernels -q -m gpu -k "wprepass or split" -p no:cacheprovider 2>&1 | tail -2
            timeout 100 python3 benchmarks/qmatmul.py --lora-ab --models 3b --m 2048 --json "$OUT/lora_ab.json" 2>&1 | grep -v Warning > "$OUT/lora_ab.log"; cat "$OUT/lora_ab.log";;
    full)   timeout 420 python3 benchmarks/qmatmul.py --gemm-only --json "$OUT/full.json" 2>&1 | grep -v Warning > "$OUT/full.log"; cat "$OUT/full.log";;
    calib|calibnew) timeout 460 python3 benchmarks/calibrate.py --config omni3b --layers 4 --variants bfloat16:gram --json "$OUT/calibnew.json" 2>&1 | grep -v Warning | tee "$OUT/calibnew.log";;
    calibold) timeout 560 python3 benchmarks/calibrate.py --config omni3b --layers 4 --variants float32:svd --json "$OUT/calibold.json" 2>&1 | grep -v Warning > "$OUT/calibold.log"; tail -25 "$OUT/calibold.log";;
    calibfull)  timeout 580 python3 benchmarks/calibrate.py --config omni3b --progress --json "$OUT/calib.json" 2>&1 | grep -v Warning > "$OUT/calib.log"; tail -30 "$OUT/calib.log";;
    cmcsolver) timeout 300 python3 benchmarks/cmc_solver.py --reps 3 2>&1 | grep -v Warning > "$OUT/cmcsolver.log"; cat "$OUT/cmcsolver.log";;
    core)   timeout 300 python3 benchmarks/core.py 2>&1 | grep -v Warning > "$OUT/core.log"; tail -30 "$OUT/core.log";;
    v2linear) timeout 150 python3 benchmarks/qmatmul.py --models 3b,7b --linears qkv,gate_up,o,down --m 2048,1 --ranks 64 --json "$OUT/v2linear.json" 2>&1 | grep -v Warning > "$OUT/v2linear.log"; cat "$OUT/v2linear.log";;
    v2prefill) timeout 150 python3 benchmarks/thinker_prefill.py --layers 12 --reps 3 --attention cudnn 2>&1 | grep -v Warning > "$OUT/v2prefill.log"; cat "$OUT/v2prefill.log";;
    v2decode) timeout 150 python3 benchmarks/generate.py --model toy:omni3b --dtype bfloat16 --merged --implementation pallas --batches 1 --prompt 512 --new 64 2>&1 | grep -v Warning > "$OUT/v2decode.log"; tail -12 "$OUT/v2decode.log";;
  esac
done
echo "=== done $(date -u +%T)"
