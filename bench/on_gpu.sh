#!/usr/bin/env bash
# The GPU checks of a session lent a GPU machine, in one call (its device time is short):
#   1. benchmark 2 at a GPU's scale (~1B model, pairs of up to 900 tokens, local model dir and data file);
#   2. the Ray-free trial path under test on the GPU (bf16 compute, float32 master weights);
#   3. benchmark 2 at the built-in scale.
# Logs go to $OUT (the device tool's output folder) or /tmp/ablate-gpu. Pydantic, absent from the
# GPU image, travels as wheels in .whl/ (see /work/.library/device/README.md); Ray does not (its
# wheel is over the transfer limit), so Ray sweeps are not run there.
#   bash bench/on_gpu.sh [--quick]     (--quick: small shapes, a smoke run of this script on CPU)
set -u
OUT=${OUT:-/tmp/ablate-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore
QUICK=${1:-}
PY=${PYTHON:-python3}
if [ -d .whl ] && ! $PY -c "import pydantic" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$OUT/gpu.txt"
t0=$SECONDS
timeout 300 $PY -m bench.simpo_vs_dpo --scale gpu --reps 2 $QUICK 2>&1 | grep -v "Loading weights\|Writing model" | tee "$OUT/bench2_gpu_scale.txt"
echo "(benchmark 2, GPU scale: $((SECONDS - t0)) s)"; t0=$SECONDS
timeout 150 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_precision.py tests/test_trial.py \
  tests/test_fast_paths.py tests/test_losses.py 2>&1 | tee "$OUT/tests_gpu.txt" | tail -12
echo "(tests: $((SECONDS - t0)) s)"; t0=$SECONDS
timeout 120 $PY -m bench.simpo_vs_dpo --reps 1 $QUICK 2>&1 | grep -v "Loading weights\|Writing model" | tee "$OUT/bench2_tiny.txt"
echo "(benchmark 2, built-in scale: $((SECONDS - t0)) s)"
