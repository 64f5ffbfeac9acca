"""Render docs/gallery/: each artistic control on the shared images, plus GALLERY.md.

    PYTHONPATH=src python docs/make_gallery.py [--images /work/shared/images] [--force]

Pictures that already exist are kept (delete them or pass --force to redo);
the timings of the runs made are written to docs/gallery/timings.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

import restyle
from restyle import StylizeConfig
from restyle.texture import synthesize

HERE = Path(__file__).resolve().parent
OUT = HERE / "gallery"
SIZE = 384  # long side of most gallery pictures: enough to judge strokes, cheap on a CPU


def person_label(photo: Image.Image) -> Image.Image:
    """Black = background, white = person, with a soft edge, for a portrait on a plain backdrop.

    The backdrop's colour is taken from the top corners; pixels close to it and
    connected to the image border are background (flood fill), everything else
    is the person. Opening/closing removes specks, a small blur softens the edge.
    """
    small = photo.copy()
    small.thumbnail((400, 400))
    a = np.asarray(small, dtype=np.float32)
    corners = np.concatenate([a[:20, :20].reshape(-1, 3), a[:20, -20:].reshape(-1, 3)])
    bg = np.median(corners, axis=0)
    near = (np.abs(a - bg).max(axis=2) < 28).astype(np.uint8) * 255
    img = Image.fromarray(near, "L").filter(ImageFilter.MedianFilter(5))
    w, h = img.size
    for xy in [(x, 0) for x in range(0, w, 8)] + [(0, y) for y in range(0, h // 2, 8)] + [(w - 1, y) for y in range(0, h // 2, 8)]:
        if img.getpixel(xy) == 255:
            ImageDraw.floodfill(img, xy, 128)
    label = Image.fromarray(np.where(np.asarray(img) == 128, 0, 255).astype(np.uint8), "L")
    label = label.filter(ImageFilter.MaxFilter(5)).filter(ImageFilter.MinFilter(5))  # close small gaps
    label = label.filter(ImageFilter.MinFilter(5)).filter(ImageFilter.MaxFilter(5))  # drop specks
    return label.resize(photo.size, Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(3))


def side_by_side(images, height=None, gap=4) -> Image.Image:
    height = height or min(im.height for im in images)
    ims = [im.convert("RGB").resize((round(im.width * height / im.height), height), Image.Resampling.LANCZOS) for im in images]
    out = Image.new("RGB", (sum(im.width for im in ims) + gap * (len(ims) - 1), height), "white")
    x = 0
    for im in ims:
        out.paste(im, (x, 0))
        x += im.width + gap
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=Path("/work/shared/images"))
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    content, style = args.images / "content", args.images / "style"
    tub, starry = content / "tubingen.jpg", style / "starry_night.jpg"
    timings_path = OUT / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}

    def render(name: str, make) -> Image.Image:
        path = OUT / name
        if path.exists() and not args.force:
            return Image.open(path).convert("RGB")
        t = time.perf_counter()
        img = make()
        timings[name] = round(time.perf_counter() - t, 1)
        img.save(path, quality=90) if path.suffix == ".jpg" else img.save(path, optimize=True)
        timings_path.write_text(json.dumps(timings, indent=2) + "\n")
        print(f"{name}: {timings[name]} s", flush=True)
        return img

    base = StylizeConfig(size=SIZE)
    # Colour
    for mode in ("none", "luminance", "histogram"):
        render(f"color_{mode}.png", lambda m=mode: restyle.stylize(tub, starry, base.replace(preserve_colors=m)))
    # Regions: a person/background label image (black = first style, white = second)
    pitt = content / "brad_pitt.jpg"
    label = render("brad_pitt_label.png", lambda: person_label(Image.open(pitt).convert("RGB")))
    render("regions_pitt_scream_picasso.png", lambda: restyle.stylize(
        pitt, [style / "the_scream.jpg", style / "picasso_selfport1907.jpg"],
        base.replace(mask=(str(OUT / "brad_pitt_label.png"),))))
    # Brush size: --style-scale
    for s in (0.5, 2.0):
        render(f"style_scale_{s}.png", lambda s=s: restyle.stylize(tub, starry, base.replace(style_scale=s)))
    # Preset
    render("preset_fast.png", lambda: restyle.stylize(tub, style / "the_scream.jpg", StylizeConfig.from_preset("fast")))
    # Texture, tileable: shown as a 2x2 tiling
    tex = render("texture_starry_tile.png", lambda: synthesize(starry, (256, 256), StylizeConfig(iterations=100), tile=True).image)
    tiled = Image.new("RGB", (512, 512))
    for x in (0, 256):
        for y in (0, 256):
            tiled.paste(tex, (x, y))
    tiled.save(OUT / "texture_starry_tile_2x2.jpg", quality=90)
    # Large output: 1024 px coarse to fine (256 -> 512 -> 1024), with a 1:1 crop
    big = render("large_1024.jpg", lambda: restyle.stylize(tub, starry, StylizeConfig(size=1024)))
    big.crop((400, 250, 656, 506)).save(OUT / "large_1024_crop.png", optimize=True)
    # Side-by-side strips for the README
    ref = args.images / "reference" / "tubingen_starry_original_colors.png"
    side_by_side([Image.open(OUT / f"color_{m}.png") for m in ("none", "luminance", "histogram")]
                 + [Image.open(ref)]).save(OUT / "color_strip.jpg", quality=90)
    side_by_side([Image.open(pitt), label, Image.open(OUT / "regions_pitt_scream_picasso.png")]).save(
        OUT / "regions_strip.jpg", quality=90)


if __name__ == "__main__":
    main()
