"""`restyle serve --ray`: the web app's jobs on a local Ray cluster (a head and one more node, one CPU each).

The jobs go through the HTTP API as in test_web.py; the app's RayWorkerPool hands them to
the cluster through its bridge process, and the files travel through the object store.
The tiny random network at 64 px keeps each job to a second or two; the slow part is each
new bridge's Ray workers importing torch.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

ray = pytest.importorskip("ray")

from restyle.cli.main import main  # noqa: E402
from restyle.web.app import create_app  # noqa: E402
from restyle.web.jobs import JobStore  # noqa: E402
from webutil import (TRAIN_OVERRIDES, clip_bytes, free_port, image_bytes, model_settings, wait_for,  # noqa: E402
                     web_settings, write_train_photos)

pytestmark = pytest.mark.ray

STORE = 80 * 2**20  # bytes of object store per node (Ray's floor is 75 MB)
PNG = image_bytes("PNG")
STYLE = image_bytes("JPEG", (64, 64), "starry_night.jpg")
FINAL = ("done", "failed", "cancelled")
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def web_ray_cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True,
                head_node_args={"num_cpus": 1, "object_store_memory": STORE, "include_dashboard": False})
    c.add_node(num_cpus=1, object_store_memory=STORE)
    yield c
    c.shutdown()


@pytest.fixture
def ray_photos(tmp_path):
    """Four small photos to train on (webutil.write_train_photos)."""
    return write_train_photos(tmp_path / "photos")


def train(client, steps="4"):
    return client.post("/api/train", files={"style": ("painting.jpg", STYLE, "image/jpeg")}, data={"steps": steps})


def apply(client, model, media=PNG, name="photo.png", **data):
    return client.post("/api/apply", files={"media": (name, media, "application/octet-stream")},
                       data={"model": model, **data})


def children(pid: int) -> list:
    """The child processes of `pid` (Linux /proc)."""
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def gone(pid: int) -> bool:
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return True


def ray_settings(data_dir, weights, address, iterations=6, **kw):
    return web_settings(data_dir, weights, ray_address=address, progress_interval=0.1,
                        overrides={"iterations": iterations, "device": "cpu", "precision": "fp32"}, **kw)


def post(client, **data):
    r = client.post("/api/jobs", files={"content": ("photo.png", PNG, "image/png"),
                                        "style": ("style.jpg", STYLE, "image/jpeg")}, data=data)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def job_of(client, job_id):
    return client.get(f"/api/jobs/{job_id}").json()


def wait_done(client, job_id, timeout=180):
    return wait_for(lambda: (j := job_of(client, job_id))["state"] in FINAL and j, timeout, f"job {job_id} to end")


def wait_running(client, job_id, timeout=120):
    """The job's progress once its Ray task has started and painted a step; where it runs is in it."""
    return wait_for(lambda: (p := job_of(client, job_id)["progress"]).get("step") and p.get("ray") and p,
                    timeout, f"job {job_id} to run on Ray")


def local_picture(settings, params):
    """What a local worker paints for the same job: the engine on the same files, one thread (as each Ray slot)."""
    import torch

    from restyle.optimiser.engine import run
    from restyle.web.form import make_config

    job = settings.jobs_dir
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (job / "ref").mkdir(exist_ok=True)
        (job / "ref" / "c.png").write_bytes(PNG)
        (job / "ref" / "s.jpg").write_bytes(STYLE)
        result = run(job / "ref" / "c.png", [job / "ref" / "s.jpg"], make_config(params, settings),
                     weights=settings.weights)
    finally:
        torch.set_num_threads(threads)
    return np.asarray(result.image.convert("RGB"))


def test_a_paint_job_runs_on_ray_through_the_api_and_paints_what_a_local_worker_paints(web_ray_cluster, tmp_path,
                                                                                          tiny_weights):
    s = ray_settings(tmp_path / "d", tiny_weights, web_ray_cluster.address)
    with TestClient(create_app(s)) as c:
        job_id = post(c, strength="1")
        job = wait_done(c, job_id)
        assert job["state"] == "done" and job["attempts"] == 1, job
        ray_side = job["progress"]["ray"]
        assert ray_side["pid"] != os.getpid() and ray_side["pid"] not in c.app.state.pool.pids()
        assert job["progress"]["step"] == job["progress"]["steps"] == 6 and job["preview"] >= 1
        r = c.get(f"/jobs/{job_id}/result.png")
        assert r.status_code == 200
        picture = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
        assert c.get(f"/jobs/{job_id}/report.json").json()["iterations"] == 6
        assert c.get(f"/jobs/{job_id}/preview.jpg").status_code == 200
        page = c.get(f"/jobs/{job_id}").text
        assert "Download full size" in page and str(s.data_dir) not in page
    assert np.array_equal(picture, local_picture(s, job["params"]))


def test_every_job_kind_on_ray_train_then_stylize_a_photo_and_a_clip_and_preview_with_the_model(
        web_ray_cluster, tmp_path, tiny_weights, ray_photos):
    """A training (the photos through the object store), then its model (sent with each job) on a photo, a clip
    and as a paint job's instant preview: every kind of job, none of them reading the server's folders."""
    s = replace(model_settings(tmp_path, tiny_weights, ray_photos), ray_address=web_ray_cluster.address,
                progress_interval=0.1)
    with TestClient(create_app(s)) as c:
        model_id = train(c).json()["id"]
        job = wait_done(c, model_id)
        assert job["state"] == "done" and job["progress"]["step"] == 4 and job["progress"]["photos"] == 2, job
        assert (s.jobs_dir / model_id / "model.pt").is_file() and job["preview"] >= 2
        assert c.get(f"/jobs/{model_id}/report.json").json()["training"]["steps_done"] == 4
        r = apply(c, model_id, size="64")
        done = wait_done(c, r.json()["id"])
        assert done["state"] == "done" and done["progress"]["ray"], done
        assert Image.open(io.BytesIO(c.get(done["result"]).content)).size == (64, 51)
        r = apply(c, model_id, clip_bytes(tmp_path, audio=False), "clip.mp4")
        done = wait_done(c, r.json()["id"])
        assert done["state"] == "done" and done["progress"]["step"] == 10, done
        assert c.get(done["result"]).status_code == 200
        done = wait_done(c, post(c))
        assert done["state"] == "done" and done["progress"]["instant"]["model"] == "model", done


def test_a_training_gives_its_turn_to_a_waiting_job_and_resumes_from_its_checkpoint(web_ray_cluster, tmp_path,
                                                                                   tiny_weights, ray_photos):
    """One slot: the training saves its checkpoint after its slice, which comes back to the server; the paint
    job runs; the training's next turn (its checkpoint sent with it) resumes where it stopped."""
    s = replace(model_settings(tmp_path, tiny_weights, ray_photos, train_steps=(4, 60), default_train_steps=60),
                ray_address=web_ray_cluster.address, ray_workers=1, train_slice_s=1.0, progress_interval=0.1)
    with TestClient(create_app(s)) as c:
        trainer = train(c, steps="60").json()["id"]
        wait_for(lambda: job_of(c, trainer)["progress"].get("step"), 180, "the training to start")
        painter = post(c)
        paint_job = wait_done(c, painter)
        training = wait_done(c, trainer)
    assert paint_job["state"] == "done" and training["state"] == "done", training
    assert paint_job["finished"] < training["finished"]
    assert training["progress"]["resumed_from"] > 0 and training["attempts"] == 1
    assert (s.jobs_dir / trainer / "model.pt").is_file()


def test_a_killed_ray_worker_runs_its_job_again_with_the_attempt_counted_and_cancel_stops_one(web_ray_cluster, tmp_path,
                                                                                             tiny_weights):
    s = ray_settings(tmp_path / "d", tiny_weights, web_ray_cluster.address, iterations=300)
    with TestClient(create_app(s)) as c:
        job_id = post(c)
        first = wait_running(c, job_id)["ray"]
        os.kill(first["pid"], signal.SIGKILL)
        job = wait_done(c, job_id)
        assert job["state"] == "done" and job["attempts"] == 2, job
        assert job["progress"]["ray"]["pid"] != first["pid"] and job["progress"]["step"] == 300
        assert c.get(f"/jobs/{job_id}/result.png").status_code == 200
        # Its owner cancels a job running on the cluster: it stops at its next step.
        job_id = post(c)
        wait_running(c, job_id)
        assert c.post(f"/api/jobs/{job_id}/cancel").status_code == 200
        job = wait_done(c, job_id, 30)
        assert job["state"] == "cancelled" and job["progress"]["step"] < 300, job
        assert c.get(f"/jobs/{job_id}/result.png").status_code == 404


@pytest.mark.slow
def test_a_lost_node_s_job_runs_again_on_another_with_the_attempt_counted(tmp_path, tiny_weights):
    """Two nodes, a job on each; the second node goes (its raylet killed): its job runs again on the head."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True,
                head_node_args={"num_cpus": 1, "object_store_memory": STORE, "include_dashboard": False})
    second = c.add_node(num_cpus=1, object_store_memory=STORE)
    try:
        s = ray_settings(tmp_path / "d", tiny_weights, c.address, iterations=300)
        with TestClient(create_app(s)) as client:
            ids = [post(client), post(client)]
            where = {i: wait_running(client, i)["ray"]["node"] for i in ids}
            (moved,) = [i for i in ids if where[i] == second.node_id]
            c.remove_node(second, allow_graceful=False)
            jobs = {i: wait_done(client, i, 240) for i in ids}
        assert all(j["state"] == "done" for j in jobs.values()), jobs
        assert jobs[moved]["attempts"] == 2 and jobs[moved]["progress"]["ray"]["node"] != second.node_id
        assert [j["attempts"] for i, j in jobs.items() if i != moved] == [1]
    finally:
        c.shutdown()


def test_a_server_stopped_mid_training_gets_its_checkpoint_back_and_the_next_start_resumes_it(web_ray_cluster, tmp_path,
                                                                                             tiny_weights, ray_photos):
    """Stopped: the job is asked to stop, saves its checkpoint, which comes back, and is queued again (not an
    attempt lost). No checkpoint is due within the run (checkpoint_every 1000): the one found is the stop's."""
    s = replace(model_settings(tmp_path, tiny_weights, ray_photos, train_steps=(4, 60), default_train_steps=60,
                               train_overrides=dict(TRAIN_OVERRIDES, checkpoint_every=1000)),
                ray_address=web_ray_cluster.address, progress_interval=0.1)
    with TestClient(create_app(s)) as c:
        job_id = train(c, steps="60").json()["id"]
        seen = wait_for(lambda: (job_of(c, job_id)["progress"].get("step") or 0) >= 2 and job_of(c, job_id),
                        180, "the training to take two steps")["progress"]["step"]
    stopped = JobStore(s.db_path, s.jobs_dir).get(job_id)
    assert stopped.state == "queued" and stopped.attempts == 0
    assert (s.jobs_dir / job_id / "model.ckpt.pt").is_file() and not (s.jobs_dir / job_id / "model.pt").exists()
    with TestClient(create_app(s)) as c:
        job = wait_done(c, job_id)
        assert job["state"] == "done" and job["attempts"] == 1 and job["progress"]["step"] == 60, job
        assert seen <= job["progress"]["resumed_from"] < 60
        time.sleep(1.0)  # nothing left running that could finish it a second time
        assert job_of(c, job_id)["finished"] == job["finished"]
    assert (s.jobs_dir / job_id / "model.pt").is_file()


def test_a_server_killed_outright_mid_job_runs_it_again_once_on_the_next_start(web_ray_cluster, tmp_path, tiny_weights):
    """`serve --ray` killed with SIGKILL while its job runs on the cluster: its bridge writes nothing more and
    goes; the next server on the same data folder queues the job again (counted) and runs it once."""
    import httpx

    data, port = tmp_path / "d", free_port()
    env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    log = tmp_path / "serve.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "restyle", "serve", "--port", str(port), "--data-dir",
                                 str(data), "--weights", str(tiny_weights), "--no-gallery",
                                 "--ray", web_ray_cluster.address], stderr=err, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        def up():
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(f"{url}/healthz", timeout=2).json()["workers"] == 1
        wait_for(up, 120, "the server to start")
        r = httpx.post(f"{url}/api/jobs", files={"content": ("photo.png", PNG, "image/png"),
                                                 "style": ("style.jpg", STYLE, "image/jpeg")}, timeout=10)
        job_id = r.json()["id"]
        wait_for(lambda: (p := httpx.get(f"{url}/api/jobs/{job_id}").json()["progress"]).get("step") and p.get("ray"),
                 180, "the job to run on Ray")
        bridge = children(proc.pid)
    finally:
        proc.kill()
        proc.wait(30)
    assert "jobs run on the Ray cluster" in log.read_text()
    wait_for(lambda: all(gone(k) for k in bridge), 60,
             "the bridge to go")
    left = JobStore(data / "restyle.db", data / "jobs").get(job_id)
    assert left.state == "running" and left.attempts == 1  # nobody wrote after the kill
    s = ray_settings(data, tiny_weights, web_ray_cluster.address)
    with TestClient(create_app(s)) as c:
        job = wait_done(c, job_id)
        assert job["state"] == "done" and job["attempts"] == 2 and job["progress"]["step"] == 6, job
        time.sleep(1.0)
        assert job_of(c, job_id)["finished"] == job["finished"]


def test_serve_ray_says_what_it_found_and_stops_on_ctrl_c_in_two_lines(web_ray_cluster, tmp_path, tiny_weights):
    import httpx

    port = free_port()
    env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen([sys.executable, "-m", "restyle", "serve", "--port", str(port), "--data-dir",
                             str(tmp_path / "d"), "--weights", str(tiny_weights), "--no-gallery", "--ray",
                             web_ray_cluster.address], stderr=subprocess.PIPE, text=True, env=env)
    try:
        def up():
            assert proc.poll() is None, "the server exited"
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()["workers"] == 1
        wait_for(up, 120, "the server to start")
        time.sleep(3)  # the bridge joins the cluster meanwhile
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err, err
    found = f"restyle: jobs run on the Ray cluster ({web_ray_cluster.address}): 2 node(s); 2 job(s) at once"
    assert lines[0].startswith(found)
    assert f"serving on http://127.0.0.1:{port}/" in lines[1]


def test_a_cluster_that_does_not_answer_holds_the_jobs_and_says_so(tmp_path, tiny_weights):
    """Lost (here: never there): the job waits, queued, and its page and the API say why."""
    s = ray_settings(tmp_path / "d", tiny_weights, "127.0.0.1:1")
    with TestClient(create_app(s)) as c:
        job_id = post(c)
        note = wait_for(lambda: job_of(c, job_id)["progress"].get("notice"), 60, "the notice")
        assert "waiting for the Ray cluster" in note and "127.0.0.1:1" in note
        assert job_of(c, job_id)["state"] == "queued"
        assert note in c.get(f"/jobs/{job_id}").text


@pytest.mark.slow
def test_a_cluster_lost_mid_job_holds_it_says_so_and_runs_it_when_back(tmp_path, tiny_weights):
    """The head goes away mid-job: the job is queued again (not counted) and its page says why; a head at the
    same address later: the job runs and ends."""
    from ray.cluster_utils import Cluster
    port = free_port()

    def head():
        return Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "gcs_server_port": port, "object_store_memory": STORE, "include_dashboard": False})

    c = head()
    try:
        s = ray_settings(tmp_path / "d", tiny_weights, c.address, iterations=100)
        with TestClient(create_app(s)) as client:
            job_id = post(client)
            wait_running(client, job_id)
            c.shutdown()
            note = wait_for(lambda: job_of(client, job_id)["progress"].get("notice"), 60, "the notice")
            assert "waiting for the Ray cluster, which does not answer" in note
            job = job_of(client, job_id)
            assert job["state"] == "queued" and job["attempts"] == 0, job
            assert "which does not answer" in client.get(f"/jobs/{job_id}").text
            c = head()
            job = wait_done(client, job_id)
            assert job["state"] == "done" and job["attempts"] == 1 and "notice" not in job["progress"], job
    finally:
        c.shutdown()


def test_serve_ray_alone_starts_a_ray_instance_of_its_own(tmp_path, tiny_weights):
    """`serve --ray` with no address: the bridge starts Ray on this machine (and stops it with the server)."""
    from restyle.web.ray_pool import check_cluster

    s = ray_settings(tmp_path / "d", tiny_weights, "local")
    assert check_cluster(s) == "a Ray instance started on this machine by the server"
    with TestClient(create_app(s)) as c:
        job = wait_done(c, post(c))
        assert job["state"] == "done" and job["progress"]["ray"]["pid"] not in c.app.state.pool.pids(), job
        bridge = c.app.state.pool.pids()
    assert all(gone(k) for k in bridge)


def test_serve_ray_without_a_cluster_exits_2_in_one_line(tmp_path, tiny_weights, capsys):
    base = ["serve", "--data-dir", str(tmp_path / "d"), "--weights", str(tiny_weights), "--port", "8765"]
    assert main([*base, "--ray", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot reach a Ray cluster at 127.0.0.1:1" in err
    assert main([*base, "--ray", "no/such:address"]) == 2
    assert "ray address 'no/such:address' is not one of" in capsys.readouterr().err
    assert main([*base, "--ray-workers", "2"]) == 2
    assert "need --ray" in capsys.readouterr().err
    assert main([*base, "--ray", "127.0.0.1:1", "--devices", "cuda:0,cuda:1"]) == 2
    assert "name one kind (auto, cpu or cuda)" in capsys.readouterr().err
    assert not (tmp_path / "d" / "restyle.db").exists()  # nothing written


def test_settings_refuse_bad_ray_values(tmp_path, tiny_weights):
    with pytest.raises(Exception, match="ray address 'x y' is not one of"):
        ray_settings(tmp_path, tiny_weights, "x y")
    with pytest.raises(Exception, match="ray_workers 0 must be a whole number >= 1"):
        replace(ray_settings(tmp_path, tiny_weights, "auto"), ray_workers=0)


def test_job_files_travel_by_relative_names_only_and_only_the_changed_come_back(tmp_path):
    from restyle.web.ray_job import changed_files, folder_files, safe_path, write_files

    sent = write_files({"content.png": b"c", "frames/000001.png": b"f"}, tmp_path / "job")
    assert folder_files(tmp_path / "job") == {"content.png": b"c", "frames/000001.png": b"f"}
    assert folder_files(tmp_path / "job", skip=("content.png",)) == {"frames/000001.png": b"f"}
    (tmp_path / "job" / "result.png").write_bytes(b"r")
    (tmp_path / "job" / "frames" / "000001.png").write_bytes(b"g")
    assert changed_files(tmp_path / "job", sent) == {"frames/000001.png": b"g", "result.png": b"r"}
    for bad in ("../x", "/etc/passwd", "a/../../x", ""):
        with pytest.raises(ValueError, match="leaves the job's folder"):
            safe_path(tmp_path, bad)
