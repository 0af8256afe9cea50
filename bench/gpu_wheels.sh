#!/usr/bin/env bash
# Builds, here, the wheels that the lent GPU machine lacks for ablate (it has no package index; what
# travels to it is at most 64 MiB with the working tree): the set is checked against 56 MiB.
#
#   bash bench/gpu_wheels.sh [--python-version 3.12] [--dest .whl]
#
# The set is ablate's dependency closure (Requires-Dist, recursively, ray with [tune,train]) less
# what the GPU image already holds (/work/.library/device/KINDS.md, "Python packages already there"):
# ray, deepspeed, optuna, pydantic and datasets, and the small packages only they need. Versions are
# those of the project's own environment (`pip freeze` of the dev venv, 2026-11-29); change them
# together with that venv. Ray's wheel (79 MB for CPython 3.12) is repacked without
# ray/jars/ray_dist.jar (31 MB compressed, Java workers only; nothing Python imports), and its
# RECORD without that line, so that pip installs it. DeepSpeed is an sdist on PyPI: its wheel is
# built here (pure Python, ops compiled on first use), the same for every Python 3.
# bench/check_gpu_wheels.sh proves such a set complete on this machine's Python, without a network.
set -euo pipefail
PYV=3.12
DEST=.whl
LIMIT=$((56 * 1024 * 1024))  # leaves 8 MiB of the 64 MiB transfer for the working tree
while [ $# -gt 0 ]; do
  case $1 in
    --python-version) PYV=$2; shift 2 ;;
    --dest) DEST=$2; shift 2 ;;
    *) echo "usage: bash bench/gpu_wheels.sh [--python-version X.Y] [--dest DIR]" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
command -v zip >/dev/null && command -v unzip >/dev/null || { echo "error: needs zip and unzip" >&2; exit 1; }

RAY=2.60.0
DEEPSPEED=0.19.8
WHEELS=(  # everything but deepspeed: binary wheels for the target Python (py3-none-any where pure)
  "ray==$RAY" optuna==5.0.0 pydantic==2.14.4 pydantic-core==2.50.5 datasets==5.2.0
  alembic==1.20.1 annotated-types==0.8.0 colorlog==6.12.0 dill==0.4.1 hjson==3.1.0
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 mako==1.4.3 multiprocess==0.70.19
  referencing==0.37.0 rpds-py==2026.9.1 tensorboardx==2.6.5 typing-inspection==0.4.5
)
# SQLAlchemy's pure-Python wheel (2.0 MiB; its compiled one is 4.5): its C extensions only speed it up,
# and Optuna needs it only for database storage, which Ray Tune's OptunaSearch does not use.
PURE=(sqlalchemy==2.1.9)
# pip matches manylinux_2_N tags exactly, so name every N a wheel might carry (the GPU machine's glibc
# is recent enough for all of them).
PLATFORMS=(--platform manylinux1_x86_64 --platform manylinux2014_x86_64)
for n in $(seq 17 39); do PLATFORMS+=(--platform "manylinux_2_${n}_x86_64"); done

mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
t0=$SECONDS
$PY -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
  "${PLATFORMS[@]}" -d "$STAGE" "${WHEELS[@]}" 2> >(grep -v "is ignored: it is neither" >&2)
$PY -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
  --platform any -d "$STAGE" "${PURE[@]}" 2> >(grep -v "is ignored: it is neither" >&2)
$PY -m pip wheel -q --no-deps -w "$STAGE" "deepspeed==$DEEPSPEED" 2> >(grep -v "is ignored: it is neither" >&2)

# Ray without its Java jar: delete the member in place (no recompression), then RECORD's line.
ray_whl=$(ls "$STAGE"/ray-$RAY-*.whl)
ray_before=$(stat -c %s "$ray_whl")
zip -q -d "$ray_whl" 'ray/jars/*'
mkdir -p "$STAGE/record/ray-$RAY.dist-info"
unzip -p "$ray_whl" "ray-$RAY.dist-info/RECORD" | grep -v '^ray/jars/' >"$STAGE/record/ray-$RAY.dist-info/RECORD"
(cd "$STAGE/record" && zip -q "$ray_whl" "ray-$RAY.dist-info/RECORD")
if unzip -l "$ray_whl" | grep -q 'ray/jars/'; then echo "error: the jar is still in $ray_whl" >&2; exit 1; fi
ray_after=$(stat -c %s "$ray_whl")

# One version of each package in DEST: two of one name stop the whole install on the GPU machine.
mkdir -p "$DEST"
rm -f "$DEST"/*.whl
mv "$STAGE"/*.whl "$DEST"/
echo "Wheels for CPython $PYV (manylinux x86_64) in $DEST, built in $((SECONDS - t0)) s" \
  "(ray: $(mib "$ray_before") MiB, $(mib "$ray_after") MiB without its jar):"
total=0
for f in "$DEST"/*.whl; do
  size=$(stat -c %s "$f")
  total=$((total + size))
  base=$(basename "$f" .whl)
  printf '  %-28s %-12s %8.2f MiB\n' "${base%%-*}" "$(echo "$base" | cut -d- -f2)" "$(mib "$size")"
done
printf '  %-41s %8.2f MiB (%d wheels; limit %d MiB)\n' total "$(mib "$total")" \
  "$(ls "$DEST"/*.whl | wc -l)" $((LIMIT / 1048576))
if [ "$total" -gt "$LIMIT" ]; then
  echo "error: the set is over $((LIMIT / 1048576)) MiB: it would not travel with the working tree" >&2
  exit 1
fi
