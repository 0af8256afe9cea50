#!/usr/bin/env bash
# The GPU checks of a session lent a GPU machine, in one device call of at most 8 minutes:
#   1. the carried wheels (bench/gpu_wheels.sh: Ray without its jar, DeepSpeed, Optuna, pydantic,
#      datasets, ...) into /tmp/site, only those the machine lacks;
#   2. a Ray Tune sweep (python -m ablate.run) of single-GPU trials, bf16, on benchmark 2's GPU-scale
#      model and data (bench/gpu_sweep.py): SimPO and DPO, 2 seeds each, one after another;
#   3. one SimPO trial on 1 Ray Train worker with DeepSpeed ZeRO-3 (NCCL, bf16);
#   4. tests/test_gpu.py;
#   5. benchmark 4 at GPU scale (bench/lora_vs_full.py --scale gpu): SimPO and DPO, full fine-tuning vs a
#      LoRA adapter, peak memory and runtime side by side (one repetition);
#   6. each trial's final metrics and model FLOPs utilisation, and the report (python -m analysis.report).
# nvidia-smi samples utilisation and memory every second during 2-5. Every step has its own timeout,
# cut to what the 8 minutes have left (the last steps keep a reserve). To $OUT (the device tool's
# output folder; /tmp/ablate-gpu here): on_gpu.log, nvidia_smi.csv, final_metrics.json and
# results.tar.gz (trial results without checkpoints, the report, the sweep file).
#
#   bash bench/gpu_wheels.sh                    # here, once: .whl/ (ignored by git, ~54 MiB)
#   device run: command "bash bench/on_gpu.sh", carry [".whl"], timeout_s 600
#   bash bench/on_gpu.sh --dry-run              # here: prints every step's command and runs the CPU
#                                               # parts at --quick scale (build, ablate.run --dry-run)
set -u
DRY=0
[ "${1:-}" = --dry-run ] && DRY=1
OUT=${OUT:-/tmp/ablate-gpu}
WORK=${WORK:-/tmp/ablate-gpu-work$([ $DRY = 1 ] && echo -quick)}
SITE=${SITE:-/tmp/site}
PY=${PYTHON:-python3}
BUDGET=${BUDGET:-460}  # seconds for all steps: 8 minutes less a margin for a step killed at its limit
RESERVE=60             # kept for the final steps (metrics, report, packing) until they run
mkdir -p "$OUT" "$WORK"
exec > >(tee "$OUT/on_gpu.log") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore
export RAY_AUTH_MODE=disabled TORCH_EXTENSIONS_DIR=$WORK/torch_extensions
# Ray's worker processes import ablate and bench from here, and the carried packages from $SITE.
export PYTHONPATH=$([ $DRY = 0 ] && echo "$SITE:")$PWD PY SITE
TIMES=()
FAILED=()

# step [--cpu] NAME LIMIT_S COMMAND...: prints the command (a function's body too) and runs it under
# its own timeout, cut to what the 8 minutes have left; with --dry-run only --cpu steps run.
step() {
  local cpu=0
  [ "$1" = --cpu ] && { cpu=1; shift; }
  local name=$1 limit=$2 t=$SECONDS rc
  shift 2
  local left=$((BUDGET - RESERVE - SECONDS))
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (timeout ${limit} s): $*"
  if declare -F "$1" >/dev/null; then declare -f "$1" | sed '1,2d;$d'; fi
  [ $DRY = 1 ] && [ $cpu = 0 ] && return 0
  if [ "$limit" -lt 10 ]; then
    echo "   skipped: the 8 minutes are spent"
    TIMES+=("$name: skipped")
    FAILED+=("$name")
    return 1
  fi
  if declare -F "$1" >/dev/null; then  # timeout runs programs: a function goes with its definition
    timeout -k 10 "$limit" bash -c "$(declare -f "$1"); $*"
  else
    timeout -k 10 "$limit" "$@"
  fi
  rc=$?
  echo "   ($name: $((SECONDS - t)) s, exit $rc)"
  TIMES+=("$name: $((SECONDS - t)) s, exit $rc")
  [ $rc = 0 ] || FAILED+=("$name")
  return $rc
}

# Wheels of packages the machine already has are left out: its own copy stays in use.
install_wheels() {
  local wheels
  wheels=$($PY - .whl/*.whl <<'EOF'
import sys
from importlib import metadata

for wheel in sys.argv[1:]:
    name = wheel.rsplit("/", 1)[-1].split("-")[0]
    try:
        print(f"   {name} {metadata.version(name)} is already here: its wheel is not installed", file=sys.stderr)
    except metadata.PackageNotFoundError:
        print(wheel)
EOF
  )
  # shellcheck disable=SC2086  # one path per word
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" $wheels
}
# The versions in use, and any requirement of a carried package that this machine does not meet.
environment() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch, transformers, ray, deepspeed, pydantic, datasets, optuna
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), '| transformers', transformers.__version__,
      '| ray', ray.__version__, '| deepspeed', deepspeed.__version__, '| pydantic', pydantic.__version__,
      '| datasets', datasets.__version__, '| optuna', optuna.__version__)"
  local names
  names=$(for f in .whl/*.whl; do basename "$f" | cut -d- -f1; done | paste -sd'|')
  $PY -m pip check 2>&1 | grep -i -E "^($names) " || echo "   pip check: the carried packages' requirements are met"
}

QUICK=$([ $DRY = 1 ] && echo --quick)
SWEEP=$WORK/sweep.yaml
if [ $DRY = 0 ]; then
  [ -d .whl ] || { echo "error: no .whl/ (bench/gpu_wheels.sh, then carry it)"; exit 1; }
fi
step "install wheels" 90 install_wheels
step "environment" 45 environment
step --cpu "build model, data and sweep" 120 $PY -m bench.gpu_sweep build --out "$WORK" $QUICK
step --cpu "sweep dry run" 60 $PY -m ablate.run "$SWEEP" --dry-run
step --cpu "ZeRO-3 trial dry run" 60 $PY -m ablate.run "$WORK/zero3.yaml" --dry-run
SMI="nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1"
echo "== GPU samples in the background: $SMI > $OUT/nvidia_smi.csv"
if [ $DRY = 0 ]; then
  $SMI >"$OUT/nvidia_smi.csv" 2>&1 &
  SMI_PID=$!
fi
step "Ray Tune sweep, 4 single-GPU trials" 210 $PY -m ablate.run "$SWEEP" --overwrite
step "Ray Train + DeepSpeed ZeRO-3 trial" 150 $PY -m ablate.run "$WORK/zero3.yaml" --overwrite
step "tests/test_gpu.py" 90 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py
step "LoRA vs full at GPU scale" 120 $PY -m bench.lora_vs_full --scale gpu --reps 1
if [ $DRY = 0 ]; then
  kill "$SMI_PID"
  awk -F', ' 'NR > 1 { n++; u += $2; if ($2 + 0 > 0) busy++; if ($3 + 0 > m) m = $3 + 0 }
    END { if (n) printf "   nvidia-smi: %d samples, %d with the GPU busy, mean utilisation %.0f %%, most memory %d MiB\n",
      n, busy, u / n, m }' "$OUT/nvidia_smi.csv"
fi
RESERVE=0
step "final metrics and MFU" 30 $PY -m bench.gpu_sweep mfu "$WORK" --json "$OUT/final_metrics.json"
step "report" 60 $PY -m analysis.report "$WORK/results/gpu-simpo-dpo" --out "$WORK/reports" --name gpu
step "pack results" 30 tar czf "$OUT/results.tar.gz" -C "$WORK" --exclude="checkpoint_*" results reports \
  sweep.yaml zero3.yaml flops.json
echo "== timings"
printf '   %s\n' "${TIMES[@]}"
echo "   total: $SECONDS s"
[ ${#FAILED[@]} = 0 ] || printf '   failed or skipped: %s\n' "${FAILED[@]}"
sleep 1  # lets tee write the last lines before the command returns
[ ${#FAILED[@]} = 0 ]
