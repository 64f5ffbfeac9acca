"""Seconds per iteration of restyle's loop against a bare VGG-19 forward+backward.

Both are measured side by side in one process, alternating, on the same size,
precision and device, so machine load affects them alike; the ratio is what
matters (the issue's target: <= 1.15).

    python benchmarks/iter_overhead.py --size 512 --precision bf16 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from restyle.config import StylizeConfig
from restyle.engine import Painter, _network, autocast, resolve_device, resolve_precision
from restyle.features import deepest_layer
from restyle.images import fit_size
from restyle.weights import load_weights


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(size: int, precision: str, device_name: str, repeats: int, iters: int) -> dict:
    cfg = StylizeConfig(size=size, precision=precision, device=device_name)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    layers = tuple(dict.fromkeys(cfg.content_layers + cfg.style_layers))
    net = _network(load_weights(None), deepest_layer(layers), cfg.pooling, device)
    painter = Painter(net, device, precision)
    w, h = fit_size(1024, 768, size)  # tubingen's aspect ratio
    g = torch.Generator().manual_seed(0)
    content = (torch.rand(1, 3, h, w, generator=g) * 255).to(device)
    style = (torch.rand(1, 3, h, w, generator=g) * 255).to(device)
    targets = painter.targets(content, [style], [1.0], cfg)
    x = content.clone().requires_grad_(True)
    mf = torch.channels_last if device.type == "cpu" else torch.contiguous_format

    def bare() -> None:
        # The network alone: forward to the deepest layer, a trivial scalar, backward to the pixels.
        xi = x.detach().contiguous(memory_format=mf).requires_grad_(True)
        with autocast(device, precision):
            out = net(xi, layers)
        sum(o.float().sum() for o in out.values()).backward()
        sync(device)

    opt = torch.optim.LBFGS([x], lr=1, max_iter=iters, max_eval=iters, tolerance_grad=-1,
                            tolerance_change=-1, history_size=100)

    def ours() -> None:
        # The engine's closure as run() does it, inside L-BFGS (history updates included).
        def closure():
            opt.zero_grad(set_to_none=True)
            loss, terms = painter.loss(x, targets, cfg)
            loss.backward()
            x.grad = x.grad.contiguous()
            return loss
        opt.step(closure)
        sync(device)

    for f in (bare, ours):  # warm up (oneDNN primitive caches, allocator)
        f()
    t_bare, t_ours = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            bare()
        t_bare.append((time.perf_counter() - t0) / iters)
        t0 = time.perf_counter()
        ours()
        t_ours.append((time.perf_counter() - t0) / iters)
    b, o = statistics.median(t_bare), statistics.median(t_ours)
    return {"size": f"{w}x{h}", "precision": precision, "device": str(device), "bare_s_per_it": b,
            "ours_s_per_it": o, "ratio": o / b}


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


if __name__ == "__main__":
    main()
