#!/usr/bin/env bash
# Regenerate benchmarks/RESULTS.md on a quiet machine (nothing else running):
#     benchmarks/run_all.sh                      # every section (~30 min on a 2-core CPU: the big outputs dominate)
#     SECTIONS="iter e2e" benchmarks/run_all.sh  # some sections; the others keep their last figures
#     QUICK=1 benchmarks/run_all.sh              # small sizes, to check the scripts run (figures meaningless)
# Each section's figures go to $OUT/section_NAME.md; RESULTS.md is the header plus every section file.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-benchmarks/out}
SECTIONS=${SECTIONS:-iter e2e mem big ray}
IMAGES=benchmarks/images
mkdir -p "$OUT" "$IMAGES"
if [[ -n "${QUICK:-}" ]]; then
  SIZES=256,384; E2E="--size 128 --iterations 10"; ITER="--size 256 --repeats 2"; BIG=(256 384 512)
  RAY="--photos 2 --size 64 --iterations 2"; RAYCHECK="--photos 3 --iterations 4"
else
  SIZES=512,1024,2048; E2E="--size 512"; ITER="--size 512 --repeats 3"; BIG=(1024 2048 4096)
  RAY="--photos 8 --size 128 --iterations 30"; RAYCHECK="--photos 20"
fi
stamp() { echo; echo "Run $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1 /proc/loadavg) when it started."; }
has_cuda() { $PY -c 'import torch,sys; sys.exit(not torch.cuda.is_available())'; }
timed() {  # wall time and peak RSS of a command
  /usr/bin/time -v "$@" 2>&1 | grep -E 'Elapsed|Maximum resident' | sed 's/^\s*/    /'
}

$PY benchmarks/write_results.py --begin > "$OUT/header.md"  # the load before this run's work
for section in $SECTIONS; do
  case $section in
  iter) {
    echo '## Seconds per iteration: restyle loop vs bare VGG-19 forward+backward (target ratio <= 1.15)'
    stamp
    echo; echo '```'
    for p in bf16 fp32; do $PY benchmarks/iter_overhead.py $ITER --precision "$p" --device cpu; done
    if has_cuda; then for p in fp32 bf16 fp16; do $PY benchmarks/iter_overhead.py $ITER --precision "$p" --device cuda; done; fi
    echo '```'; echo
  } > "$OUT/section_iter.md" ;;
  e2e) {
    echo "## End to end: tubingen x starry night (images in $IMAGES/e2e)"
    stamp
    echo; echo '```'
    for only in "bf16 multi" "fp32 multi" "bf16 single" "three-scale"; do
      $PY benchmarks/e2e.py $E2E --device cpu --only "$only" --out "$IMAGES/e2e"
    done
    if has_cuda; then $PY benchmarks/e2e.py $E2E --device cuda --out "$IMAGES/e2e_cuda"; fi
    echo '```'; echo
  } > "$OUT/section_e2e.md" ;;
  mem) {
    echo '## Peak memory (max RSS, fresh process) against the planner, 3 iterations at one scale'
    stamp
    echo; echo '```'
    $PY benchmarks/peak_memory.py --sizes "$SIZES" --iterations 3
    echo '```'; echo
  } > "$OUT/section_mem.md" ;;
  big) {
    echo "## Large outputs: default settings at ${BIG[0]} and ${BIG[1]} px; ${BIG[2]} px refined from the ${BIG[1]} px result"
    stamp
    echo
    echo "The ${BIG[2]} px run starts from the ${BIG[1]} px result, upsampled (\`--init\`), and runs 6 tiled"
    echo "L-BFGS iterations at full size: the planner picks the tiles; one iteration at this size"
    echo "costs ~60x one at 512 px on this CPU, so a full pyramid there would take hours."
    echo; echo '```'
    for s in "${BIG[0]}" "${BIG[1]}"; do
      echo "restyle stylize examples/tubingen.jpg examples/starry_night.jpg --size $s"
      timed $PY -m restyle stylize examples/tubingen.jpg examples/starry_night.jpg \
        -o "$OUT/tubingen_starry_$s.png" --quiet --size "$s"
    done
    echo "restyle stylize ... --size ${BIG[2]} --scales 1 --iterations 6 --init tubingen_starry_${BIG[1]}.png"
    timed $PY -m restyle stylize examples/tubingen.jpg examples/starry_night.jpg \
      -o "$OUT/tubingen_starry_${BIG[2]}.png" --quiet --size "${BIG[2]}" --scales 1 --iterations 6 \
      --init "$OUT/tubingen_starry_${BIG[1]}.png"
    $PY -c "import json,sys; d=json.load(open(sys.argv[1])); print('    memory plan:', d['memory_plan']['stages'])" \
      "$OUT/tubingen_starry_${BIG[2]}.png.json"
    echo '```'; echo
  } > "$OUT/section_big.md" ;;
  ray) {
    echo '## Batch on Ray: photos per minute with 1 and 2 workers, scheduling overhead, a killed worker'
    stamp
    echo
    $PY benchmarks/ray_scaling.py $RAY --markdown
    echo
    echo 'The done-when check: a 2-worker local cluster, one worker killed midway, against the local run.'
    echo; echo '```'
    $PY benchmarks/ray_check.py $RAYCHECK
    echo '```'; echo
  } > "$OUT/section_ray.md" ;;
  *) echo "unknown section $section (iter, e2e, mem, big, ray)" >&2; exit 2 ;;
  esac
done

{
  cat "$OUT/header.md"
  for section in iter e2e mem big ray; do
    [[ -f "$OUT/section_$section.md" ]] && cat "$OUT/section_$section.md"
  done
} > "$OUT/RESULTS.md.part"
mv "$OUT/RESULTS.md.part" benchmarks/RESULTS.md
echo "wrote benchmarks/RESULTS.md"
