"""Measured peak memory of restyle runs against the planner's estimate.

Each measurement runs in a fresh subprocess, so the peak is that run's own: max RSS on
the CPU, the caching allocator's peak reserved bytes on a GPU (--device cuda), where the
planner budgets GPU memory and the host's RSS says nothing about it.

    python benchmarks/peak_memory.py --sizes 512,1024 --iterations 3
    python benchmarks/peak_memory.py --sizes 1024,2048 --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads({threads})
import restyle
from restyle.optimiser.engine import run
from restyle.models.weights import load_weights
load_weights({weights_path})
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # libraries and weights, before the run
t = time.perf_counter()
r = run({content!r}, {style!r}, restyle.StylizeConfig(size={size}, iterations={iters}, scales=(1,) if {single} else None,
        precision={precision!r}, tile_size={tile}, optimizer={optimizer!r}, device={device!r}){weights})
wall = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
gpu = torch.cuda.max_memory_reserved() if r.report["device"].startswith("cuda") else None
print(json.dumps({{"size": {size}, "wall_s": wall, "peak_rss": rss, "base_rss": base, "peak_gpu": gpu, "plan": r.report["memory_plan"],
                  "device": r.report["device"], "precision": r.report["precision"],
                  "final_loss": r.report["final_loss"]}}))
"""


def measure(size: int, iters: int, precision: str = "auto", tile=None, optimizer: str = "lbfgs", single: bool = True,
            content: str = "examples/tubingen.jpg", style: str = "examples/starry_night.jpg",
            weights: str = "", threads: int = 2, device: str = "cpu") -> dict:
    """One run in a fresh process; `ratio` is the estimate over the measured peak of the memory the planner budgets."""
    code = CHILD.format(size=size, iters=iters, precision=precision, tile=tile, optimizer=optimizer, device=device,
                        single=single, content=content, style=style, threads=threads,
                        weights=f", weights={weights!r}" if weights else "", weights_path=repr(weights or None))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-2000:])
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["estimate"] = max(s["estimate_gb"] for s in r["plan"]["stages"]) * 2**30
    r["peak"] = r["peak_gpu"] if r["peak_gpu"] is not None else r["peak_rss"]
    r["ratio"] = r["estimate"] / r["peak"]
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="512,1024,2048,4096")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--tile-size", type=int, default=None)
    ap.add_argument("--device", default="cpu", help="cpu (max RSS) or cuda[:N] (peak reserved GPU memory)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rows = []
    for size in map(int, a.sizes.split(",")):
        r = measure(size, a.iterations, a.precision, a.tile_size, device=a.device)
        rows.append(r)
        stage = r["plan"]["stages"][-1]
        what = "peak GPU" if r["peak_gpu"] is not None else "peak RSS"
        print(f"{size:5d} px: {what} {r['peak'] / 2**30:6.2f} GB, estimate {r['estimate'] / 2**30:6.2f} GB "
              f"(x{r['ratio']:.2f}; libraries and weights {r['base_rss'] / 2**30:.2f} GB), {a.iterations} iterations in {r['wall_s']:.1f} s, "
              f"tile {stage['tile']}, {stage['optimizer']} history {stage['history']}", flush=True)
    if a.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
