#!/usr/bin/env bash
# P6: candidates per minute of a 32x32 Fashion-MNIST search (16 candidates, resnet56 -> resnet20) on a GPU,
# to set against the same command on the CPU (`DEVICE=cpu bench/gpu_search_rate.sh`).
# Expects gpu_check/ (ignored) to hold the Fashion-MNIST IDX files; trains a 1-epoch resnet56 teacher there
# when gpu_check/resnet56_fmnist_1ep.pt is missing; on a machine without the project's dependencies, wheels
# in .whl/.
set -euo pipefail
DEVICE=${DEVICE:-cuda}
OUTDIR=runs/search-$DEVICE
SAVE=${OUT:-runs}
TEACHER=gpu_check/resnet56_fmnist_1ep.pt
PY=${PY:-python3}
if [ -d .whl ] && ! $PY -c "import lark, pydantic" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
[ "$DEVICE" = cpu ] || nvidia-smi -L
if [ ! -f "$TEACHER" ]; then  # one epoch: the teacher's quality does not change the rate
  $PY -m autokd_dsl teacher resnet56 --data fashion-mnist --data-root gpu_check --input-size 3x32x32 \
    --epochs 1 --device "$DEVICE" --out "$TEACHER"
  cp "$TEACHER" "$SAVE/" 2>/dev/null || true
fi
rm -rf "$OUTDIR"
start=$(date +%s.%N)
PYTHONUNBUFFERED=1 $PY -m autokd_dsl search examples/space.kd --teacher resnet56 --student resnet20 \
  --teacher-weights "$TEACHER" --data fashion-mnist --data-root gpu_check \
  --input-size 3x32x32 --budget 16 --epochs 2 --subset 0.5 --seed 0 --device "$DEVICE" --out "$OUTDIR"
end=$(date +%s.%N)
$PY - "$OUTDIR" "$start" "$end" <<'PYEOF'
import csv, sys
out, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
rows = list(csv.DictReader(open(f"{out}/evaluations.csv")))
secs = sum(float(r["seconds"]) for r in rows)
print(f"{len(rows)} candidates; evaluation time {secs:.1f} s -> {60 * len(rows) / secs:.2f} candidates/min "
      f"(whole command incl. data, teacher pass and KD baseline: {end - start:.1f} s)")
PYEOF
cp "$OUTDIR/evaluations.csv" "$SAVE/evaluations-$DEVICE.csv" 2>/dev/null || true
cp "$OUTDIR/report.md" "$SAVE/report-$DEVICE.md" 2>/dev/null || true
