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
from restyle.optimiser.texture import synthesize

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
    ap.add_argument("--size", type=int, default=SIZE, help="long side of the gallery pictures")
    ap.add_argument("--iterations", type=int, default=150, help="iterations (at the coarsest scale)")
    ap.add_argument("--skip-large", action="store_true", help="no 1024 px run (slow on a CPU)")
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

    base = StylizeConfig(size=args.size, iterations=args.iterations)
    # Colour
    for mode in ("none", "luminance", "histogram"):
        render(f"color_{mode}.png", lambda m=mode: restyle.stylize(tub, starry, base.replace(preserve_colors=m)))
    # Regions: a person/background label image (black = first style, white = second)
    pitt = content / "brad_pitt.jpg"
    label = render("brad_pitt_label.png", lambda: person_label(Image.open(pitt).convert("RGB")))
    render("regions_pitt_scream_picasso.png", lambda: restyle.stylize(
        pitt, [style / "the_scream.jpg", style / "picasso_selfport1907.jpg"],
        base.replace(mask=(str(OUT / "brad_pitt_label.png"),))))
    # Texture, tileable: shown as a 2x2 tiling
    tex = render("texture_starry_tile.png", lambda: synthesize(starry, (256, 256), StylizeConfig(iterations=args.iterations), tile=True).image)
    tiled = Image.new("RGB", (512, 512))
    for x in (0, 256):
        for y in (0, 256):
            tiled.paste(tex, (x, y))
    tiled.save(OUT / "texture_starry_tile_2x2.jpg", quality=90)
    # Preset
    render("preset_fast.png", lambda: restyle.stylize(tub, style / "the_scream.jpg", StylizeConfig.from_preset("fast")))
    # Brush size: --style-scale (1 is color_none.png)
    render("style_scale_2.0.png", lambda: restyle.stylize(tub, starry, base.replace(style_scale=2.0)))
    # Large output: 1024 px coarse to fine (256 -> 512 -> 1024), with a 1:1 crop
    if not args.skip_large or (OUT / "large_1024.jpg").exists():
        big = render("large_1024.jpg", lambda: restyle.stylize(tub, starry, StylizeConfig(size=1024)))
        big.crop((400, 250, 656, 506)).save(OUT / "large_1024_crop.png", optimize=True)
    # Side-by-side strips for the README
    ref = args.images / "reference" / "tubingen_starry_original_colors.png"
    side_by_side([Image.open(OUT / f"color_{m}.png") for m in ("none", "luminance", "histogram")]
                 + [Image.open(ref)]).save(OUT / "color_strip.jpg", quality=90)
    side_by_side([Image.open(pitt), label, Image.open(OUT / "regions_pitt_scream_picasso.png")]).save(
        OUT / "regions_strip.jpg", quality=90)
    # Inputs shown beside the results (from jcjohnson/neural-style's examples, MIT licence)
    Image.open(ref).save(OUT / "reference_tubingen_starry_original_colors.png", optimize=True)
    Image.open(pitt).convert("RGB").resize(Image.open(OUT / "regions_pitt_scream_picasso.png").size).save(
        OUT / "brad_pitt.jpg", quality=90)
    names = {k.replace(".", "_").replace("-", "_"): v for k, v in timings.items()}
    names.setdefault("large_1024_jpg", "?")
    md = GALLERY_MD.format(size=args.size, iterations=args.iterations, **names)
    if (OUT / "large_1024.jpg").exists():
        if not (OUT / "large_1024_crop.png").exists():
            Image.open(OUT / "large_1024.jpg").crop((400, 250, 656, 506)).save(OUT / "large_1024_crop.png")
        md += LARGE_MD.format(**names)
    (OUT / "README.md").write_text(md)


LARGE_MD = """
## Large output: 1024 px, coarse to fine ({large_1024_jpg} s)

`restyle stylize tubingen.jpg starry_night.jpg -o large_1024.png --size 1024 --quiet`, default settings
(the picture here is that run's output; the script makes the same run when the file is missing):
256 px (150 iterations) -> 512 px (38) -> 1024 px (20). [Full picture](large_1024.jpg); a 1:1 crop:

![](large_1024_crop.png)
"""

GALLERY_MD = """\
# Gallery: artistic control

Made by `docs/make_gallery.py` (`PYTHONPATH=src python docs/make_gallery.py`) from the
shared test images at {size} px long side unless noted, {iterations} L-BFGS iterations,
default settings otherwise (content 5, style 100, tv 1e-3); `python docs/make_gallery.py` alone renders them at
384 px with 150 iterations. Times are wall seconds on a 2-core CPU shared with several
other torch jobs (load average 10-13) while rendering (bf16 network): expect them 5-10x
shorter on an idle machine.

## Colour: `--preserve-colors none | luminance | histogram`

| none ({color_none_png} s) | luminance ({color_luminance_png} s) | histogram ({color_histogram_png} s) | classic tool, `-original_colors 1` |
|---|---|---|---|
| ![](color_none.png) | ![](color_luminance.png) | ![](color_histogram.png) | ![](reference_tubingen_starry_original_colors.png) |

    restyle stylize tubingen.jpg starry_night.jpg -o out.png --size {size} --preserve-colors luminance

`luminance` optimises the luminance alone (the style image turned gray, its
luminance matched to the photo's mean and spread) and puts the photo's own
chroma back on it: the colours are the photo's, pixel for pixel. `histogram`
recolours the painting to the photo's colour mean and covariance before its
style is taken: strokes and local colour variation stay painterly, the overall
palette is the photo's.

## Regions: `--mask`, a person and the background in two styles

| photo | label image (black = 1st style, white = 2nd) | The Scream behind, Picasso's 1907 self-portrait on the person ({regions_pitt_scream_picasso_png} s) |
|---|---|---|
| ![](brad_pitt.jpg) | ![](brad_pitt_label.png) | ![](regions_pitt_scream_picasso.png) |

    restyle stylize brad_pitt.jpg the_scream.jpg picasso_selfport1907.jpg --mask brad_pitt_label.png -o out.png

The label image was made by the script (backdrop colour from the corners, flood
fill from the border, a small blur for a soft edge). One grayscale mask per
style works too: `--mask background.png,person.png`.

## Brush size: `--style-scale`

| 1 (default) | 2 ({style_scale_2_0_png} s) |
|---|---|
| ![](color_none.png) | ![](style_scale_2.0.png) |

The style image is resized to `style_scale` times the output's size at every
scale of the pyramid, so the strokes keep their size relative to the picture.
At 2 the painting is seen twice as large: longer, softer strokes and less of
its fine texture.

## Preset `fast` ({preset_fast_png} s)

![](preset_fast.png)

    restyle stylize tubingen.jpg the_scream.jpg -o out.png --preset fast

## Texture: `restyle texture starry_night.jpg -o tex.png --size 256x256 --tile` ({texture_starry_tile_png} s)

The 256 px tile, and four copies of it side by side (no seams):

![](texture_starry_tile.png) ![](texture_starry_tile_2x2.jpg)
"""


if __name__ == "__main__":
    main()
