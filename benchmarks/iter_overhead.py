"""Seconds per iteration of restyle's loop against a bare VGG-19 forward+backward.

Both are measured side by side in one process, alternating, on the same size,
precision and device, so machine load affects them alike; the ratio is what
matters (the issue's target: <= 1.15).

    python benchmarks/iter_overhead.py --size 512 --precision bf16 --repeats 5

On a shared machine read the per-repeat ratios and the CPU-time ratio beside the wall ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from restyle.config import StylizeConfig
from restyle.device import autocast, prefers_channels_last, synchronize
from restyle.optimiser.engine import make_painter
from restyle.images import fit_size
from restyle.optimiser.loop import OptimizerSettings, optimize
from restyle.optimiser.objective import Objective, Sources, build_terms


def sync(device: torch.device) -> None:
    synchronize(device)  # that device's queue (cuda:1's, not the current device's)


def measure(size: int, precision: str, device_name: str, repeats: int, iters: int) -> dict:
    cfg = StylizeConfig(size=size, precision=precision, device=device_name)
    painter = make_painter(cfg)
    device, precision, net = painter.device, painter.precision, painter.net
    w, h = fit_size(1024, 768, size)  # tubingen's aspect ratio
    g = torch.Generator().manual_seed(0)
    content = (torch.rand(1, 3, h, w, generator=g) * 255).to(device)
    style = (torch.rand(1, 3, h, w, generator=g) * 255).to(device)
    objective = Objective(build_terms(cfg, Sources(content=content, styles=[style], blend=[1.0])), painter).prepare()
    layers = objective.layers
    x = content.clone()
    mf = torch.channels_last if prefers_channels_last(device) else torch.contiguous_format

    def bare() -> None:
        # The network alone: forward to the deepest layer, a trivial scalar, backward to the pixels.
        xi = x.detach().contiguous(memory_format=mf).requires_grad_(True)
        with autocast(device, precision):
            out = net(xi, layers)
        sum(o.float().sum() for o in out.values()).backward()
        sync(device)

    def ours() -> None:
        # restyle's one loop (loop.optimize) as every run uses it: the objective's terms,
        # L-BFGS with its history updates, the first-step trick, the cancel check, the events hook.
        nonlocal x
        x = optimize(x, objective, iters, OptimizerSettings("lbfgs", cfg.lr_or_default, 100),
                     precision=precision, on_eval=lambda i, loss, terms, xx: None, cancel=lambda: False)
        sync(device)

    for f in (bare, ours):  # warm up (oneDNN primitive caches, allocator)
        f()
    # Wall time, and this process's CPU time: on a shared machine other jobs stretch the wall
    # time of whichever side they overlap, while CPU time counts only the cycles spent here.
    t_bare, t_ours, c_bare, c_ours = [], [], [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(iters):
            bare()
        t_bare.append((time.perf_counter() - t0) / iters)
        c_bare.append((time.process_time() - c0) / iters)
        t0, c0 = time.perf_counter(), time.process_time()
        ours()
        t_ours.append((time.perf_counter() - t0) / iters)
        c_ours.append((time.process_time() - c0) / iters)
    b, o = statistics.median(t_bare), statistics.median(t_ours)
    ratios = [t / u for t, u in zip(t_ours, t_bare)]
    cpu_ratios = [t / u for t, u in zip(c_ours, c_bare)]
    return {"size": f"{w}x{h}", "precision": precision, "device": str(device), "threads": torch.get_num_threads(),
            "bare_s_per_it": b, "ours_s_per_it": o, "ratio": o / b,
            "median_pair_ratio": statistics.median(ratios), "pair_ratios": [round(r, 3) for r in ratios],
            "bare_cpu_s_per_it": statistics.median(c_bare), "ours_cpu_s_per_it": statistics.median(c_ours),
            "cpu_ratio": statistics.median(cpu_ratios), "cpu_pair_ratios": [round(r, 3) for r in cpu_ratios]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--iters", type=int, default=3, help="iterations per timed block")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    r = measure(a.size, a.precision, a.device, a.repeats, a.iters)
    if a.json:
        print(json.dumps(r))
    else:
        print(f"{r['device']} {r['precision']} {r['size']}: bare VGG fwd+bwd {r['bare_s_per_it']:.3f} s/it, "
              f"restyle loop {r['ours_s_per_it']:.3f} s/it, ratio {r['ratio']:.3f}")
        print(f"  per repeat (ours/bare, side by side): wall {r['pair_ratios']} median {r['median_pair_ratio']:.3f}; "
              f"process CPU time {r['cpu_pair_ratios']} median {r['cpu_ratio']:.3f} ({r['threads']} threads)")


if __name__ == "__main__":
    main()
