#!/usr/bin/env bash
# Proves, on this machine and without a package index, that a wheel set built by bench/gpu_wheels.sh
# is what a machine like the lent GPU one needs to run ablate: a fresh venv first gets the packages
# the GPU image already holds (KINDS.md; the registry stands in for the image, torch from this
# machine's disk), then only the wheel folder; a tiny Ray Tune sweep, the CPU side of bench/on_gpu.sh
# and the Ray Train + DeepSpeed ZeRO-3 test then run in it. This machine has CPython 3.11, the GPU machine 3.12, so the set checked
# here is the 3.11 twin of the GPU's (same script, same versions):
#
#   bash bench/gpu_wheels.sh --python-version 3.11 --dest .whl-cp311
#   bash bench/check_gpu_wheels.sh [--wheels .whl-cp311] [--venv /tmp/ablate-gpu-wheels]
#
# Takes ~5-6 minutes on 2 CPU cores (the distributed test is half of it).
set -euo pipefail
WHEELS=.whl-cp311
VENV=/tmp/ablate-gpu-wheels-venv
while [ $# -gt 0 ]; do
  case $1 in
    --wheels) WHEELS=$2; shift 2 ;;
    --venv) VENV=$2; shift 2 ;;
    *) echo "usage: bash bench/check_gpu_wheels.sh [--wheels DIR] [--venv DIR]" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
WHEELS=$(realpath "$WHEELS")
ls "$WHEELS"/*.whl >/dev/null || { echo "error: no wheels in $WHEELS (bench/gpu_wheels.sh)" >&2; exit 1; }
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false RAY_AUTH_MODE=disabled PYTHONWARNINGS=ignore
export TORCH_EXTENSIONS_DIR=$PWD/.cache/torch_extensions
# The carried packages (ablate's direct needs among them), as pip names them.
CARRIED=$(for f in "$WHEELS"/*.whl; do basename "$f" | cut -d- -f1; done)
TOP=("ray[tune,train]" deepspeed optuna pydantic datasets)
# What the GPU image holds (KINDS.md) and ablate's closure needs, at the GPU's versions where KINDS.md
# gives one; torch is this machine's CPU build of 2.13 (the GPU's is 2.11+cu130). typer (transformers
# needs it) from 0.29 on requires pydantic, which the image lacks: its typer is older.
IMAGE=(
  transformers==5.17.0 tokenizers==0.23.2 safetensors==0.8.0 huggingface-hub==1.33.0 accelerate==1.15.0
  peft pandas scipy scikit-learn matplotlib rich psutil pyyaml jinja2 markupsafe tabulate pyarrow
  grpcio msgpack protobuf click filelock requests fsspec packaging tqdm xxhash einops ninja py-cpuinfo
  attrs typing-extensions pytest pytest-timeout "typer<0.29"
)

echo "== 1. venv $VENV with the GPU image's packages (registry; torch from disk)"
rm -rf "$VENV"
python3 -m venv "$VENV"
PY=$VENV/bin/python
t=$SECONDS
pipq() { $PY -m pip "$@" 2> >(grep -v "is ignored: it is neither" >&2); }  # this machine's index notes
pipq install -q torch==2.13.0
pipq install -q -c constraints.txt "${IMAGE[@]}"
echo "   image packages installed in $((SECONDS - t)) s"
# None of the carried packages may have come with the image: the folder alone must provide them.
$PY - $CARRIED <<'EOF'
import sys
from importlib import metadata

present = [n for n in sys.argv[1:] if any(True for _ in metadata.distributions(name=n))]
if present:
    sys.exit(f"error: the emulated image already holds carried packages: {present}")
EOF

echo "== 2. the GPU machine's install: every wheel, --no-deps, into a target folder on PYTHONPATH"
SITE=$(mktemp -d)
trap 'rm -rf "$SITE"' EXIT
t=$SECONDS
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
echo "   installed $(ls "$WHEELS"/*.whl | wc -l) wheels ($(du -sh "$WHEELS" | cut -f1)) in $((SECONDS - t)) s"
PYTHONPATH=$SITE:$PWD $PY -c "import ray, ray.tune, ray.train.torch, deepspeed, optuna, pydantic, datasets
import ablate.sweep.tune, ablate.trial.backends.deepspeed, analysis.report
print('   imports from the target folder: ray', ray.__version__, 'deepspeed', deepspeed.__version__)"

echo "== 3. the same wheels into the venv, resolved with dependencies, from the folder alone"
t=$SECONDS
$PY -m pip install -q --no-index --find-links "$WHEELS" "${TOP[@]}"
$PY -m pip install -q --no-index --no-deps --no-build-isolation -e .
echo "   installed in $((SECONDS - t)) s"
$PY -m pip check
$PY - $CARRIED <<'EOF'
import sys
from importlib import metadata

unused = [n for n in sys.argv[1:] if not any(True for _ in metadata.distributions(name=n))]
print(f"   wheels that no requirement pulled in: {unused or 'none'}")
EOF
$PY -c "import ablate, sys; assert ablate.__file__.startswith('$PWD'), ablate.__file__"

echo "== 4. the tiny sweep on Ray Tune"
STORE=$(mktemp -d)
t=$SECONDS
$PY -m ablate.run sweeps/tiny.yaml --storage "$STORE" --overwrite 2>&1 | tail -8
echo "   tiny sweep: $((SECONDS - t)) s"
rm -rf "$STORE"/*

echo "== 5. bench/on_gpu.sh --dry-run: the GPU sweep's files at --quick scale (a local model dir and .jsonl)"
t=$SECONDS
PYTHON=$PY OUT=$STORE/out WORK=$STORE/work bash bench/on_gpu.sh --dry-run >"$STORE/dry-run.log" 2>&1 ||
  { cat "$STORE/dry-run.log"; exit 1; }
grep -A5 "^== sweep dry run" "$STORE/dry-run.log" | tail -5
echo "   on_gpu.sh --dry-run: $((SECONDS - t)) s"
rm -rf "$STORE"

echo "== 6. tests/test_distributed.py (2 Ray Train workers, DeepSpeed ZeRO-3)"
t=$SECONDS
$PY -m pytest -q -p no:cacheprovider tests/test_distributed.py 2>&1 | tail -3
echo "   test_distributed: $((SECONDS - t)) s"
echo "== all checks passed in $SECONDS s"
