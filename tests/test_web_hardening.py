"""Issues 15 and 27, the web app: what days of hostile use found, each as a test that failed before the fix.

Issue 15: who may cancel (the owner; the gallery nobody), one server per data folder,
--no-gallery, job links under a token, streams at shutdown and under load,
presets and what ran, uploads that could only fail later, error pages,
file names that are not UTF-8, and the umask of results.
Issue 27: trainings per address and server-wide, HEAD and bad Range headers on files,
a training cancelled before its first step, progress and wording.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from restyle.cli.main import main
from restyle.errors import InputError
from restyle.web.app import create_app
from restyle.web.form import form_fields
from restyle.web.jobs import GALLERY, JobStore
from tinynets import style_train_config
import webutil
from webutil import PNG, STYLE, free_port, image_bytes, live_server, wait_for, web_settings

SRC = Path(__file__).resolve().parents[1] / "src"
post = partial(webutil.post, follow_redirects=False)  # the answers themselves, not the pages they redirect to


def png(size, color="red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def examples(tmp_path):
    folder = tmp_path / "examples"
    folder.mkdir()
    (folder / "tubingen.jpg").write_bytes(image_bytes("JPEG", (80, 64)))
    (folder / "starry_night.jpg").write_bytes(STYLE)
    (folder / "the_scream.png").write_bytes(image_bytes("PNG", (64, 64), "starry_night.jpg"))
    return folder


def states(s) -> dict:
    with JobStore(s.db_path, s.jobs_dir)._db() as db:
        return dict(db.execute("SELECT id, state FROM jobs").fetchall())


# --- 1. who may cancel ------------------------------------------------------------

def test_only_the_submitting_browser_can_cancel(idle_settings):
    with TestClient(create_app(idle_settings)) as owner:
        job_id = post(owner).json()["id"]
        stranger = TestClient(owner.app)  # another browser: no owner cookie
        r = stranger.post(f"/api/jobs/{job_id}/cancel")
        assert r.status_code == 403 and r.json()["error"] == "only the browser that submitted this job can cancel it"
        r = stranger.post(f"/jobs/{job_id}/cancel", headers={"accept": "text/html"})
        assert r.status_code == 403 and "only the browser that submitted this job" in r.text
        assert owner.get(f"/api/jobs/{job_id}").json()["state"] == "queued"
        assert 'id="cancel"' not in stranger.get(f"/jobs/{job_id}").text  # no button it cannot use
        assert 'id="cancel"' in owner.get(f"/jobs/{job_id}").text
        assert owner.post(f"/api/jobs/{job_id}/cancel").json()["state"] == "cancelled"


def test_nobody_cancels_the_gallery_and_a_cancelled_one_is_painted_again(idle_settings, examples):
    s = replace(idle_settings, gallery=True, examples_dir=examples)
    with TestClient(create_app(s)) as c:
        ids = [j["id"] for j in c.get("/api/gallery").json()["results"]]
        assert len(ids) == 2
        assert post(c).status_code == 201  # now this browser owns a job: still not the gallery's
        for client in (c, TestClient(c.app)):
            r = client.post(f"/api/jobs/{ids[0]}/cancel")
            assert r.status_code == 403 and "nobody can cancel them" in r.json()["error"]
        assert 'id="cancel"' not in c.get(f"/jobs/{ids[0]}").text
        assert [j["state"] for j in c.get("/api/gallery").json()["results"]] == ["queued", "queued"]
    # What an older server let anyone do: cancelled gallery cards. The next start paints them.
    with JobStore(s.db_path, s.jobs_dir)._db() as db:
        db.execute("UPDATE jobs SET state='cancelled', error='cancelled' WHERE kind=?", (GALLERY,))
    with TestClient(create_app(s)) as c:
        results = c.get("/api/gallery").json()["results"]
        assert [j["id"] for j in results] == ids and [j["state"] for j in results] == ["queued", "queued"]


# --- 2. one server per data folder ------------------------------------------------

def _running_job(s) -> str:
    """A data folder whose one job is being painted (as a live server's would be)."""
    store = JobStore(s.db_path, s.jobs_dir)
    job_id = "job-being-painted-000000"
    store.folder(job_id).mkdir(parents=True)
    (store.folder(job_id) / "content.png").write_bytes(PNG)
    (store.folder(job_id) / "style.jpg").write_bytes(STYLE)
    store.add(job_id, {}, "content.png", "style.jpg", "c", "s")
    assert store.claim(0).id == job_id
    return job_id


def test_a_second_server_on_the_same_folder_is_refused_and_changes_nothing(idle_settings, examples, capsys):
    with live_server(idle_settings) as url:
        job_id = _running_job(idle_settings)
        before = JobStore(idle_settings.db_path, idle_settings.jobs_dir).get(job_id)
        port = url.rsplit(":", 1)[1]
        for p in (port, str(free_port())):  # its port, or another: the folder is what matters
            code = main(["serve", "--port", p, "--data-dir", str(idle_settings.data_dir), "--examples", str(examples),
                         "--weights", idle_settings.weights])
            err = capsys.readouterr().err
            assert code == 2, err
            assert f"data folder {idle_settings.data_dir} is in use by another restyle server (pid {os.getpid()}" in err
            assert "one server per data folder" in err and "Traceback" not in err
        after = JobStore(idle_settings.db_path, idle_settings.jobs_dir).get(job_id)
        assert (after.state, after.worker, after.attempts) == (before.state, before.worker, before.attempts) == ("running", 0, 1)
        assert list(states(idle_settings)) == [job_id]  # no gallery queued into a folder served without one
        assert httpx.get(url + "/healthz").status_code == 200


def test_a_port_in_use_fails_before_anything_is_written(idle_settings, examples, capsys):
    job_id = _running_job(idle_settings)
    digest = hashlib.sha256(idle_settings.db_path.read_bytes()).hexdigest()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code = main(["serve", "--port", str(port), "--data-dir", str(idle_settings.data_dir), "--examples", str(examples),
                     "--weights", idle_settings.weights])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot listen on 127.0.0.1 port {port}" in err and "Pick another --port" in err
    assert hashlib.sha256(idle_settings.db_path.read_bytes()).hexdigest() == digest
    assert states(idle_settings) == {job_id: "running"}
    # The folder is free again: a server can start on it.
    with TestClient(create_app(idle_settings)) as c:
        assert c.get(f"/api/jobs/{job_id}").json()["state"] == "queued"  # recovered by the one that runs


# --- 3. --no-gallery --------------------------------------------------------------

def test_no_gallery_stops_queued_gallery_jobs(idle_settings, examples):
    s = replace(idle_settings, gallery=True, examples_dir=examples)
    with TestClient(create_app(s)):
        pass
    assert sorted(states(s).values()) == ["queued", "queued"]
    with TestClient(create_app(replace(s, gallery=False))) as c:
        assert c.get("/api/gallery").json()["results"] == []
        assert sorted(states(s).values()) == ["cancelled", "cancelled"]
        assert JobStore(s.db_path, s.jobs_dir).claim(0) is None  # the worker finds nothing to paint


def test_drop_gallery_except_an_empty_list_cancels_every_queued_gallery_job(tmp_path):
    store = JobStore(tmp_path / "db", tmp_path / "jobs")
    for key in ("a", "b"):
        store.add(f"id-{key}", {}, "c.png", "s.png", "c", "s", kind=GALLERY, gallery_key=key)
    store.add("id-user", {}, "c.png", "s.png", "c", "s")
    assert store.drop_gallery_except([]) == 2
    assert [store.get(i).state for i in ("id-a", "id-b", "id-user")] == ["cancelled", "cancelled", "queued"]


# --- 4. token mode and job links ------------------------------------------------------

def test_under_a_token_a_job_link_is_enough_to_see_the_job(idle_settings):
    s = replace(idle_settings, token="s3cret")
    with TestClient(create_app(s)) as owner:
        assert owner.get("/?token=s3cret").status_code == 200
        cookie = owner.cookies.jar
        set_cookie = [c for c in cookie if c.name == "restyle_token"][0]
        assert set_cookie.get_nonstandard_attr("SameSite", "").lower() == "lax"  # sent when a link is followed
        job_id = post(owner).json()["id"]
        visitor = TestClient(owner.app)  # followed a link from another site: no token, no cookie
        page = visitor.get(f"/jobs/{job_id}", headers={"accept": "text/html"})
        assert page.status_code == 200 and "photo.png" in page.text and 'id="cancel"' not in page.text
        assert visitor.get(f"/api/jobs/{job_id}").json()["state"] == "queued"
        assert visitor.get(f"/jobs/{job_id}/content").content == PNG
        assert owner.post(f"/api/jobs/{job_id}/cancel").json()["state"] == "cancelled"
        r = visitor.get(f"/api/jobs/{job_id}/events")
        assert r.status_code == 200 and "event: end" in r.text
        # Everything else still needs the token: the form, submitting, the history, the gallery, cancelling.
        for method, path in (("GET", "/"), ("GET", "/api/jobs"), ("GET", "/api/gallery"), ("GET", "/history"),
                             ("POST", f"/api/jobs/{job_id}/cancel"), ("POST", "/api/jobs")):
            assert visitor.request(method, path).status_code == 401, path
        assert visitor.get("/jobs/not-a-job-id-at-all-0000/../../api/jobs").status_code == 401


# --- 6. stopping with open streams; 8. one poller, capped ---------------------------------

SERVE_SCRIPT = """
import sys
from restyle.web.server import serve
from restyle.web.settings import Settings
settings = Settings(data_dir=sys.argv[1], start_workers=False, gallery=False, progress_interval=0.05)
serve(settings, "127.0.0.1", int(sys.argv[2]), announce=lambda url: print("ready", url, flush=True))
"""


def test_stopping_with_open_streams_is_quick_and_quiet(tmp_path, capsys):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen([sys.executable, "-c", SERVE_SCRIPT, str(tmp_path / "data"), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    ended = []
    try:
        wait_for(lambda: _up(base), 60, "the server")
        # A second server on the folder names this one, with its address.
        assert main(["serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "data")]) == 2
        assert f"(pid {proc.pid}, serving {base}/, since " in capsys.readouterr().err
        with httpx.Client(base_url=base) as c:
            job_id = c.post("/api/jobs", files={"content": ("c.png", PNG), "style": ("s.jpg", STYLE)}).json()["id"]

        def watch():
            with httpx.stream("GET", f"{base}/api/jobs/{job_id}/events", timeout=30) as r:
                for _ in r.iter_lines():
                    pass
            ended.append(time.monotonic())

        threads = [threading.Thread(target=watch, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.5)  # the streams are open and waiting
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for t in threads:
        t.join(5)
    assert proc.returncode == 0, err
    assert len(ended) == 3  # every stream ended (the browser's EventSource reconnects by itself)
    assert "Traceback" not in err and "CancelledError" not in err and "timeout graceful shutdown" not in err, err
    # At once, not when the 5 s graceful timeout cancels them (the process exit after that is Python's teardown).
    took = max(ended) - t0
    assert took < 2, f"the streams ended {took:.1f} s after Ctrl-C"


def _up(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _open_streams(url, job_id, n, opened, stop):
    """n threads each holding a stream open until `stop` is set; `opened` collects the status codes."""

    def one():
        try:
            with httpx.stream("GET", f"{url}/api/jobs/{job_id}/events", timeout=30) as r:
                opened.append(r.status_code)
                if r.status_code != 200:
                    return
                for _ in r.iter_lines():
                    if stop.is_set():
                        return
        except httpx.HTTPError:
            opened.append(-1)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def test_streams_share_one_poller(idle_settings, monkeypatch):
    """30 open streams read the job store about as often as one does (each used to poll it itself)."""
    reads = {"n": 0}
    original = JobStore._db

    def counting(self):
        reads["n"] += 1
        return original(self)

    monkeypatch.setattr(JobStore, "_db", counting)
    s = replace(idle_settings, progress_interval=0.05, max_streams_per_client=100)
    with live_server(s) as url:
        job_id = httpx.post(url + "/api/jobs", files={"content": ("c.png", PNG), "style": ("s.jpg", STYLE)}).json()["id"]
        opened, stop = [], threading.Event()
        threads = _open_streams(url, job_id, 30, opened, stop)
        wait_for(lambda: len(opened) == 30, 30, "30 open streams")
        time.sleep(0.5)
        reads["n"] = 0
        time.sleep(1.0)
        per_tick = reads["n"] / (1.0 / s.progress_interval)
        stop.set()
        # Wake the streams so they see `stop`: a change to the job pushes a state to all of them.
        JobStore(s.db_path, s.jobs_dir).request_cancel(job_id)
        for t in threads:
            t.join(10)
    assert opened == [200] * 30
    assert per_tick <= 3, f"{reads['n']} store reads in 1 s with 30 streams ({per_tick:.1f} per poll interval)"


def test_streams_are_capped_per_client(idle_settings):
    s = replace(idle_settings, max_streams_per_client=3)
    with live_server(s) as url:
        job_id = httpx.post(url + "/api/jobs", files={"content": ("c.png", PNG), "style": ("s.jpg", STYLE)}).json()["id"]
        opened, stop = [], threading.Event()
        threads = _open_streams(url, job_id, 3, opened, stop)
        wait_for(lambda: len(opened) == 3, 30, "three streams")
        r = httpx.get(f"{url}/api/jobs/{job_id}/events", timeout=10)
        assert r.status_code == 429 and r.headers["retry-after"] == "30"
        assert "too many progress streams open from your address (3 is the most per client)" in r.json()["error"]
        page = httpx.get(f"{url}/jobs/{job_id}", headers={"accept": "text/html"})
        assert page.status_code == 200  # the page itself still works (it falls back to asking every few seconds)
        stop.set()
        JobStore(s.db_path, s.jobs_dir).request_cancel(job_id)  # ends the three
        for t in threads:
            t.join(10)
        r = httpx.get(f"{url}/api/jobs/{job_id}/events", timeout=10)
        assert r.status_code == 200 and "event: end" in r.text  # closed streams free their places
        # A client that opens streams and hangs up at once does not use up its places either.
        waiting = httpx.post(url + "/api/jobs", files={"content": ("c.png", PNG), "style": ("s.jpg", STYLE)}).json()["id"]
        for _ in range(10):
            with httpx.stream("GET", f"{url}/api/jobs/{waiting}/events", timeout=10) as r:
                assert r.status_code == 200
        again, stop = [], threading.Event()
        threads = _open_streams(url, waiting, 3, again, stop)
        wait_for(lambda: len(again) == 3, 30, "three streams again")
        stop.set()
        JobStore(s.db_path, s.jobs_dir).request_cancel(waiting)
        for t in threads:
            t.join(10)
    assert opened == [200, 200, 200] and again == [200, 200, 200]


# --- 10. presets and what ran; 12. results honour the umask ------------------------------

def test_a_preset_sets_the_size_unless_one_is_chosen(idle_settings):
    with TestClient(create_app(idle_settings)) as c:
        fields = {f.name: f for f in form_fields(idle_settings)}
        assert fields["size"].default == "" and fields["size"].choices[0] == ("", "auto (64 px)")
        job = post(c, preset="fast", size="").json()
        assert "size" not in job["params"]
        page = c.get(job["page"]).text
        assert "<th>size</th><td>256</td>" in page  # fast paints at 256 px, not the size box's default
        job = post(c, preset="fast", size="128").json()
        assert "<th>size</th><td>128</td>" in c.get(job["page"]).text  # a size chosen wins over the preset's
        job = post(c).json()
        assert "<th>size</th><td>64</td>" in c.get(job["page"]).text  # neither: the server's default
        r = post(c, preset="hq")
        assert r.status_code == 400 and "preset hq paints at 1024 px, over this server's limit of 256 px" in r.json()["error"]


def test_the_settings_table_shows_the_iterations_that_ran_and_files_honour_the_umask(tmp_path, tiny_weights):
    s = web_settings(tmp_path / "d", tiny_weights, sizes=(64, 128), overrides={"iterations": 8, "scales": (2,),
                                                                                "device": "cpu"})
    old = os.umask(0o022)
    try:
        with TestClient(create_app(s)) as c:
            job = post(c, size="128").json()
            assert "<th>iterations</th><td>8 + 8 = 16 (64 px, 128 px)</td>" in c.get(job["page"]).text
            done = wait_for(lambda: (j := c.get(f"/api/jobs/{job['id']}").json())["state"] == "done" and j, 60, "the job")
            assert done["progress"]["steps"] == 16 and done["progress"]["scales"] == 2
            assert done["progress"]["eta"] == 0
            page = c.get(job["page"]).text
            assert "<th>iterations</th><td>8 + 8 = 16 (64 px, 128 px)</td>" in page  # from the report: what ran
    finally:
        os.umask(old)
    for name in ("result.png", "preview.jpg", "report.json"):
        assert (s.jobs_dir / job["id"] / name).stat().st_mode & 0o777 == 0o644, name


# --- 11. uploads that can only fail later -------------------------------------------

@pytest.mark.parametrize("role,size,words", [
    ("content", (1000, 1), "content image: 1000x1 is too long and thin to paint: at 64 px on its long side"),
    ("content", (40000, 1000), "content image: 40000x1000 is too long and thin to paint"),
    ("style", (1000, 1), "style image: 1000x1 is too long and thin to paint"),
], ids=["photo-1000x1", "photo-40000x1000", "style-1000x1"])
def test_an_image_too_thin_to_paint_is_refused_at_upload(idle_settings, role, size, words):
    with TestClient(create_app(idle_settings)) as c:
        image = png(size)
        r = post(c, **{role: image}) if role == "content" else post(c, style=image)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert words in error and "needs at least 32 px" in error and "Crop it" in error
        assert "--" not in error  # page words, not CLI flags
        assert c.get("/api/jobs").json()["jobs"] == []


def test_a_thin_upload_shows_its_message_on_the_page(idle_settings):
    with TestClient(create_app(idle_settings)) as c:
        r = c.post("/jobs", files={"content": ("strip.png", png((1000, 1)), "image/png"),
                                   "style": ("s.jpg", STYLE, "image/jpeg")}, follow_redirects=False)
        assert r.status_code == 400 and 'role="alert">content image: 1000x1 is too long and thin' in r.text


# --- 15. error pages, the cancel address, file names, the form's words ----------------------

def test_browsers_get_pages_and_scripts_get_json(idle_settings):
    html = {"accept": "text/html,application/xhtml+xml"}
    with TestClient(create_app(idle_settings)) as c:
        job_id = post(c).json()["id"]
        for path, status in (("/no/such/page", 404), (f"/jobs/{job_id}/result.png?download=yes", 422)):
            r = c.get(path, headers=html)
            assert r.status_code == status and r.headers["content-type"].startswith("text/html"), path
            assert "<h1>Sorry</h1>" in r.text
            assert "error" in c.get(path).json()  # no text/html asked: JSON
        r = c.get(f"/jobs/{job_id}/result.png?download=yes", headers=html)
        assert "download" in r.text
        r = c.put("/", headers=html)
        assert r.status_code == 405 and "<h1>Sorry</h1>" in r.text


def test_cancel_by_get_says_how_to_cancel_not_no_such_job(idle_settings):
    with TestClient(create_app(idle_settings)) as c:
        job_id = post(c).json()["id"]
        r = c.get(f"/jobs/{job_id}/cancel", headers={"accept": "text/html"})
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        assert "no such job" not in r.text and "use the Cancel button on the job&#39;s page" in r.text
        assert c.get(f"/api/jobs/{job_id}").json()["state"] == "queued"  # a GET changes nothing
        assert "no such job" in c.get("/jobs/aaaaaaaaaaaaaaaaaaaaaaaa/cancel").json()["error"]


@pytest.mark.parametrize("raw,shown", [
    ("café.jpg".encode("utf-8"), "café.jpg"),
    ("café.jpg".encode("latin-1"), "caf\ufffd.jpg"),
    ("日本の写真.jpg".encode("shift_jis"), None),
], ids=["utf8", "latin1", "shift-jis"])
def test_upload_names_that_are_not_utf8_are_marked_not_garbled(idle_settings, raw, shown):
    boundary = b"zzBOUNDARYzz"
    body = b""
    for name, filename, data, kind in ((b"content", raw, PNG, b"image/png"), (b"style", b"s.jpg", STYLE, b"image/jpeg")):
        body += (b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"" + name + b"\"; filename=\""
                 + filename + b"\"\r\nContent-Type: " + kind + b"\r\n\r\n" + data + b"\r\n")
    body += b"--" + boundary + b"--\r\n"
    with TestClient(create_app(idle_settings)) as c:
        r = c.post("/api/jobs", content=body, headers={"content-type": "multipart/form-data; boundary=zzBOUNDARYzz"})
        assert r.status_code == 201, r.text
        label = r.json()["content"]
    if shown is not None:
        assert label == shown
    else:  # Shift-JIS: no Latin-1 letters made up from its bytes, the unreadable parts marked
        assert "\ufffd" in label and label.endswith(".jpg")
        assert not any("\u00c0" <= ch <= "\u00ff" for ch in label), label


def test_the_form_speaks_the_pages_language(idle_settings):
    with TestClient(create_app(idle_settings)) as c:
        page = c.get("/").text
    texts = [f.help for f in form_fields(idle_settings)] + [t for f in form_fields(idle_settings) for _, t in f.choices]
    for words in ("flag", "--", "beta", "alpha"):
        assert not any(words in t for t in texts), words
    assert "explicit flags" not in page and "beta:" not in page


# --- 9. the job page's ETA across scales --------------------------------------------

def test_the_job_page_eta_counts_pixels_across_scales():
    """At step 110 of 138 (110 at 256x205, then 28 at 512x410), 11 s in: about 11 s left, not 2.8 s."""
    from restyle.events import Iterate, StageStart
    from restyle.web.worker import JobProgress

    now = {"t": 100.0}
    tracker = JobProgress([(256 * 205, 110), (512 * 410, 28)], clock=lambda: now["t"])
    tracker.update(StageStart(0, 2, 256, 205, 110))
    for step in range(1, 111):
        now["t"] += 0.1
        event = Iterate(0, 2, 256, 205, step, 110, step, 138, 1.0, {}, elapsed=3.0 + 0.1 * step)  # 3 s of set-up
        tracker.update(event)
    assert event.eta == pytest.approx(28 * 14.0 / 110, rel=1e-6)  # the old estimate: ~3.6 s, far too hopeful
    assert tracker.row["eta"] == pytest.approx(11.2, abs=0.2)
    assert (tracker.row["scale"], tracker.row["scales"], tracker.row["width"]) == (1, 2, 256)
    tracker.update(StageStart(1, 2, 512, 410, 28))
    now["t"] += 0.4
    tracker.update(Iterate(1, 2, 512, 410, 1, 28, 111, 138, 1.0, {}, elapsed=14.4))
    assert (tracker.row["scale"], tracker.row["width"], tracker.row["height"]) == (2, 512, 410)
    assert tracker.row["eta"] == pytest.approx(10.8, abs=0.3)


# === issue 27 ======================================================================


def finished_job(s, task, files, state="done", **kw):
    """A job row and its files as a worker would leave them (no worker runs)."""
    from restyle.web.jobs import new_id

    store = JobStore(s.db_path, s.jobs_dir)
    job_id = new_id()
    store.folder(job_id).mkdir(parents=True)
    for name, data in files.items():
        (store.folder(job_id) / name).write_bytes(data)
    store.add(job_id, kw.pop("params", {}), kw.pop("content_file", ""), kw.pop("style_file", ""), "in", "style",
              task=task, **kw)
    store.finish(job_id, state)
    return store.get(job_id)


# --- 15. HEAD and Range on a job's files ----------------------------------------------

def test_files_answer_head_and_ignore_a_range_they_cannot_use(idle_settings):
    clip = bytes(range(256)) * 40  # what the bytes are does not matter to HTTP
    with TestClient(create_app(idle_settings)) as c:
        video = finished_job(idle_settings, "video", {"result.mp4": clip, "poster.jpg": PNG, "clip.mp4": clip},
                             content_file="clip.mp4")
        url = f"/jobs/{video.id}/result.mp4"
        r = c.head(url)
        assert r.status_code == 200 and r.content == b""
        assert r.headers["content-length"] == str(len(clip)) and r.headers["content-type"] == "video/mp4"
        assert r.headers["accept-ranges"] == "bytes"
        for bad in ("abc", "bytes=10-5", "bytes=x-y", "lines=0-9", "bytes="):
            r = c.get(url, headers={"range": bad})
            assert (r.status_code, r.content) == (200, clip), bad
        r = c.get(url, headers={"range": "bytes=10-19"})
        assert (r.status_code, r.content) == (206, clip[10:20])
        assert c.get(url, headers={"range": f"bytes={len(clip) + 5}-"}).status_code == 416  # past the end
        for path in ("poster.jpg", "content", "report.json"):
            got = c.head(f"/jobs/{video.id}/{path}")
            assert got.status_code in (200, 404) and got.status_code != 405, path
        assert c.head(f"/jobs/{video.id}").status_code == 200 and c.head("/").status_code == 200
        assert c.head(f"/api/jobs/{video.id}/events").status_code == 405  # a stream is GET only


# --- 14. trainings per browser, per address and on the whole server ------------------------

def train_post(client, steps="250"):
    return client.post("/api/train", files={"style": ("painting.jpg", STYLE, "image/jpeg")}, data={"steps": steps})


def test_trainings_are_limited_per_address_and_server_wide_not_only_per_cookie(tmp_path, tiny_weights):
    photos = tmp_path / "photos"
    photos.mkdir()
    s = web_settings(tmp_path / "data", tiny_weights, start_workers=False, photos_dir=photos,
                     max_training_per_address=2, max_trainings=3)
    with TestClient(create_app(s)) as c:
        def stranger(host="testclient"):  # a new client without the owner cookie, from `host`
            return TestClient(c.app, client=(host, 50000))

        assert [train_post(stranger()).status_code for _ in range(3)] == [201, 201, 429]
        r = train_post(stranger())
        assert "for your network address" in r.json()["error"]
        assert train_post(stranger("10.0.0.2")).status_code == 201  # another address: its own share
        r = train_post(stranger("10.0.0.3"))  # the server's cap: 3 queued or running trainings in all
        assert r.status_code == 503 and r.headers["retry-after"] == "60" and "already training 3" in r.json()["error"]
        page = stranger("10.0.0.3").post("/train", files={"style": ("p.jpg", STYLE, "image/jpeg")},
                                         data={"steps": "250"}, headers={"accept": "text/html"})
        assert page.status_code == 503 and "<form" in page.text and "already training 3" in page.text
        assert post(stranger("10.0.0.3")).status_code == 201  # painting is not training: not capped by these
        assert len(list(s.jobs_dir.iterdir())) == 4  # the refused uploads left no folder behind


def test_caps_are_checked_in_the_transaction_that_queues(tmp_path):
    """Two requests at once cannot both take the last place: the count and the insert are one transaction."""
    from restyle.web.jobs import Cap, CapReached

    store = JobStore(tmp_path / "db.sqlite", tmp_path / "jobs")
    caps = (Cap(1, "train", "client"),)
    store.add("a" * 22, {}, "", "s.png", "", "s", task="train", owner="o1", client="addr", caps=caps)
    with pytest.raises(CapReached) as e:
        store.add("b" * 22, {}, "", "s.png", "", "s", task="train", owner="o2", client="addr", caps=caps)
    assert e.value.cap.by == "client" and store.get("b" * 22) is None
    store.add("c" * 22, {}, "", "s.png", "", "s", task="train", owner="o2", client="other", caps=caps)
    store.request_cancel("a" * 22)  # a cancelled one no longer counts
    store.add("d" * 22, {}, "", "s.png", "", "s", task="train", owner="o3", client="addr", caps=caps)


# --- 16. a training cancelled before its first step: no model, so nothing to share or preview --------

@pytest.fixture
def train_settings(tmp_path, tiny_weights):
    photos = tmp_path / "photos"
    photos.mkdir()
    return web_settings(tmp_path / "data", tiny_weights, start_workers=False, photos_dir=photos)


def test_a_training_cancelled_before_its_first_step_offers_no_share_and_no_preview(train_settings):
    with TestClient(create_app(train_settings)) as c:
        job_id = train_post(c).json()["id"]
        page = c.get(f"/jobs/{job_id}").text
        assert "Share this model" in page and 'class="canvas"' in page  # while it may still make one
        assert c.post(f"/api/jobs/{job_id}/cancel").json()["state"] == "cancelled"
        page = c.get(f"/jobs/{job_id}").text
        assert "Share this model" not in page and 'class="canvas"' not in page and "Preview grid" not in page
        assert "Use this model" not in page
        r = c.post(f"/api/jobs/{job_id}/share", data={"shared": "1"})
        assert r.status_code == 409 and "cancelled before its first step" in r.json()["error"]
        r = c.post(f"/jobs/{job_id}/share", data={"shared": "1"}, headers={"accept": "text/html"})
        assert r.status_code == 409 and "no model to share" in r.text
        r = c.post("/api/apply", files={"media": ("p.png", PNG, "image/png")}, data={"model": job_id})
        assert r.status_code == 409 and "no model to use" in r.json()["error"]


# --- 17. progress and wording -------------------------------------------------------

def test_who_may_use_a_cancelled_trainings_model_is_said_to_each_visitor(train_settings):
    s = train_settings
    with TestClient(create_app(s)) as c:
        job_id = train_post(c).json()["id"]
        store = JobStore(s.db_path, s.jobs_dir)
        store.claim(0)
        store.set_progress(job_id, {"step": 30, "steps": 250, "unit": "step"})
        (store.folder(job_id) / "model.ckpt.pt").write_bytes(b"a checkpoint")
        store.finish(job_id, "cancelled", error="cancelled at step 30 of 250; the model as it was then is kept")
        mine = c.get(f"/jobs/{job_id}").text
        assert "You can use it below." in mine and "Use this model" in mine
        theirs = TestClient(c.app).get(f"/jobs/{job_id}").text
        assert "can be used" not in theirs and "You can use it" not in theirs and "Use this model" not in theirs
        assert "Only the browser that trained it may use it, unless it shares it." in theirs
        c.post(f"/api/jobs/{job_id}/share", data={"shared": "1"})
        assert "You can use it below." in TestClient(c.app).get(f"/jobs/{job_id}").text


def test_a_clips_frame_count_is_its_frames_not_its_longest_streams_duration(tmp_path):
    """A Matroska clip whose audio outlasts its frames: 30 frames were announced as 31 (web: 'frame 12 / 31')."""
    pytest.importorskip("av")
    pytest.importorskip("cv2")
    from videoutil import make_clip, pan_frames

    from restyle.video import FrameDone, NetworkFrames, VideoConfig, VideoStart, stylize_video
    from restyle.video.io import count_frames, probe

    clip = make_clip(tmp_path / "c.mkv", frames=pan_frames(64, 48, 30, 1), fps=30)
    info = probe(clip)
    assert info.frames == 30 and count_frames(info) == 30
    assert count_frames(info, 0.0, 10.0) == 30  # the web's cap (10 s) on a shorter clip
    events = []
    stylize_video(clip, tmp_path / "o.mp4", NetworkFrames(lambda x: x, 0.0), VideoConfig(size=48, duration=10.0),
                  callback=events.append)
    assert [e.frames for e in events if isinstance(e, VideoStart)] == [30]
    assert {e.frames for e in events if isinstance(e, FrameDone)} == {30}


def test_a_tiny_clip_is_too_small_not_too_thin(tmp_path, idle_settings):
    pytest.importorskip("av")
    from videoutil import make_clip, pan_frames

    tiny = make_clip(tmp_path / "tiny.mp4", frames=pan_frames(16, 16, 3), audio=False).read_bytes()
    with TestClient(create_app(idle_settings)) as c:
        r = c.post("/api/apply", files={"media": ("tiny.mp4", tiny, "video/mp4")}, data={"model": "starry_night"})
    assert r.status_code == 400 and "16x16 is too small" in r.json()["error"] and "thin" not in r.json()["error"]
    assert "never enlarged" in r.json()["error"]
    from restyle.video.io import even_size

    with pytest.raises(InputError, match="too small.*never enlarged") as e:
        even_size(16, 16, 512)
    assert "raise --size" not in str(e.value)


def test_training_time_left_is_paced_after_the_first_steps(tmp_path, tiny_weights):
    """Step 1 (warm-up, the first preview grid) no longer sets the pace: 25 min were announced for 3.5."""
    from restyle.events import TIMED_STEPS, TrainStep

    assert TrainStep(1, 2000, 1.0, {}, elapsed=6.0, paced_from=(1, 6.0)).eta is None  # estimating
    later = TrainStep(1 + TIMED_STEPS, 2000, 1.0, {}, elapsed=6.3, paced_from=(1, 6.0))
    assert later.eta == pytest.approx(0.1 * (2000 - 1 - TIMED_STEPS))  # not 6.3 / 4 * 1996 (~52 min)

    from restyle.networks.style_training import train

    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(3):
        (photos / f"p{k}.png").write_bytes(image_bytes("PNG", (48 + 8 * k, 40)))
    steps = []
    train(style_file(tmp_path), photos, tmp_path / "m.pt", style_train_config(steps=5, holdout=1), weights=tiny_weights,
          callback=lambda e: steps.append(e) if isinstance(e, TrainStep) else None)
    assert [e.paced_from[0] for e in steps] == [1] * 5 and steps[0].paced_from[1] == steps[0].elapsed
    assert [e.eta is None for e in steps] == [True, True, True, False, False]


def style_file(tmp_path):
    path = tmp_path / "style.jpg"
    path.write_bytes(STYLE)
    return path
