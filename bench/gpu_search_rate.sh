#!/usr/bin/env bash
# P6: candidates per minute of a 32x32 Fashion-MNIST search (16 candidates, resnet56 -> resnet20) on a GPU,
# to set against the same command on the CPU (`DEVICE=cpu bench/gpu_search_rate.sh`).
# Expects gpu_check/ (ignored) to hold the Fashion-MNIST IDX files and a resnet56 teacher checkpoint
# (gpu_check/resnet56_fmnist_1ep.pt, made with autokd_dsl.teacher.train_teacher), and, on a machine without
# the project's dependencies, wheels in .whl/.
set -euo pipefail
DEVICE=${DEVICE:-cuda}
OUTDIR=${OUT:-runs}/search-$DEVICE
if [ -d .whl ] && ! python3 -c "import lark, pydantic" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
PY=${PY:-python3}
[ "$DEVICE" = cpu ] || nvidia-smi -L
rm -rf "$OUTDIR"
start=$(date +%s.%N)
PYTHONUNBUFFERED=1 $PY -m autokd_dsl search examples/space.kd --teacher resnet56 --student resnet20 \
  --teacher-weights gpu_check/resnet56_fmnist_1ep.pt --data fashion-mnist --data-root gpu_check \
  --input-size 3x32x32 --budget 16 --seed 0 --device "$DEVICE" --out "$OUTDIR"
end=$(date +%s.%N)
$PY - "$OUTDIR" "$start" "$end" <<'PYEOF'
import csv, sys
out, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
rows = list(csv.DictReader(open(f"{out}/evaluations.csv")))
secs = sum(float(r["seconds"]) for r in rows)
print(f"{len(rows)} candidates; evaluation time {secs:.1f} s -> {60 * len(rows) / secs:.2f} candidates/min "
      f"(whole command incl. data, teacher pass and KD baseline: {end - start:.1f} s)")
PYEOF
