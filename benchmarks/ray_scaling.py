"""Photos per minute on Ray with 1 and 2 workers, against the local loop, on this machine.

A local cluster (a head and one more node, one CPU each, as tests/test_ray.py starts)
paints the same photos three ways, side by side in one run so machine load affects them
alike: the local loop (one thread, as a worker has), Ray with one worker, Ray with two.
Then the scheduling overhead per pair (a rerun in which every pair is complete already,
and a no-op actor round trip), and a projection to N workers from the measured per-pair cost.

    python benchmarks/ray_scaling.py --photos 8 --size 128 --iterations 20 --markdown
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

import torch
from PIL import Image

from restyle.batch.local import run_batch
from restyle.config import StylizeConfig
from restyle.batch.distributed import run_batch_ray
from restyle.events import BatchProgress, PairStarted

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "datasets" / "coco256"
STYLES = (ROOT / "examples" / "starry_night.jpg", ROOT / "examples" / "the_scream.jpg")
STORE = 80 * 2**20  # object store per node: only paths and outcomes pass through it


def start_cluster(nodes: int = 2, cpus: int = 1):
    """A local Ray cluster of `nodes` nodes with `cpus` CPUs each; the driver connected to it."""
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True,
                head_node_args={"num_cpus": cpus, "object_store_memory": STORE, "include_dashboard": False})
    for _ in range(nodes - 1):
        c.add_node(num_cpus=cpus, object_store_memory=STORE)
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    return c


def stop_cluster(c) -> None:
    import ray

    ray.shutdown()
    c.shutdown()


def make_inputs(root: Path, n: int, side: int, styles: int) -> Tuple[Path, List[Path]]:
    """`n` photos from coco256 (or crops of the example photo) and `styles` styles, `side` px long."""
    photos = root / "photos"
    photos.mkdir()
    found = sorted(PHOTOS.glob("*.jpg"))[:n]
    if len(found) < n:  # no shared dataset: crops of the example photo
        src = Image.open(ROOT / "examples" / "tubingen.jpg").convert("RGB")
        found = [src.crop((i * 17 % 300, i * 11 % 200, i * 17 % 300 + 600, i * 11 % 200 + 450)) for i in range(n)]
    for i, f in enumerate(found):
        img = f if isinstance(f, Image.Image) else Image.open(f).convert("RGB")
        img.thumbnail((side, side))
        img.save(photos / f"photo{i:03d}.png")
    out = []
    for s in STYLES[:styles]:
        img = Image.open(s).convert("RGB")
        img.thumbnail((side, side))
        img.save(root / s.with_suffix(".png").name)
        out.append(root / s.with_suffix(".png").name)
    return photos, out


class Clock:
    """A batch callback: when the first pair started and the last one finished."""

    def __init__(self) -> None:
        self.first = self.last = 0.0

    def __call__(self, event) -> None:
        if isinstance(event, PairStarted) and not self.first:
            self.first = time.perf_counter()
        if isinstance(event, BatchProgress) and event.outcome is not None:
            self.last = time.perf_counter()


def timed_local(photos: Path, styles: List[Path], out: Path, cfg: StylizeConfig) -> Tuple[float, float, list]:
    """(job wall s, first start to last finish s, outcomes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray worker: results and speed depend on the thread count
    try:
        t, clock = time.perf_counter(), Clock()
        report = run_batch([photos], styles, out, cfg, callback=clock)
        return time.perf_counter() - t, clock.last - clock.first, report.outcomes
    finally:
        torch.set_num_threads(threads)


def timed_ray(photos: Path, styles: List[Path], out: Path, cfg: StylizeConfig,
              workers: int) -> Tuple[float, float, list]:
    t, clock = time.perf_counter(), Clock()
    report = run_batch_ray([photos], styles, out, cfg, workers=workers, cpus_per_worker=1, callback=clock)
    return time.perf_counter() - t, clock.last - clock.first, report.outcomes


def noop_round_trip(calls: int = 200) -> float:
    """Seconds per call of an empty actor method: Ray's own floor for one task."""
    import ray

    @ray.remote(num_cpus=0)
    class Noop:
        def f(self, x):
            return x

    a = Noop.remote()
    ray.get(a.f.remote(0))
    t = time.perf_counter()
    for i in range(calls):
        ray.get(a.f.remote(i))
    ray.kill(a)
    return (time.perf_counter() - t) / calls


def project(t: float, overhead: float, round_trip: float, start: float) -> str:
    """What N workers would do, from the measured per-pair cost, overhead and worker start-up."""
    ns = (1, 2, 4, 8, 16, 64)

    def row(label: str, t: float) -> str:
        return f"| {label} | " + " | ".join(f"{n * 60 / (t + overhead):.0f}" for n in ns) + " |"

    return "\n".join([
        "Projection. Workers paint independently (each holds its own network and style cache, writes its own",
        "files), so N workers paint N x 60 / (t + o) pairs a minute, t a pair's paint time on one worker and o",
        f"the per-pair scheduling overhead (measured above: o = {overhead * 1000:.0f} ms). The driver is no",
        f"limit: one dispatch is a ~{round_trip * 1000:.1f} ms round trip, ~{1 / round_trip:.0f} pairs/s. Each "
        f"worker pays a start-up once (here {start:.0f} s: Python, torch, the network) and computes each style's",
        "targets once. On a GPU, t is one image's time there (the sidecar's `timings_s.total` of a",
        "`restyle stylize` run on that GPU); the GPU rows below are illustrations for such a t, not measurements.",
        "",
        "| pairs per minute | " + " | ".join(f"N={n}" for n in ns) + " |",
        "|---|" + "---|" * len(ns),
        row(f"CPU workers as measured (t = {t:.1f} s)", t),
        row("CPU workers, 512 px default settings (t = 52 s: the e2e section, 2 threads)", 52.0),
        row("GPU workers if t = 5 s", 5.0),
        row("GPU workers if t = 1 s", 1.0),
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=8)
    ap.add_argument("--styles", type=int, default=1)
    ap.add_argument("--size", type=int, default=128, help="output long side (px)")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--markdown", action="store_true", help="print a RESULTS.md section")
    args = ap.parse_args()
    cfg = StylizeConfig(size=args.size, iterations=args.iterations, scales=(args.size,))
    root = Path(tempfile.mkdtemp(prefix="ray_scaling_"))
    photos, styles = make_inputs(root, args.photos, args.size, args.styles)
    pairs = args.photos * args.styles
    rows: Dict[str, Tuple[float, float, list]] = {}
    cluster = start_cluster(nodes=2, cpus=1)
    try:
        for name, fn in (("local loop, 1 thread", lambda o: timed_local(photos, styles, o, cfg)),
                         ("ray, 1 worker", lambda o: timed_ray(photos, styles, o, cfg, 1)),
                         ("ray, 2 workers", lambda o: timed_ray(photos, styles, o, cfg, 2))):
            out = root / name.replace(" ", "_").replace(",", "")
            out.mkdir()
            rows[name] = fn(out)
        last = root / "ray_2_workers"
        t_skip, _, _ = timed_ray(photos, styles, last, cfg, 2)  # every pair complete: dispatch + skip check only
        noop = noop_round_trip()
    finally:
        stop_cluster(cluster)
    same = all(sorted((p.name, p.read_bytes()) for p in (root / d).glob("*.png"))
               == sorted((p.name, p.read_bytes()) for p in (root / "local_loop_1_thread").glob("*.png"))
               for d in ("ray_1_worker", "ray_2_workers"))
    shutil.rmtree(root)

    per_pair = sum(o.seconds for o in rows["ray, 1 worker"][2]) / pairs  # inside paint_pair, on a worker
    lines = [f"{pairs} pairs ({args.photos} coco256 photos x {args.styles} style), {args.size} px, "
             f"{args.iterations} iterations, real VGG-19, one CPU thread per worker",
             "job: whole call (Ray: actor start and network load included); steady: first pair started to last done",
             f"{'':22} {'job s':>7} {'photos/min':>11} {'steady s':>9} {'photos/min':>11} {'speed-up':>9}"]
    base = rows["local loop, 1 thread"][1]
    for name, (wall, steady, _) in rows.items():
        lines.append(f"{name:22} {wall:7.1f} {60 * pairs / wall:11.1f} {steady:9.1f} {60 * pairs / steady:11.1f} "
                     f"{base / steady:8.2f}x")
    one = rows["ray, 1 worker"]
    lines += [f"per pair inside paint_pair on a worker: {per_pair:.2f} s",
              f"scheduling overhead per pair, 1 worker (steady wall - paint time) / pairs: "
              f"{(one[1] - per_pair * pairs) / pairs * 1000:.0f} ms",
              f"rerun, all {pairs} pairs complete (dispatch + skip check): {t_skip:.1f} s with actor start",
              f"no-op actor call round trip: {noop * 1000:.2f} ms",
              f"outputs byte-identical across local, 1 and 2 workers: {same}"]
    projection = project(per_pair, max(0.0, (one[1] - per_pair * pairs) / pairs), noop, one[0] - one[1])
    if args.markdown:
        print("```")
    print("\n".join(lines))
    if args.markdown:
        print("```")
        print()
    print(projection)


if __name__ == "__main__":
    main()
