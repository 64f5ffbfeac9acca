"""The job store under stress: a restart in the middle of a job, and 20 jobs at once."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient

from restyle.web.app import create_app
from restyle.web.jobs import JobStore
from webutil import image_bytes, live_server, wait_for, web_settings

PNG = image_bytes("PNG", (48, 40))
STYLE = image_bytes("PNG", (40, 40), "starry_night.jpg")
FILES = {"content": ("c.png", PNG, "image/png"), "style": ("s.png", STYLE, "image/png")}


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_restart_in_the_middle_of_a_job_loses_nothing(tmp_path, tiny_weights):
    quick = web_settings(tmp_path / "d", tiny_weights, overrides={"iterations": 4, "device": "cpu"})
    slow = web_settings(tmp_path / "d", tiny_weights, overrides={"iterations": 100_000, "device": "cpu"})
    store = JobStore(quick.db_path, quick.jobs_dir)

    with TestClient(create_app(quick)) as c:  # one finished job before anything goes wrong
        first = c.post("/api/jobs", files=FILES).json()["id"]
        wait_for(lambda: store.get(first).state == "done", 60, "the first job")
        cookies = dict(c.cookies)
    kept = {p.name: sha(p) for p in (quick.jobs_dir / first).iterdir()}
    assert {"content.png", "style.png", "result.png", "report.json"} <= set(kept)

    with TestClient(create_app(slow), cookies=cookies) as c:  # stopped while painting, one more waiting
        running = c.post("/api/jobs", files=FILES).json()["id"]
        waiting = c.post("/api/jobs", files=FILES).json()["id"]
        wait_for(lambda: store.get(running).progress.get("step", 0) > 2, 60, "the job to be painting")
    assert store.get(running).state == "queued" and store.get(waiting).state == "queued"

    # A crash leaves a job marked running: the next start must queue it again too.
    with store._db() as db:
        db.execute("UPDATE jobs SET state='running', attempts=1 WHERE id=?", (running,))

    with TestClient(create_app(quick), cookies=cookies) as c:
        for job_id in (running, waiting):
            wait_for(lambda: store.get(job_id).state == "done", 60, f"job {job_id} after the restart")
        history = [j["id"] for j in c.get("/api/jobs").json()["jobs"]]
        assert history == [waiting, running, first]
        assert store.get(running).attempts == 2 and store.get(waiting).attempts == 1
        assert c.get(f"/jobs/{first}/result.png").status_code == 200
    assert {p.name: sha(p) for p in (quick.jobs_dir / first).iterdir()} == kept  # untouched


@pytest.mark.slow
def test_twenty_concurrent_jobs_all_finish_in_order(tmp_path, tiny_weights):
    s = web_settings(tmp_path / "d", tiny_weights, overrides={"iterations": 3, "device": "cpu"}, snapshots=1)
    with live_server(s) as url:
        start = threading.Barrier(20)

        def submit(i):
            with httpx.Client(base_url=url, timeout=30) as client:
                start.wait()
                r = client.post("/api/jobs", files=FILES, data={"strength": str((i % 13 - 6) / 2)})
                assert r.status_code == 201, r.text
                return r.json()

        with ThreadPoolExecutor(20) as pool:
            submitted = list(pool.map(submit, range(20)))
        store = JobStore(s.db_path, s.jobs_dir)
        ids = [j["id"] for j in sorted(submitted, key=lambda j: j["seq"])]
        assert len(set(ids)) == 20
        wait_for(lambda: all(store.get(i).state == "done" for i in ids), 90, "all 20 jobs")
        jobs = [store.get(i) for i in ids]
        # In the order they were accepted: each started after the previous finished (one worker).
        for a, b in zip(jobs, jobs[1:]):
            assert a.finished <= b.started
        strength = {j["id"]: (i % 13 - 6) / 2 for i, j in enumerate(submitted)}
        for j in jobs:  # nothing lost, nothing mixed up: each ran once with its own settings
            assert (s.jobs_dir / j.id / "result.png").is_file() and j.attempts == 1
            assert j.report["config"]["style_strength"] == pytest.approx(2 ** strength[j.id], rel=1e-5)  # the form rounds to 6 places


def test_one_worker_per_device_shares_the_queue(tmp_path, tiny_weights):
    s = web_settings(tmp_path / "d", tiny_weights, devices=("cpu", "cpu"), overrides={"iterations": 40})
    with TestClient(create_app(s)) as c:
        assert len(c.app.state.pool.pids()) == 2
        ids = [c.post("/api/jobs", files=FILES).json()["id"] for _ in range(6)]
        store = JobStore(s.db_path, s.jobs_dir)
        wait_for(lambda: all(store.get(i).state == "done" for i in ids), 90, "six jobs on two workers")
        jobs = [store.get(i) for i in ids]
    assert {j.worker for j in jobs} == {0, 1}  # both took jobs
    assert all(j.report["device"].startswith("cpu") and j.attempts == 1 for j in jobs)


def test_a_worker_paints_on_its_own_gpu_without_global_cuda_state(tmp_path, tiny_weights, monkeypatch):
    """A worker for "cuda:N" passes the device to the engine as is (the config accepts cuda:N);
    it no longer strips the index and makes the GPU current for the whole process."""
    import threading as th

    import torch

    import restyle.optimiser.engine as engine
    from restyle.web.worker import Worker

    s = web_settings(tmp_path / "d", tiny_weights, devices=("cuda:1",), overrides={"iterations": 2})
    store = JobStore(s.db_path, s.jobs_dir)
    (s.jobs_dir / "j1").mkdir(parents=True)
    (s.jobs_dir / "j1" / "c.png").write_bytes(PNG)
    (s.jobs_dir / "j1" / "s.png").write_bytes(STYLE)
    store.add("j1", {}, "c.png", "s.png", "c.png", "s.png")
    seen = []
    monkeypatch.setattr(engine, "run", lambda c, st, cfg, **kw: seen.append(cfg.device) or (_ for _ in ()).throw(
        engine.InputError("stop here")))
    monkeypatch.setattr(torch.cuda, "set_device", lambda *a: seen.append("set_device"))
    w = Worker(s, 0, th.Event(), th.Event())
    w.run_job(store.claim(0))
    assert seen == ["cuda:1"] and store.get("j1").state == "failed"


def _clear_forever(flag):
    while True:
        flag.clear()


def test_a_worker_killed_at_any_moment_cannot_block_the_flags(tmp_path):
    """The pool's stop and wake flags take no lock: a worker SIGKILLed in the middle of using one
    (here: clearing it in a loop) leaves them working for the server and the other workers.
    (multiprocessing.Event hung here: its lock stayed with the dead process.)"""
    import multiprocessing
    import signal

    from restyle.web.worker import SharedFlag

    ctx = multiprocessing.get_context("fork")  # the child runs a function of this module as it is
    flag = SharedFlag(ctx)
    for _ in range(3):
        p = ctx.Process(target=_clear_forever, args=(flag,), daemon=True)
        p.start()
        time.sleep(0.3)
        os.kill(p.pid, signal.SIGKILL)
        p.join(5)
    done = threading.Event()

    def use():
        flag.set()
        assert flag.is_set() and flag.wait(0.1)
        flag.clear()
        assert not flag.wait(0.1)
        done.set()

    t = threading.Thread(target=use, daemon=True)
    t.start()
    assert done.wait(5), "the flag is stuck"
