"""Video benchmark: flicker (warping error), style distance and seconds per frame, per engine and mode.

    PYTHONPATH=src .venv/bin/python benchmarks/video.py [--size 96] [--frames 4] [--engines optimiser,network]

Clips:
- pan: a window panning across examples/tubingen.jpg by PAN px per frame, written as a
  folder of lossless PNGs. The true motion is known, so the warping error is exact:
      WE = mean |out_t(x, y) - out_{t-1}(x + PAN, y)|   (grey levels, 0-255)
  over the pixels seen in both frames. The input clip's own WE is 0.
- bunny: ../shared/datasets/video/bigbuckbunny.mp4 (Big Buck Bunny, (c) Blender Foundation,
  CC BY 3.0, www.bigbuckbunny.org). No true flow: WE is measured with DIS flow between the
  *input* frames and Ruder et al.'s reliability mask (the same for every mode).

Each engine runs per-frame (--temporal-weight 0) and temporal (its default weight).
Style distance: benchmarks/quality.py's score() (VGG-16 Gram relative error, lower is
closer to the painting) on the first, middle and last frame. Timings are wall-clock on
whatever else this machine runs: compare the rows of one run, side by side.

The network engine uses `restyle.load_model(--model)` when a model is given; otherwise
a randomly initialised network of the bundled models' size (restyle.models.transformer),
good for timing and flicker of the blend, meaningless for style distance.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from restyle.config import StylizeConfig  # noqa: E402
from restyle.video import FrameDone, NetworkFrames, OptimiserFrames, VideoConfig, stylize_video  # noqa: E402
from restyle.video.flow import FlowEstimator, gray, warp  # noqa: E402
from restyle.video.stylizers import NETWORK_TEMPORAL_WEIGHT, OPTIMISER_TEMPORAL_WEIGHT  # noqa: E402

PHOTO = ROOT / "examples" / "tubingen.jpg"
STYLE = ROOT / "examples" / "starry_night.jpg"
BUNNY = ROOT.parent / "shared" / "datasets" / "video" / "bigbuckbunny.mp4"
PAN = 2  # px per frame


def pan_clip(folder: Path, size: int, frames: int) -> Path:
    photo = Image.open(PHOTO).convert("RGB")
    h = size * 3 // 4 // 2 * 2
    w = size
    scale = max((h + 8) / photo.height, (w + PAN * frames) / photo.width)
    big = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.LANCZOS)
    top = (big.height - h) // 2
    arr = np.asarray(big)[top:top + h]
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(frames):
        Image.fromarray(arr[:, t * PAN:t * PAN + w]).save(folder / f"{t:04d}.png")
    return folder


def load_frames(work: Path) -> list:
    return [np.asarray(Image.open(p).convert("RGB")).astype(np.float32) for p in sorted(work.glob("0*.png"))]


def pan_error(frames: list) -> float:
    return float(np.mean([np.abs(frames[t][:, :-PAN] - frames[t - 1][:, PAN:]).mean() for t in range(1, len(frames))]))


def flow_error(frames: list, inputs: list) -> float:
    """Warping error with the inputs' DIS flow and reliability mask (Ruder et al. 2016)."""
    est, errs = FlowEstimator("medium"), []
    for t in range(1, len(frames)):
        bwd, mask = est.backward_and_mask(gray(inputs[t - 1]), gray(inputs[t]))
        d = np.abs(frames[t] - warp(frames[t - 1], bwd)).mean(-1)
        errs.append(float((d * mask).sum() / max(mask.sum(), 1)))
    return float(np.mean(errs))


def style_distance(frames: list, inputs: list) -> float:
    try:
        from quality import score
    except ImportError:
        return float("nan")
    picks = sorted({0, len(frames) // 2, len(frames) - 1})
    return float(np.mean([score(Image.fromarray(frames[k].astype(np.uint8)), Image.fromarray(inputs[k]), str(STYLE))[1]
                          for k in picks]))


def network(spec: str | None):
    if spec:
        import restyle

        return restyle.load_model(spec).stylize_tensor, spec
    try:
        from restyle.models.transformer import TransformerConfig, TransformerNet
    except ImportError:
        sys.exit("no restyle.models.transformer in this tree (issue 12); pass --engines optimiser")
    torch.manual_seed(0)
    net = TransformerNet(TransformerConfig()).eval()
    return net, f"random TransformerNet{TransformerConfig().to_dict()}"


def run_case(clip: Path, engine: str, weight: float, args, work: Path, inputs: list, kind: str, fps: float) -> dict:
    if engine == "optimiser":
        cfg = StylizeConfig(iterations=args.iterations, device="cpu")
        stylizer = OptimiserFrames([STYLE], cfg, temporal_weight=weight)
    else:
        fn, _ = network(args.model)
        stylizer = NetworkFrames(fn, weight)
    times = []
    vcfg = VideoConfig(size=args.size, keep_frames=True, fps=10 if clip.is_dir() else None,
                       start=0.0 if clip.is_dir() else args.start, duration=None if clip.is_dir() else args.frames / fps)
    out = work / f"{kind}_{engine}_{weight:g}.mp4"
    t0 = time.perf_counter()
    r = stylize_video(clip, out, stylizer, vcfg,
                      callback=lambda e: times.append(e.seconds) if isinstance(e, FrameDone) else None)
    wall = time.perf_counter() - t0
    frames = load_frames(out.with_name(out.name + ".frames"))
    we = pan_error(frames) if kind == "pan" else flow_error(frames, inputs)
    return {"clip": kind, "engine": engine, "temporal_weight": weight, "frames": r.frames,
            "warping_error": round(we, 2), "style_distance": round(style_distance(frames, inputs), 4),
            "s_per_frame": round(r.seconds_per_frame, 3), "first_s": round(times[0], 2),
            "later_s": round(float(np.mean(times[1:])), 2) if len(times) > 1 else None,
            "fps": round(r.frames / wall, 2), "frames_dir": str(out.with_name(out.name + ".frames"))}


def contact_sheet(folders: list, out: Path, count: int = 4) -> None:
    """One row per folder (input first, then each run): `count` consecutive frames side by side."""
    rows = [[Image.open(p).convert("RGB") for p in sorted(f.glob("*.png"))[:count]] for f in folders]
    w, h = rows[0][0].size
    sheet = Image.new("RGB", (w * count + 2 * (count - 1), h * len(rows) + 2 * (len(rows) - 1)), "white")
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            sheet.paste(im, (j * (w + 2), i * (h + 2)))
    sheet.save(out)
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=96, help="long side of the clips (default 96: the optimiser is slow)")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=30, help="optimiser: first frame's iterations")
    ap.add_argument("--engines", default="optimiser,network")
    ap.add_argument("--start", type=float, default=0.0, help="seconds into the bunny clip")
    ap.add_argument("--clips", default="pan,bunny")
    ap.add_argument("--model", default=None, help="a model for restyle.load_model (default: random network)")
    ap.add_argument("--weights", default=None, help="temporal weights to try instead of each engine's default, e.g. 0,4,16")
    ap.add_argument("--work", default=None, help="keep the frames here (default: a temporary folder)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON")
    ap.add_argument("--sheet", default=None, help="write a PNG per clip: 4 consecutive frames, input and each run")
    ap.add_argument("--gif", default=None, help="write a GIF of the last clip's last run (the README's)")
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="restyle-video-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in args.clips.split(","):
        if kind == "pan":
            clip = pan_clip(work / "pan_in", args.size, args.frames)
            inputs = [np.asarray(Image.open(p)) for p in sorted(clip.glob("*.png"))]
            print(f"pan clip: {args.frames} frames, {PAN} px/frame; input WE {pan_error([i.astype(np.float32) for i in inputs]):.2f}")
        else:
            from restyle.video.io import probe, read_frames

            clip = BUNNY
            info = probe(clip)
            inputs = list(read_frames(info, info.out_size(args.size), args.start, args.frames / float(info.fps)))
            print(f"bunny clip: {len(inputs)} frames; input WE (DIS flow) "
                  f"{flow_error([i.astype(np.float32) for i in inputs], inputs):.2f}")
        (work / "inputs" / kind).mkdir(parents=True, exist_ok=True)
        for k, rgb in enumerate(inputs):
            Image.fromarray(rgb).save(work / "inputs" / kind / f"{k:06d}.png")
        for engine in args.engines.split(","):
            default = OPTIMISER_TEMPORAL_WEIGHT if engine == "optimiser" else NETWORK_TEMPORAL_WEIGHT
            for w in ([float(v) for v in args.weights.split(",")] if args.weights else [0.0, default]):
                row = run_case(clip, engine, w, args, work, inputs, kind, 10.0 if kind == "pan" else float(info.fps))
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"\n{'clip':6} {'engine':9} {'W':>5} {'WE':>7} {'style d':>8} {'s/frame':>8} {'first s':>8} {'later s':>8} {'fps':>6}")
    for r in rows:
        print(f"{r['clip']:6} {r['engine']:9} {r['temporal_weight']:5g} {r['warping_error']:7.2f} {r['style_distance']:8.4f} "
              f"{r['s_per_frame']:8.3f} {r['first_s']:8.2f} {r['later_s'] or 0:8.2f} {r['fps']:6.2f}")
    for kind in dict.fromkeys(r["clip"] for r in rows):
        for engine in dict.fromkeys(r["engine"] for r in rows):
            sel = [r for r in rows if r["clip"] == kind and r["engine"] == engine]
            base = next((r for r in sel if r["temporal_weight"] == 0), None)
            for r in sel:
                if base and r is not base:
                    print(f"{kind} {engine} W={r['temporal_weight']:g}: WE {base['warping_error'] / max(r['warping_error'], 1e-9):.1f}x lower "
                          f"than per-frame, style distance {r['style_distance'] / base['style_distance'] - 1:+.1%}")
    if args.sheet:
        for kind in dict.fromkeys(r["clip"] for r in rows):
            sel = [r for r in rows if r["clip"] == kind]
            contact_sheet([work / "inputs" / kind] + [Path(r["frames_dir"]) for r in sel],
                          Path(args.sheet).with_name(f"{Path(args.sheet).stem}_{kind}.png"))
    if args.gif and rows:
        frames = [Image.open(p).convert("RGB") for p in sorted(Path(rows[-1]["frames_dir"]).glob("0*.png"))]
        frames[0].save(args.gif, save_all=True, append_images=frames[1:], duration=80, loop=0, optimize=True)
        print(f"wrote {args.gif}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print(f"frames kept in {work}")


if __name__ == "__main__":
    main()
