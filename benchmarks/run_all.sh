#!/usr/bin/env bash
# Regenerate benchmarks/RESULTS.md on a quiet machine (nothing else running):
#     benchmarks/run_all.sh            # full set (about 1 h on a 2-core CPU: the 4096 px run dominates)
#     QUICK=1 benchmarks/run_all.sh    # small sizes, to check the scripts run (figures meaningless)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
if [[ -n "${QUICK:-}" ]]; then
  SIZES=256,384; E2E="--size 128 --iterations 10"; ITER="--size 256 --repeats 2"; BIG=""
else
  SIZES=512,1024,2048; E2E="--size 512"; ITER="--size 512 --repeats 5"; BIG=1
fi
$PY benchmarks/write_results.py --begin > "$OUT/RESULTS.md.part"
{
  echo '## Seconds per iteration: restyle loop vs bare VGG-19 forward+backward (target ratio <= 1.15)'
  echo; echo '```'
  for p in fp32 bf16; do $PY benchmarks/iter_overhead.py $ITER --precision "$p" --device cpu; done
  if $PY -c 'import torch,sys; sys.exit(not torch.cuda.is_available())'; then
    for p in fp32 bf16 fp16; do $PY benchmarks/iter_overhead.py $ITER --precision "$p" --device cuda; done
  fi
  echo '```'; echo
  echo '## End to end: tubingen x starry night (images in '"$OUT"')'
  echo; echo '```'
  $PY benchmarks/e2e.py $E2E --device cpu --out "$OUT"
  if $PY -c 'import torch,sys; sys.exit(not torch.cuda.is_available())'; then $PY benchmarks/e2e.py $E2E --device cuda --out "$OUT/cuda"; fi
  echo '```'; echo
  echo '## Peak memory (max RSS, fresh process) against the planner, 3 iterations at one scale'
  echo; echo '```'
  $PY benchmarks/peak_memory.py --sizes "$SIZES" --iterations 3
  echo '```'; echo
  if [[ -n "$BIG" ]]; then
    echo '## 4096 px output (tiled), the full command'
    echo; echo '```'
    /usr/bin/time -v $PY -m restyle stylize examples/tubingen.jpg examples/starry_night.jpg \
      -o "$OUT/tubingen_starry_4096.png" --quiet --size 4096 --scales 512,1024,2048,4096 --iterations 150 \
      2>&1 | grep -E 'Elapsed|Maximum resident'
    echo '```'
  fi
} >> "$OUT/RESULTS.md.part"
mv "$OUT/RESULTS.md.part" benchmarks/RESULTS.md
echo "wrote benchmarks/RESULTS.md"
