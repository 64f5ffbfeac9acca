"""End-to-end wall time of the default run (tubingen x starry night), by precision and schedule.

Each configuration runs in this process one after the other (the network is built
once per configuration, as a fresh CLI run would), reporting wall time, time per
scale and the final weighted loss terms; images are written to --out so that they
can be compared by eye (bf16 against fp32, single- against multi-scale).

    python benchmarks/e2e.py --size 512 --out bench_out
    python benchmarks/e2e.py --size 128 --iterations 10      # a quick check that it runs
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import restyle
from restyle.device import synchronize
from restyle.optimiser.engine import resolve_device, run

ROOT = Path(__file__).resolve().parents[1]


def configs(device: str, iterations: int) -> list:
    precisions = ["fp32", "bf16"] + (["fp16"] if device == "cuda" else [])
    out = []
    for p in precisions:
        out.append((f"{p} multi-scale (default)", dict(precision=p, iterations=iterations)))
    # Candidate schedule for the < 60 s target: start at a quarter of the size (three scales:
    # 150, 38 and 20 iterations); compare its loss terms and image with the default's.
    out.append(("bf16 three-scale (candidate)", dict(precision="bf16", iterations=iterations, scales=(3,))))
    for p in precisions[:2]:
        # Single scale with the same total work in full-size iterations as the pyramid's finest scale x 2.
        out.append((f"{p} single-scale", dict(precision=p, iterations=max(10, iterations // 2), scales=(1,))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--iterations", type=int, default=restyle.StylizeConfig().iterations)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None, help="folder for the images (default: none written)")
    ap.add_argument("--only", default=None, help="run only configurations whose name contains this")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    device = resolve_device(a.device).type
    content, style = ROOT / "examples/tubingen.jpg", ROOT / "examples/starry_night.jpg"
    rows = []
    for name, kw in configs(device, a.iterations):
        if a.only and a.only not in name:
            continue
        cfg = restyle.StylizeConfig(size=a.size, device=a.device, **kw)
        t0 = time.perf_counter()
        r = run(content, style, cfg)
        synchronize(resolve_device(a.device))  # the run's own GPU, not the current one
        wall = time.perf_counter() - t0
        row = {"name": name, "wall_s": round(wall, 2), "timings_s": r.report["timings_s"],
               "final_loss": {k: round(v, 1) for k, v in r.report["final_loss"].items()},
               "iterations": r.report["iterations"], "device": r.report["device"]}
        if a.out:
            Path(a.out).mkdir(parents=True, exist_ok=True)
            path = Path(a.out) / (name.split(" (")[0].replace(" ", "_") + f"_{a.size}.png")
            r.image.save(path)
            row["image"] = str(path)
        rows.append(row)
        total = sum(row["final_loss"].values())
        print(f"{name:32s} {wall:7.1f} s  {row['iterations']:4d} it  loss {total:.4g} "
              + " ".join(f"{k} {v:.4g}" for k, v in row["final_loss"].items()), flush=True)
    if a.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
