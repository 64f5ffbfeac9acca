"""Open progress streams vs the rest of the server: /healthz latency with N streams open, and the time to stop.

    PYTHONPATH=src .venv/bin/python benchmarks/web_streams.py              # 50 and 1000 streams
    PYTHONPATH=src .venv/bin/python benchmarks/web_streams.py --streams 50 1100

Starts a server (no workers: one queued job that every stream watches) in a
subprocess on 127.0.0.1, opens the streams from this process, times 30
/healthz requests one after another, then sends Ctrl-C and times the stop.
Everything goes to 127.0.0.1 only, bounded in count and time. Works on older
trees too (without restyle.web.server it starts the app the old way), so two
trees can be compared side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx
from PIL import Image

SERVER = """
import sys
from dataclasses import fields
from restyle.web.settings import Settings
names = {f.name for f in fields(Settings)}
kw = dict(data_dir=sys.argv[1], start_workers=False, gallery=False)
if "max_streams_per_client" in names:  # this benchmark is one client: lift the cap
    kw.update(max_streams_per_client=100_000, max_streams=100_000)
settings = Settings(**kw)
port = int(sys.argv[2])
try:
    from restyle.web.server import serve
except ImportError:  # an older tree
    import uvicorn
    from restyle.web.app import create_app
    uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=5)
else:
    serve(settings, "127.0.0.1", port)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(size) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "gray").save(buf, "PNG")
    return buf.getvalue()


async def measure(base: str, job_id: str, n: int) -> dict:
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    opened = 0
    release = asyncio.Event()

    async def stream(client):
        nonlocal opened
        async with client.stream("GET", f"{base}/api/jobs/{job_id}/events") as r:
            opened += r.status_code == 200
            async for _ in r.aiter_lines():
                if release.is_set():
                    break

    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        tasks = [asyncio.create_task(stream(client)) for _ in range(n)]
        deadline = time.monotonic() + 60
        while opened < n and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        times = []
        async with httpx.AsyncClient(timeout=60) as probe:
            for _ in range(30):
                t0 = time.perf_counter()
                await probe.get(f"{base}/healthz")
                times.append(time.perf_counter() - t0)
        release.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    times.sort()
    return {"opened": opened, "median_ms": 1000 * statistics.median(times), "p90_ms": 1000 * times[int(0.9 * len(times))],
            "max_ms": 1000 * max(times)}


def run(n: int) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        proc = subprocess.Popen([sys.executable, "-c", SERVER, data, str(port)],
                                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the server did not start")
                time.sleep(0.2)
            files = {"content": ("c.png", png((80, 64))), "style": ("s.png", png((64, 64)))}
            job_id = httpx.post(base + "/api/jobs", files=files).json()["id"]
            figures = asyncio.run(measure(base, job_id, n))
            # Stop with streams open: reopen a few, then Ctrl-C.
            figures.update(stop_with_streams(base, job_id, proc))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return figures


def stop_with_streams(base: str, job_id: str, proc) -> dict:
    import threading

    ended = []

    def hold():
        try:
            with httpx.stream("GET", f"{base}/api/jobs/{job_id}/events", timeout=30) as r:
                for _ in r.iter_lines():
                    pass
        except httpx.HTTPError:
            pass
        ended.append(time.monotonic())

    threads = [threading.Thread(target=hold, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    exit_s = time.monotonic() - t0
    for t in threads:
        t.join(10)
    return {"streams_end_s": max(ended) - t0 if ended else float("nan"), "exit_s": exit_s,
            "tracebacks": err.count("Traceback")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[50, 1000])
    args = parser.parse_args()
    if max(args.streams) > 2000:
        raise SystemExit("at most 2000 streams")
    import restyle

    print(f"tree: {os.path.dirname(restyle.__file__)}; load average {os.getloadavg()[0]:.1f} at start")
    print("/healthz: 30 requests in a row with N streams open; Ctrl-C with 3 streams open: when they ended, "
          "when the process exited")
    print(f"{'streams':>8} {'opened':>7} {'median':>9} {'p90':>9} {'max':>9} {'streams end':>12} {'exit':>8} "
          f"{'tracebacks':>10}")
    for n in args.streams:
        f = run(n)
        print(f"{n:>8} {f['opened']:>7} {f['median_ms']:>6.0f} ms {f['p90_ms']:>6.0f} ms {f['max_ms']:>6.0f} ms "
              f"{f['streams_end_s']:>10.2f} s {f['exit_s']:>6.2f} s {f['tracebacks']:>10}")


if __name__ == "__main__":
    main()
