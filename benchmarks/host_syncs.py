"""Host syncs of the optimiser's loop, counted on the CPU with a tiny random network.

On a GPU every value read back to Python (.item(), bool(), float(), a 0-d tensor
passed as `alpha=`) waits for the device's queue to drain; tests/synccount.py counts
them. Run against any checkout (PYTHONPATH=src) to compare before and after:

    PYTHONPATH=src python benchmarks/host_syncs.py --iterations 150 --history 100
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from synccount import SyncCounter  # noqa: E402


def measure(iterations: int, history: int, optimizer: str = "lbfgs", size: int = 64, tiled: bool = False) -> dict:
    from conftest import tiny_torchvision_state

    from restyle.config import StylizeConfig
    from restyle.optimiser.engine import make_painter
    from restyle.optimiser.loop import OptimizerSettings, optimize
    from restyle.optimiser.objective import Objective, Sources, build_terms
    from restyle.optimiser.tiling import TileSpec, tile_grid

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "tiny_vgg.pth"
        torch.save(tiny_torchvision_state(), p)
        cfg = StylizeConfig(size=size, precision="fp32", device="cpu")
        painter = make_painter(cfg, p)
    g = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, size, size, generator=g) * 255
    style = torch.rand(1, 3, size, size, generator=g) * 255
    objective = Objective(build_terms(cfg, Sources(content=content, styles=[style], blend=[1.0])), painter).prepare()
    kw = {}
    if tiled:
        kw["tiles"] = lambda: tile_grid(size, size, size // 2, 16)
    losses = []
    with SyncCounter() as syncs:
        optimize(content.clone(), objective, iterations, OptimizerSettings(optimizer, 1.0, history),
                 on_eval=lambda i, loss, terms, x: losses.append(float(loss)), **kw)
    return {"optimizer": optimizer, "iterations": iterations, "history": history, "tiled": tiled,
            "syncs": syncs.count, "per_iteration": round(syncs.count / iterations, 2),
            "by_name": dict(syncs.by_name), "final_loss": losses[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=150)
    ap.add_argument("--history", type=int, default=100)
    a = ap.parse_args()
    for optimizer, tiled in (("lbfgs", False), ("lbfgs", True), ("adam", False)):
        print(json.dumps(measure(a.iterations, a.history, optimizer, tiled=tiled)), flush=True)


if __name__ == "__main__":
    main()
