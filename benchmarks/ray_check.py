"""The issue's done-when check: 20 small photos x 2 styles on a 2-worker local Ray cluster, one
worker killed midway, give the same files as the local run.

    python benchmarks/ray_check.py --photos 20 --size 128 --iterations 16

Prints what it checked and exits 1 when a check fails. The local reference runs with one
thread, as each worker does (CPU results depend on the thread count).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from ray_scaling import make_inputs, start_cluster, stop_cluster, timed_local

from restyle.config import StylizeConfig
from restyle.batch.distributed import run_batch_ray
from restyle.events import BatchProgress, PairStarted


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=20)
    ap.add_argument("--size", type=int, default=128, help="output long side (px)")
    ap.add_argument("--iterations", type=int, default=16)
    args = ap.parse_args()
    cfg = StylizeConfig(size=args.size, iterations=args.iterations, scales=(args.size // 2, args.size))
    root = Path(tempfile.mkdtemp(prefix="ray_check_"))
    photos, styles = make_inputs(root, args.photos, args.size, 2)
    pairs = args.photos * len(styles)
    local, remote = root / "local", root / "ray"
    local.mkdir()
    remote.mkdir()
    t_local, _, _ = timed_local(photos, styles, local, cfg)

    killed = []

    def kill_midway(event) -> None:
        # The first pair to start once half the batch is finished: its worker dies while it paints.
        if isinstance(event, BatchProgress):
            kill_midway.finished = event.finished
        if isinstance(event, PairStarted) and not killed and getattr(kill_midway, "finished", 0) >= pairs // 2:
            killed.append(event)
            os.kill(event.pid, signal.SIGKILL)

    t_ray = time.perf_counter()
    cluster = start_cluster(nodes=2, cpus=1)
    try:
        report = run_batch_ray([photos], styles, remote, cfg, workers=2, cpus_per_worker=1, callback=kill_midway)
    finally:
        stop_cluster(cluster)
    t_ray = time.perf_counter() - t_ray

    def files(d: Path) -> dict:
        return {p.name: p.read_bytes() for p in d.glob("*.png")}

    checks = {
        f"{pairs} outputs locally": len(files(local)) == pairs,
        f"{pairs} outputs on Ray": len(files(remote)) == pairs,
        "every Ray output byte-identical to the local one": files(remote) == files(local),
        "a worker was killed mid-task": bool(killed),
        "the loss is reported": len(report.lost) == 1 and bool(killed) and f"pid {killed[0].pid}" in report.lost[0],
        "its pair ran again (attempt 2) and succeeded": [o.attempts for o in report.outcomes].count(2) == 1
        and all(o.status == "done" for o in report.outcomes),
        "nothing half-written (no temporary files)": not [p for p in remote.iterdir() if p.name.startswith(".")],
    }
    print(f"{pairs} pairs ({args.photos} photos x {len(styles)} styles), {args.size} px, {args.iterations} iterations; "
          f"local run {t_local:.0f} s (one thread), Ray run {t_ray:.0f} s (2 workers, cluster start included)")
    if killed:
        print(f"killed worker pid {killed[0].pid} while it painted {killed[0].label}")
    for line in report.summary():
        print(f"  {line}")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    shutil.rmtree(root)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
