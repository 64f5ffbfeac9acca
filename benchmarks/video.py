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

--speed: milliseconds per frame of each stage of the network engine (wall, and CPU of
the stage's thread: the figure other jobs on the machine change least), temporal mode
on, on the bunny clip at 320 px (320x180) and a 320x240 pan clip: the serial loop
restyle.video.pipeline had before issue 13's speed-up (fp32, torch and OpenCV each a thread per core, every frame saved as
PNG then read back to encode), re-created here stage by stage; the same serial loop
with today's settings (bf16 where native, the cores shared between torch and OpenCV);
and stylize_video itself (stages overlapped on three threads). Then the whole
`restyle video` command, start-up included.

The network engine uses `restyle.load_model(--model)` when a model is given; otherwise
a randomly initialised network of the bundled models' size (restyle.models.transformer),
good for timing and flicker of the blend, meaningless for style distance.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from restyle.config import StylizeConfig  # noqa: E402
from restyle.device import resolve_precision  # noqa: E402
from restyle.video.background import cpu_cores  # noqa: E402
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

        # The precision `restyle video --model` picks: bf16 where the CPU has it natively.
        return restyle.load_model(spec, precision=resolve_precision("auto", torch.device("cpu"))).stylize_tensor, spec
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


def side_by_side_gif(folders: list, out: Path, scale: float, count: int) -> None:
    """The runs' frames side by side, looping. One palette for all frames and no dithering,
    so the GIF adds no flicker of its own to what it shows."""
    runs = [sorted(f.glob("0*.png"))[:count] for f in folders]
    frames = []
    for paths in zip(*runs):
        ims = [Image.open(p).convert("RGB") for p in paths]
        w, h = round(ims[0].width * scale), round(ims[0].height * scale)
        sheet = Image.new("RGB", (len(ims) * (w + 4) - 4, h), "white")
        for i, im in enumerate(ims):
            sheet.paste(im.resize((w, h), Image.Resampling.LANCZOS), (i * (w + 4), 0))
        frames.append(sheet)
    picks = sorted({0, len(frames) // 3, 2 * len(frames) // 3, len(frames) - 1})
    strip = Image.new("RGB", (frames[0].width, frames[0].height * len(picks)))
    for i, k in enumerate(picks):
        strip.paste(frames[k], (0, i * frames[0].height))
    palette = strip.quantize(256, method=Image.Quantize.MEDIANCUT)
    gif = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    gif[0].save(out, save_all=True, append_images=gif[1:], duration=80, loop=0)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {len(gif)} frames of {frames[0].width}x{frames[0].height})")


SPEED_SIZE = 320  # the bar: >= 10 frames/s at 320x240
STAGES = ("read", "flow", "warp", "stylize", "save", "load", "encode")


def serial_loop(clip: Path, model, size: int, frames: int, work: Path, threads) -> dict:
    """The loop as it was before the speed-up, one stage after another, each timed.

    Decode and resize; DIS flow both ways and the consistency check; warp; network,
    blend and rounding to 8 bits; save as PNG; then, once every frame is done, read
    the PNGs back and encode them. `threads`: None leaves torch and OpenCV at their
    defaults (a thread per core each), a number shares the cores as stylize_video does.
    """
    from restyle.video.background import thread_share
    from restyle.video.io import VideoWriter, probe, read_frames
    from restyle.video.pipeline import Stages, to_rgb, to_tensor
    from restyle.video.temporal import temporal_blend

    info = probe(clip, Fraction(10) if clip.is_dir() else None)
    wh = info.out_size(size)
    st, est = Stages(), FlowEstimator("medium")
    work.mkdir(parents=True, exist_ok=True)
    w0, c0 = time.perf_counter(), time.process_time()
    with thread_share(threads):
        prev_gray = prev_out = None
        it = read_frames(info, wh)
        n = 0
        for k in range(frames):
            t = st.mark()
            rgb = next(it, None)
            if rgb is None:
                break
            t = st.add("read", t)
            cur_gray, motion = gray(rgb), None
            if prev_gray is not None:
                motion = est.backward_and_mask(prev_gray, cur_gray)
            t = st.add("flow", t)
            prev = None
            if motion is not None:
                prev = (to_tensor(warp(prev_out, motion[0])), torch.from_numpy(motion[1])[None, None])
            t = st.add("warp", t)
            out = model.stylize_tensor(to_tensor(rgb)).float()
            if prev is not None:
                out = temporal_blend(out, prev[0], prev[1], NETWORK_TEMPORAL_WEIGHT)
            result = to_rgb(out)
            t = st.add("stylize", t)
            Image.fromarray(result).save(work / f"{k:06d}.png", compress_level=1)
            st.add("save", t)
            prev_gray, prev_out, n = cur_gray, result, k + 1
        with VideoWriter(work / "out.mp4", wh, info.fps) as writer:
            for k in range(n):
                t = st.mark()
                rgb = np.asarray(Image.open(work / f"{k:06d}.png").convert("RGB"))
                t = st.add("load", t)
                writer.write(rgb)
                st.add("encode", t)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return speed_row(n, wh, st.totals(), st.totals(cpu=True), wall, cpu)


def speed_row(n: int, wh, wall_s: dict, cpu_s: dict, wall: float, cpu: float) -> dict:
    return {"frames": n, "size": f"{wh[0]}x{wh[1]}", "wall_ms": {k: 1000 * v / n for k, v in wall_s.items()},
            "cpu_ms": {k: 1000 * v / n for k, v in cpu_s.items()}, "fps": n / wall, "process_cpu_ms": 1000 * cpu / n}


def pipeline_run(clip: Path, model, size: int, frames: int, work: Path) -> dict:
    """stylize_video itself, network engine, temporal mode on (the default weight)."""
    info_fps = 10 if clip.is_dir() else 25
    vcfg = VideoConfig(size=size, fps=10 if clip.is_dir() else None, duration=frames / info_fps)
    shutil.rmtree(work, ignore_errors=True)  # a fresh run, not a resumed one
    work.mkdir(parents=True)
    out = work / "out.mp4"
    w0, c0 = time.perf_counter(), time.process_time()
    r = stylize_video(clip, out, NetworkFrames(model.stylize_tensor, NETWORK_TEMPORAL_WEIGHT), vcfg,
                      work_dir=work / "frames")
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    from restyle.video.io import probe

    wh = probe(clip, Fraction(10) if clip.is_dir() else None).out_size(size)
    return speed_row(r.frames, wh, r.report["stage_seconds"], r.report["stage_cpu_seconds"], wall, cpu)


def cli_run(model: str, size: int, work: Path) -> dict:
    """The whole `restyle video` command on the bunny clip, start-up and model loading included."""
    out = work / "cli.mp4"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "restyle", "video", str(BUNNY), "--model", model, "-o", str(out),
                           "--size", str(size)], env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
                          capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    rates = re.findall(r"([0-9.]+)frame/s", proc.stderr)  # the progress bar's last rate
    return {"wall_s": wall, "cpu_s": cpu, "bar_fps": float(rates[-1]) if rates else float("nan"),
            "line": proc.stdout.strip()}


def speed(args, work: Path) -> None:
    import restyle

    spec = args.model or "starry_night"
    fp32 = restyle.load_model(spec, precision="fp32")
    auto = restyle.load_model(spec, precision=resolve_precision("auto", torch.device("cpu")))
    cores = cpu_cores()
    print(f"speed: model {spec}, network engine, temporal weight {NETWORK_TEMPORAL_WEIGHT:g}; {cores} cores; "
          f"load average {os.getloadavg()[0]:.1f} at start (nice'd: other jobs take their share)")
    pan = pan_clip(work / "pan320_in", 320, args.speed_frames)
    clips = (("bunny", BUNNY), ("pan", pan))
    for kind, clip in clips:
        rows = {
            "before: serial, fp32, default threads": serial_loop(clip, fp32, SPEED_SIZE, args.speed_frames,
                                                                   work / f"{kind}_serial_before", None),
            f"serial, {auto.precision}, threads shared": serial_loop(clip, auto, SPEED_SIZE, args.speed_frames,
                                                                      work / f"{kind}_serial_now", max(1, cores // 2)),
            f"now: stylize_video, {auto.precision}": pipeline_run(clip, auto, SPEED_SIZE, args.speed_frames,
                                                                 work / f"{kind}_pipeline"),
        }
        first = next(iter(rows.values()))
        print(f"\n{kind} clip, {first['size']}, {first['frames']} frames: ms per frame of each stage, "
              "wall / CPU of its thread (stylize_video's stages overlap on three threads)")
        names = list(rows)
        print(f"{'':14}" + "".join(f"{n:>40}" for n in names))
        for stage in STAGES:
            if any(stage in r["wall_ms"] for r in rows.values()):
                print(f"{stage:14}" + "".join(f"{rows[n]['wall_ms'].get(stage, 0.0):32.1f} / {rows[n]['cpu_ms'].get(stage, 0.0):5.1f}"
                                              for n in names))
        print(f"{'frames/s':14}" + "".join(f"{rows[n]['fps']:40.2f}" for n in names))
        print(f"{'process CPU ms':14}" + "".join(f"{rows[n]['process_cpu_ms']:40.1f}" for n in names))
    r = cli_run(spec, SPEED_SIZE, work)
    print(f"\nrestyle video bigbuckbunny.mp4 --model {spec} --size {SPEED_SIZE}: {r['wall_s']:.1f} s wall, "
          f"{r['cpu_s']:.1f} s CPU for 132 frames with start-up ({132 / r['wall_s']:.1f} frames/s); "
          f"progress bar's rate {r['bar_fps']:.1f} frames/s; {r['line']}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


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
    ap.add_argument("--gif", default=None, help="write a GIF of the last clip, its runs side by side (the README's)")
    ap.add_argument("--gif-scale", type=float, default=0.75, help="--gif: scale of each run's frames")
    ap.add_argument("--gif-frames", type=int, default=20, help="--gif: at most this many frames")
    ap.add_argument("--speed", action="store_true", help="time each stage of the network engine instead (see above)")
    ap.add_argument("--speed-frames", type=int, default=100, help="--speed: frames of each clip")
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="restyle-video-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.speed:
        speed(args, work)
        return
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
        last = [Path(r["frames_dir"]) for r in rows if r["clip"] == rows[-1]["clip"]]
        side_by_side_gif(last, Path(args.gif), args.gif_scale, args.gif_frames)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print(f"frames kept in {work}")


if __name__ == "__main__":
    main()
