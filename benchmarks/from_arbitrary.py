"""A painting's own network in minutes: `restyle train --from arbitrary` against its start and a from-scratch network.

    PYTHONPATH=src .venv/bin/python benchmarks/from_arbitrary.py [--paintings NAME,NAME] [--photos 4]
        [--markdown benchmarks/FROM_ARBITRARY.md] [--keep DIR]

For Starry Night and held-aside paintings (never trained on by the any-painting network):

- **arbitrary**: the any-painting network's one pass with that painting (the start);
- **from arbitrary**: `restyle train PAINTING --photos coco256 -o X.pt --from arbitrary` with its
  default settings (a short fine-tune), timed (wall and CPU of the command, start-up included);
- **scratch**: a network trained from scratch with `restyle train`'s defaults (4000 steps, 24 min on
  an idle machine): for Starry Night the bundled `starry_night`, for others those given by --scratch.

Each network paints tubingen and the first held-aside coco photos at 512 px; quality.score's
content and style distances (VGG-16, not the VGG-19 the networks train against) are averaged over
the photos, the style distance also tap by tap (which of the painting's scales a network lacks:
the palette at relu1_2, the brushwork at relu3_3 and deeper). The issue's targets: training within
2 minutes, closer on both axes than the start, and within 3 % of the from-scratch network on both
axes.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from restyle.images import load_image, resize, to_tensor  # noqa: E402
from restyle.networks.feedforward import load_model  # noqa: E402
from restyle.networks.training import list_photos, split_photos  # noqa: E402

STARRY = SHARED / "images" / "style" / "starry_night.jpg"
COCO = SHARED / "datasets" / "coco256"
SCRATCH = "scratch (4000 steps)"
HELD = ("claude-monet_water-lilies", "fra-angelico_the-annunciation")  # every 10th by name: held aside


def paint(model, photos: List[Path], out: Path, tag: str, size: int) -> List[Path]:
    files = []
    for photo in photos:
        y = model.stylize_tensor(to_tensor(resize(load_image(photo), size)))
        dst = out / f"{photo.stem}__{tag}.png"
        Image.fromarray(y[0].round().byte().permute(1, 2, 0).numpy()).save(dst)
        files.append(dst)
    return files


def train_from(painting: Path, output: Path, extra: List[str], model: str = "arbitrary") -> Tuple[float, float]:
    """`restyle train PAINTING --photos coco256 -o output --from arbitrary`: (wall, CPU) seconds."""
    cmd = [sys.executable, "-m", "restyle", "train", str(painting), "--photos", str(COCO), "-o", str(output),
           "--from", model, "--quiet", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def write_sheet(folder: Path, names: List[str], photos: List[Path], path: Path) -> None:
    """painting | photo | the one pass (start) | fine-tuned | from scratch (Starry Night only), from `folder`'s pictures."""
    from arbitrary import sheet

    rows = []
    for name in names:
        painting = STARRY if name == "starry_night" else SHARED / "datasets" / "paintings" / f"{name}.jpg"
        for photo in photos:
            cells = [folder / f"{photo.stem}__{name}__{tag}.png" for tag in ("arbitrary", "from", "scratch")]
            rows.append([painting, photo] + [c if c.is_file() else None for c in cells])
    sheet(rows, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="arbitrary", help="the any-painting network (bundled name or file)")
    p.add_argument("--paintings", default="starry_night," + ",".join(HELD),
                   help="starry_night and/or file names (no .jpg) in ../shared/datasets/paintings")
    p.add_argument("--photos", type=int, default=4, help="tubingen + this many - 1 held-aside coco photos")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--train-args", default="", help="extra flags for restyle train (default: none, its defaults)")
    p.add_argument("--scratch", default="",
                   help="NAME=FILE,...: from-scratch networks of other paintings to compare with (restyle train "
                        "PAINTING --photos coco256 -o FILE, its default 4000 steps); Starry Night's is the bundled")
    p.add_argument("--keep", type=Path, default=None, help="keep the pictures and networks here")
    p.add_argument("--markdown", default=None, help="write the table here")
    p.add_argument("--sheet", type=Path, default=None,
                   help="write a contact sheet here (JPEG): painting | photo | start | fine-tuned | from scratch")
    args = p.parse_args()
    from quality import TAPS, features, lpips, style_errors

    torch.set_num_threads(2)
    coco = split_photos(list_photos(COCO), 8)[1]
    photos = [SHARED / "images" / "content" / "tubingen.jpg"] + coco[: args.photos - 1]
    out = args.keep or Path(tempfile.mkdtemp(prefix="from_arbitrary_"))
    out.mkdir(parents=True, exist_ok=True)
    arbitrary = load_model(args.model, device="cpu")
    rows: List[Dict] = []
    scratches = dict(item.split("=", 1) for item in args.scratch.split(",") if item)
    for name in args.paintings.split(","):
        painting = STARRY if name == "starry_night" else SHARED / "datasets" / "paintings" / f"{name}.jpg"
        runs: Dict[str, Tuple[List[Path], Optional[float], Optional[float]]] = {}
        runs["arbitrary (start)"] = (paint(arbitrary.for_style(painting), photos, out, f"{name}__arbitrary", args.size),
                                     None, None)
        net = out / f"{name}__from_arbitrary.pt"
        net.unlink(missing_ok=True)
        wall, cpu = train_from(painting, net, args.train_args.split(), args.model)
        runs["from arbitrary"] = (paint(load_model(net, device="cpu"), photos, out, f"{name}__from", args.size), wall, cpu)
        scratch = "starry_night" if name == "starry_night" else scratches.get(name)
        if scratch:
            runs[SCRATCH] = (paint(load_model(scratch, device="cpu"), photos, out, f"{name}__scratch", args.size),
                             None, None)
        painting_features = features(painting)  # once: every network's pictures are compared with it
        for who, (files, wall, cpu) in runs.items():
            # quality.score's two distances, the style one kept tap by tap (its mean is the distance)
            taps = [style_errors(features(f), painting_features) for f in files]
            row = dict(painting=name, who=who, content=statistics.mean(lpips(ph, f) for f, ph in zip(files, photos)),
                       style=statistics.mean(sum(x.values()) / len(x) for x in taps), wall=wall, cpu=cpu,
                       taps={t: statistics.mean(x[t] for x in taps) for t in TAPS})
            rows.append(row)
            took = "" if wall is None else f"  trained in {wall:.0f} s wall, {cpu:.0f} s CPU"
            print(f"{name:32s} {who:30s} content {row['content']:.3f}  style {row['style']:.3f}{took}", flush=True)

    lines = [f"Photos: {len(photos)} (tubingen and held-aside coco), {args.size} px; means over the photos.", "",
             "| painting | network | content distance | style distance | training (wall / CPU) |",
             "|---|---|---:|---:|---:|"]
    for r in rows:
        t = "-" if r["wall"] is None else f"{r['wall']:.0f} s / {r['cpu']:.0f} s"
        lines.append(f"| {r['painting']} | {r['who']} | {r['content']:.3f} | {r['style']:.3f} | {t} |")
    lines += ["", "The style distance tap by tap (VGG-16; its mean is the style distance):", "",
              "| painting | network | " + " | ".join(TAPS) + " |", "|---|---|" + "---:|" * len(TAPS)]
    lines += [f"| {r['painting']} | {r['who']} | " + " | ".join(f"{r['taps'][t]:.3f}" for t in TAPS) + " |"
              for r in rows]
    by = {(r["painting"], r["who"]): r for r in rows}
    lines.append("")
    for name in args.paintings.split(","):
        f, s = by[(name, "from arbitrary")], by[(name, "arbitrary (start)")]
        better = f["content"] <= s["content"] and f["style"] <= s["style"]
        lines.append(f"- {name}: fine-tuned {'closer on both axes than' if better else 'not closer on both axes than'} "
                     f"its start; trained in {f['wall']:.0f} s ({'within' if f['wall'] <= 120 else 'over'} 2 minutes).")
        if (name, SCRATCH) in by:
            b = by[(name, SCRATCH)]
            dc, ds = f["content"] / b["content"] - 1, f["style"] / b["style"] - 1
            lines.append(f"  Against the from-scratch network: content {dc:+.1%}, style {ds:+.1%} "
                         f"({'within' if max(dc, ds) <= 0.03 else 'not within'} 3 % on both).")
    text = "\n".join(lines)
    print("\n" + text)
    if args.sheet:
        write_sheet(out, args.paintings.split(","), photos[:2], args.sheet)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
