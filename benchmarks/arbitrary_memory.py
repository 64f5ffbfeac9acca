"""Peak memory of one pass of the any-painting network at 4096 px, against the planner's estimate.

    PYTHONPATH=src .venv/bin/python benchmarks/arbitrary_memory.py [--size 4096] [--model arbitrary] \
        [--photo examples/tubingen.jpg] [--painting examples/starry_night.jpg] [--precision auto]

Two fresh subprocesses. The first reads the painting (the VGG-19 reader) and saves its style
code; the second loads no VGG: it opens the network for that code and paints the photo at
--size on its long side the way the CLI does (run_network: load, resize, tiles above
2048 x 2048 px, clamp, the 8-bit picture), and reports its max RSS, which includes the
libraries as the estimate does. The estimate is StyleModel.check_size's
(memory.network_estimate, with a tile and its margin as the piece when tiled).
tests/test_arbitrary.py checks the estimate and the tiling at 4096 px without painting.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ENCODE = r"""
import sys, torch
torch.set_num_threads({threads})
from restyle.networks.feedforward import load_model
model = load_model({model!r}, device="cpu", precision={precision!r})
torch.save(model.encode_style({painting!r}), {code!r})
"""

PASS = r"""
import json, resource, time
import torch
torch.set_num_threads({threads})
from restyle.device import resolve_precision
from restyle.networks.feedforward import load_model, run_network
from restyle.optimiser import memory
precision = resolve_precision({precision!r}, torch.device("cpu"))
arb = load_model({model!r}, device="cpu", precision=precision)
model = arb.for_style(torch.load({code!r}, weights_only=True))
planned = {{}}
check = memory.check_fits
def spy(needed, what, *a, **kw):
    planned[what] = needed
    return check(needed, what, *a, **kw)
memory.check_fits = spy
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # libraries and the network, before the pass
t = time.perf_counter()
img = run_network(model, {photo!r}, size={size})
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
what, estimate = next(iter(planned.items()))
print(json.dumps({{"size": list(img.size), "tiled": img.width * img.height > model.max_pixels, "tile": model.tile,
                  "precision": precision, "wall_s": wall, "base_rss": base, "peak_rss": peak, "estimate": estimate,
                  "what": what}}))
"""


def child(code: str) -> str:
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-2000:])
    return p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""


def measure(size: int, model: str, photo: str, painting: str, precision: str = "auto", threads: int = 2) -> dict:
    """One pass at `size` in a fresh process; `ratio` is the planner's estimate over the measured peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        code = str(Path(tmp) / "code.pt")
        child(ENCODE.format(threads=threads, model=model, precision="fp32", painting=painting, code=code))
        r = json.loads(child(PASS.format(threads=threads, model=model, precision=precision, code=code, photo=photo,
                                         size=size)))
    r["ratio"] = r["estimate"] / r["peak_rss"]
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096, help="long side of the picture (default 4096)")
    ap.add_argument("--model", default="arbitrary", help="the any-painting model (bundled name or file)")
    ap.add_argument("--photo", default=str(ROOT / "examples" / "tubingen.jpg"))
    ap.add_argument("--painting", default=str(ROOT / "examples" / "starry_night.jpg"))
    ap.add_argument("--precision", default="auto", help="auto (bf16 where the CPU runs it natively, as the CLI), fp32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    r = measure(a.size, a.model, a.photo, a.painting, a.precision, a.threads)
    gb = 2**30
    print(f"{r['size'][0]}x{r['size'][1]} ({'tiled, ' + str(r['tile']) + ' px tiles' if r['tiled'] else 'whole'}, "
          f"{r['precision']}): peak RSS {r['peak_rss'] / gb:.2f} GB (libraries and network {r['base_rss'] / gb:.2f} GB), "
          f"estimate {r['estimate'] / gb:.2f} GB (x{r['ratio']:.2f}), {r['wall_s']:.1f} s")
    if a.json:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
