"""Upscaler benchmark: the network against bicubic and Lanczos, on photos and on stylised pictures.

    PYTHONPATH=src .venv/bin/python benchmarks/upscale.py [--model up4] [--work /tmp/upbench]

1. Photos: the coco256 photos held aside from the model's training (the model file
   names them), shrunk 4x (Pillow bicubic, antialiased) and enlarged back 4x by
   bicubic, Lanczos and the network. Distance to the original: LPIPS (VGG-16, from
   benchmarks/quality.py, at the photos' own size; lower is better) and PSNR (RGB, dB).
2. Stylised: a 512 px result enlarged 2x against the 1024 px optimised result (same
   content, style and settings). Only a loose reference: the 1024 px run paints finer
   brush strokes that no upscaler can know of.
3. Seconds per output megapixel of each method on this CPU (timed side by side).

Writes benchmarks/UPSCALE.md (or --out) and prints it. benchmarks/quality.py comes
from this tree or, before its branch is merged, from --quality PATH.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
COCO = ROOT.parent / "shared" / "datasets" / "coco256"
EXAMPLES = ROOT / "examples"


def load_quality(path: Optional[Path]):
    path = path or Path(__file__).with_name("quality.py")
    spec = importlib.util.spec_from_file_location("quality", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def psnr(a: Image.Image, b: Image.Image) -> float:
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(10 * np.log10(255.0**2 / max(np.mean(d**2), 1e-12)))


def methods(model: str, scale: int) -> Dict[str, Callable[[Image.Image], Image.Image]]:
    from restyle.networks.upscale import upscale

    def pil(kind):
        return lambda img: img.resize((img.width * scale, img.height * scale), kind)

    return {
        "bicubic": pil(Image.Resampling.BICUBIC),
        "lanczos": pil(Image.Resampling.LANCZOS),
        f"network ({model})": lambda img: upscale(img, scale, model),
    }


def compare(pairs, model: str, scale: int, quality) -> List[Dict]:
    """pairs: (name, small, reference); returns one row per method with mean LPIPS and PSNR."""
    pairs = list(pairs)
    refs = [quality.features(ref, ref.size) for _, _, ref in pairs]  # once per picture, not per method
    rows = []
    for method, fn in methods(model, scale).items():
        lp, ps, secs, mp = [], [], 0.0, 0.0
        for (name, small, ref), fr in zip(pairs, refs):
            t0 = time.perf_counter()
            big = fn(small)
            secs += time.perf_counter() - t0
            mp += big.width * big.height / 1e6
            lp.append(quality.lpips_from_features(quality.features(big, ref.size), fr))
            ps.append(psnr(big, ref))
        rows.append({"method": method, "lpips": float(np.mean(lp)), "lpips_each": lp,
                     "psnr": float(np.mean(ps)), "s_per_mp": secs / mp})
        print(f"{method}: LPIPS {rows[-1]['lpips']:.4f}, PSNR {rows[-1]['psnr']:.2f} dB", file=sys.stderr, flush=True)
    return rows


def held_out_photos(model: str) -> List[Path]:
    from restyle.models.modelfile import read_model_file
    from restyle.networks.upscale import model_path

    names = read_model_file(model_path(model), "upscaler")["training"].get("held_out") or []
    if not names:
        raise SystemExit(f"model {model} records no held-aside photos; cannot benchmark it fairly")
    return [COCO / n for n in names]


def photo_pairs(paths: List[Path], scale: int):
    for p in paths:
        img = Image.open(p).convert("RGB")
        w, h = img.width // scale * scale, img.height // scale * scale
        ref = img.crop((0, 0, w, h))
        yield p.name, ref.resize((w // scale, h // scale), Image.Resampling.BICUBIC), ref


def stylised_pair(work: Path):
    """(512 px, 1024 px) tubingen x starry night at default settings.

    The 512 px one is the README's default result (docs/images/tubingen_starry.png); the
    1024 px one is painted here once (restyle stylize --size 1024) and cached in `work`.
    """
    painted = work / "tubingen_starry_1024.png"
    if not painted.is_file():
        subprocess.run([sys.executable, "-m", "restyle", "stylize", str(EXAMPLES / "tubingen.jpg"),
                        str(EXAMPLES / "starry_night.jpg"), "-o", str(painted), "--size", "1024", "--quiet"],
                       check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    small = Image.open(ROOT / "docs" / "images" / "tubingen_starry.png").convert("RGB")
    return small, Image.open(painted).convert("RGB")


def strip(panels: List[Image.Image], gap: int = 6) -> Image.Image:
    """Pictures side by side on white (1:1, no resampling)."""
    sheet = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), max(p.height for p in panels)),
                      "white")
    x = 0
    for p in panels:
        sheet.paste(p, (x, 0))
        x += p.width + gap
    return sheet


def photo_crops(paths: List[Path], model: str, out_dir: Path, side: int = 192) -> List[Path]:
    """1:1 crops of the centre of held-aside photos: bicubic | Lanczos | network | original."""
    written = []
    fns = methods(model, 4)
    for name, small, ref in photo_pairs(paths, 4):
        box = ((ref.width - side) // 2, (ref.height - side) // 2, (ref.width + side) // 2, (ref.height + side) // 2)
        panels = [fn(small).crop(box) for fn in fns.values()] + [ref.crop(box)]
        path = out_dir / f"upscale_photo_{Path(name).stem}.png"
        strip(panels).save(path)
        written.append(path)
    return written


# Where the old 4096 px refine's crops (benchmarks/images/tubingen_starry_4096_crop_*.jpg,
# 512x512) sit in the 4096x3072 picture: found by matching them against its preview.
OLD_CROPS = {"spire": (2448, 500), "houses": (2900, 1300), "sky": (1200, 300), "river": (1500, 2400)}


def big_run(work: Path, model: str) -> List[str]:
    """`stylize --size 4096 --upscale`, in its two parts: the 1024 px painting (cached by
    stylised_pair, its time from its sidecar) and the enlargement, timed here. Writes 1:1
    crops beside the old 16.6-minute refine's, at the same places."""
    from restyle.networks.upscale import upscale_to

    stylised_pair(work)  # paints the 1024 px picture if it is not cached yet
    painted = work / "tubingen_starry_1024.png"
    paint_s = json.loads(painted.with_name(painted.name + ".json").read_text())["timings_s"]["total"]
    small = Image.open(painted).convert("RGB")
    t0 = time.perf_counter()
    img = upscale_to(small, (small.width * 4, small.height * 4), model)
    up_s = time.perf_counter() - t0
    img.save(work / "tubingen_starry_4096_upscaled.png")
    images = ROOT / "benchmarks" / "images"
    for name, (x, y) in OLD_CROPS.items():
        old = Image.open(images / f"tubingen_starry_4096_crop_{name}.jpg").convert("RGB")
        strip([old, img.crop((x, y, x + 512, y + 512))]).save(images / f"upscale_4096_crop_{name}.jpg", quality=92)
    img.resize((1024, 768), Image.Resampling.LANCZOS).save(images / "upscale_4096_preview.jpg", quality=90)
    return [
        "## `restyle stylize tubingen starry_night --size 4096 --upscale`", "",
        f"{img.width}x{img.height} px: painting {small.width}x{small.height} took {paint_s:.0f} s (its sidecar), "
        f"the enlargement {up_s:.0f} s ({up_s / (img.width * img.height / 1e6):.2f} s per MP): "
        f"{(paint_s + up_s) / 60:.1f} min in all at this run's load. The old route (2048 px run, then 6 tiled "
        "L-BFGS iterations at 4096 px) took 10.6 + 16.6 min (RESULTS.md).", "",
        "1:1 crops (512x512), old refine | painted at 1024 px and upscaled 4x:", "",
    ] + [f"![{n}](images/upscale_4096_crop_{n}.jpg)" for n in OLD_CROPS] + [""]


def table(rows: List[Dict], base: str = "bicubic") -> str:
    ref = next(r for r in rows if r["method"] == base)
    lines = ["| method | LPIPS (lower is better) | vs bicubic | PSNR dB | s per output MP |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['lpips']:.4f} | {r['lpips'] / ref['lpips'] - 1:+.1%} | "
                     f"{r['psnr']:.2f} | {r['s_per_mp']:.3f} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="up4", help="bundled model name or model file (default: up4)")
    ap.add_argument("--quality", type=Path, default=None, help="benchmarks/quality.py to take LPIPS from")
    ap.add_argument("--work", type=Path, default=Path("/tmp/upscale-bench"), help="cache of the stylised pictures")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N held-aside photos (a quick look)")
    ap.add_argument("--crops", type=int, default=3, help="write 1:1 crops of this many held-aside photos")
    ap.add_argument("--big", action="store_true", help="also time the 4096 px --upscale route and crop it")
    ap.add_argument("--no-photos", action="store_true", help="skip the held-aside photos")
    ap.add_argument("--no-stylised", action="store_true", help="skip the stylised comparison (two style runs)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "UPSCALE.md")
    args = ap.parse_args(argv)
    quality = load_quality(args.quality)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = open("/proc/loadavg").read().split()[0] if Path("/proc/loadavg").exists() else "?"

    parts = [
        "# Upscaler benchmark", "",
        f"Run {started}, load average {load} when it started (2 shared CPU cores: timings are noisy; "
        "the methods ran side by side in one process).", "",
    ]
    if not args.no_photos:
        photos = held_out_photos(args.model)[: args.limit]
        rows = compare(list(photo_pairs(photos, 4)), args.model, 4, quality)
        net = rows[-1]
        wins = sum(n < min(b, l) for n, b, l in zip(net["lpips_each"], rows[0]["lpips_each"], rows[1]["lpips_each"]))
        parts += [
            f"## Photos: {len(photos)} coco256 photos held aside from training, shrunk 4x and enlarged 4x", "",
            table(rows), "",
            f"The network's LPIPS is lower than both bicubic's and Lanczos's on {wins} of {len(photos)} photos.",
            f"Held-aside photos: {', '.join(p.name for p in photos)}.", "",
        ]
        if args.crops:
            shots = photo_crops(photos[: args.crops], args.model, ROOT / "benchmarks" / "images")
            parts += ["1:1 centre crops, bicubic | Lanczos | network | original:", ""]
            parts += [f"![{p.stem}](images/{p.name})" for p in shots] + [""]
    if not args.no_stylised:
        small, big = stylised_pair(args.work)
        srows = compare([("tubingen", small, big)], args.model, 2, quality)
        w, h = big.width // 4 * 4, big.height // 4 * 4
        ref = big.crop((0, 0, w, h))
        rrows = compare([("tubingen_1024", ref.resize((w // 4, h // 4), Image.Resampling.BICUBIC), ref)],
                        args.model, 4, quality)
        parts += [
            "## Stylised: the 512 px result enlarged 2x against the 1024 px optimised result", "",
            "tubingen x starry night at default settings. The 1024 px run paints its own finer strokes, so "
            "this measures closeness to a different painting, not only sharpness.", "",
            table(srows), "",
            "## Stylised: the 1024 px result shrunk 4x and enlarged back", "",
            "The same painting as the reference, so this one measures how well each method restores "
            "a stylised picture's strokes (the network never saw a painting in training).", "",
            table(rrows), "",
        ]
    if args.big:
        parts += big_run(args.work, args.model)
    text = "\n".join(parts)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    main()
