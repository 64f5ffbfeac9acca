"""The web app's HTTP API and pages, through an HTTP test client, on the tiny network.

Bad input gets a readable message and a 4xx; results are reachable only by
unguessable ids; jobs really run in the worker process and stream progress.
"""

from __future__ import annotations

import io
import json
import os
import signal
import time
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from restyle.config import PRESERVE_COLORS, PRESET_NAMES, PRESETS, StylizeConfig
from restyle.errors import InputError
from restyle.web.app import create_app
from restyle.web.form import form_fields, make_config, params_from_form
from restyle.web.jobs import JobStore
from webutil import PNG, STYLE, image_bytes, post, wait_done, wait_for, web_settings



@pytest.fixture
def api(idle_settings):
    """The app without workers: jobs are accepted and wait (fast, for input checks)."""
    with TestClient(create_app(idle_settings)) as c:
        yield c


@pytest.fixture
def live(settings):
    """The app with its worker process: jobs really run."""
    with TestClient(create_app(settings)) as c:
        yield c


# --- bad input ---------------------------------------------------------------

TRUNCATED = image_bytes("JPEG", (200, 160))[:600]
BAD_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


def big_pixels() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (1200, 1000), "white").save(buf, "PNG")  # 1.2 MP, a few kB
    return buf.getvalue()


@pytest.mark.parametrize("content,status,words", [
    (b"", 400, "empty"),
    (b"hello, I am a text file pretending to be a photo\n" * 3, 415, "not a JPEG, PNG"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", 415, "content was checked, not its name"),
    (TRUNCATED, 400, "corrupt or truncated"),
    (BAD_PNG, 400, "cannot be read as an image"),
], ids=["empty", "text", "svg", "truncated-jpeg", "broken-png"])
def test_bad_uploads_are_refused_with_a_message(api, content, status, words):
    r = post(api, content, names=("holiday.jpg", "style.jpg"))
    assert r.status_code == status, r.text
    assert words in r.json()["error"] and r.json()["error"].startswith("content image")
    assert api.get("/api/jobs").json()["jobs"] == []


def test_decoded_pixel_cap(tmp_path, tiny_weights):
    s = web_settings(tmp_path / "d", tiny_weights, max_pixels=1_000_000, start_workers=False)
    with TestClient(create_app(s)) as c:
        r = post(c, style=big_pixels())
        assert r.status_code == 413
        assert "style image: 1200x1000" in r.json()["error"] and "limit of 1 million" in r.json()["error"]


def test_upload_size_cap(tmp_path, tiny_weights):
    s = web_settings(tmp_path / "d", tiny_weights, max_upload_bytes=len(PNG) - 1, start_workers=False)
    with TestClient(create_app(s)) as c:
        r = post(c, style=PNG)
        assert r.status_code == 413 and "larger than the limit" in r.json()["error"]
        # A body far over the cap is refused from its Content-Length, before it is read.
        r = c.post("/api/jobs", content=b"x" * (3 * len(PNG) + 70_000),
                   headers={"content-type": "multipart/form-data; boundary=zz"})
        assert r.status_code == 413 and "too large" in r.json()["error"]
        # Without a Content-Length (chunked), reading stops at the limit.
        chunks = iter([b"--zz\r\n", b"x" * (3 * len(PNG) + 70_000)])
        r = c.post("/api/jobs", content=chunks, headers={"content-type": "multipart/form-data; boundary=zz"})
        assert r.status_code == 413 and "too large" in r.json()["error"]
        assert c.get("/api/jobs").json()["jobs"] == []


@pytest.mark.parametrize("data,words", [
    ({"strength": "lots"}, "style strength 'lots' is not a number"),
    ({"strength": "9"}, "out of range"),
    ({"strength": "nan"}, "not a finite number"),
    ({"size": "10"}, "size 10 is out of range"),
    ({"size": "5000"}, "over this server's limit of 256 px"),
    ({"size": "64.5"}, "whole number"),
])
def test_bad_settings_are_refused_by_the_config_rules(api, data, words):
    r = post(api, **data)
    assert r.status_code == 400 and words in r.json()["error"], r.text


def test_missing_images_and_unknown_examples(api):
    r = post(api, content=None)
    assert r.status_code == 400 and r.json()["error"] == "content image is missing: upload a photo"
    r = post(api, style=None)
    assert r.status_code == 400 and "style image is missing: upload one or pick one of the examples" in r.json()["error"]
    r = post(api, style=None, style_example="../../etc/passwd")
    assert r.status_code == 400 and "no example called" in r.json()["error"]


def test_file_names_are_never_paths_and_type_is_sniffed(api, settings, tmp_path):
    # A PNG sent as "../../evil.txt" with a text media type: accepted as a PNG, stored under our name.
    r = api.post("/api/jobs", files={"content": ("../../evil.txt", PNG, "text/plain"),
                                     "style": ("..\\..\\x.exe", STYLE, "application/octet-stream")})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["content"] == "evil.txt" and job["style"] == "x.exe"
    folder = settings.jobs_dir / job["id"]
    assert sorted(p.name for p in folder.iterdir()) == ["content.png", "style.jpg"]
    assert not any(p.name in ("evil.txt", "x.exe") for p in tmp_path.rglob("*"))
    assert api.get(f"/jobs/{job['id']}/content").headers["content-type"] == "image/png"
    r = api.get(f"/jobs/{job['id']}/style")
    assert r.headers["content-type"] == "image/jpeg" and r.content == STYLE


def test_ids_are_unguessable_and_unknown_ids_are_404(api):
    ids = [post(api).json()["id"] for _ in range(3)]
    assert len(set(ids)) == 3 and all(len(i) >= 22 for i in ids)
    for path in ("/api/jobs/1", "/jobs/2", "/jobs/aaaaaaaaaaaaaaaaaaaaaa/result.png", "/api/jobs/x/events",
                 f"/jobs/{ids[0]}/result.png", f"/jobs/{ids[0]}/preview.jpg", f"/jobs/{ids[0]}/etc"):
        assert api.get(path).status_code == 404, path
    assert "no such job" in api.get("/jobs/2", headers={"accept": "text/html"}).text


def test_history_is_per_browser(api, settings):
    mine = post(api).json()["id"]
    assert [j["id"] for j in api.get("/api/jobs").json()["jobs"]] == [mine]
    other = TestClient(api.app)  # a stranger's browser on the same server: no cookie
    assert other.get("/api/jobs").json()["jobs"] == []  # no cookie, no list
    assert other.get(f"/api/jobs/{mine}").status_code == 200  # but the link works for anyone who has it


def test_a_full_queue_answers_busy(tmp_path, tiny_weights):
    s = web_settings(tmp_path / "d", tiny_weights, max_queue=2, start_workers=False)
    with TestClient(create_app(s)) as c:
        assert [post(c).status_code for _ in range(2)] == [201, 201]
        r = post(c)
        assert r.status_code == 503 and r.headers["retry-after"] == "60"
        assert r.json()["error"].startswith("the server is busy: 2 jobs are queued or running")
        r = post(c, url="/jobs")
        assert r.status_code == 503 and "the server is busy" in r.text
        assert len(os.listdir(s.jobs_dir)) == 2  # the refused job left no files


def test_html_form_errors_show_on_the_page(api):
    r = post(api, b"not an image", style=None, style_example="starry_night", strength="1.5", url="/jobs",
             follow_redirects=False)
    assert r.status_code == 415
    assert 'role="alert">content image: this is not a JPEG, PNG, WebP, GIF, BMP or TIFF image' in r.text
    assert '<form method="post" action="/jobs"' in r.text  # the form is shown again, as it was
    assert 'value="starry_night" checked' in r.text and 'name="strength" min="-3.0" max="3.0" step="0.5" value="1.5"' in r.text
    r = post(api, url="/jobs", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/jobs/")
    page = api.get(r.headers["location"])
    assert page.status_code == 200 and "Waiting: 0 jobs ahead" in page.text and 'id="cancel"' in page.text
    assert "<th>style weight</th><td>100.0</td>" in page.text  # the settings it will run with


def test_token_guards_everything_but_static(tmp_path, tiny_weights):
    s = web_settings(tmp_path / "d", tiny_weights, token="s3cret", start_workers=False)
    with TestClient(create_app(s)) as c:
        assert c.get("/api/jobs").status_code == 401
        r = c.get("/", headers={"accept": "text/html"})
        assert r.status_code == 401 and "access token" in r.text
        assert c.get("/static/style.css").status_code == 200
        assert c.get("/api/jobs", headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/api/jobs", headers={"x-restyle-token": "wrong"}).status_code == 401
        assert c.get("/?token=s3cret").status_code == 200  # sets a cookie for the rest of the visit
        assert c.get("/api/jobs").status_code == 200


def test_cancel_a_queued_job(api):
    job = post(api).json()
    r = api.post(f"/api/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    r = api.post(f"/jobs/{job['id']}/cancel", follow_redirects=False)
    assert r.status_code == 303


# --- the form is built from StylizeConfig --------------------------------------

def test_form_offers_only_what_the_config_has(settings):
    names = [f.name for f in form_fields(settings)]
    assert names[:2] == ["strength", "size"]
    for optional in ("preserve_colors", "preset"):
        assert (optional in names) == (optional in StylizeConfig.__dataclass_fields__)
    params = params_from_form({"strength": "1", "size": "64", "preserve_colors": "luminance"}, settings)
    assert params["style_strength"] == 2 and params["size"] == 64 and "style_weight" not in params
    assert ("preserve_colors" in params) == ("preserve_colors" in StylizeConfig.__dataclass_fields__)


def test_form_offers_colour_and_preset_and_applies_the_preset(settings):
    fields_ = {f.name: f for f in form_fields(settings, StylizeConfig)}
    assert [v for v, _ in fields_["preserve_colors"].choices] == list(PRESERVE_COLORS)
    assert [v for v, _ in fields_["preset"].choices] == ["", *PRESET_NAMES]
    params = params_from_form({"preserve_colors": "histogram", "preset": "fast", "strength": "1"}, settings)
    cfg = make_config(params, settings)
    fast = StylizeConfig.from_preset("fast")
    assert cfg.preset == "fast" and cfg.preserve_colors == "histogram"
    # The preset's values are applied (not just its name recorded); the slider multiplies its style weight.
    assert cfg.style_weight == fast.style_weight and cfg.style_strength == 2
    assert cfg.style_weight_effective == pytest.approx(2 * fast.style_weight)
    for name, value in PRESETS["fast"].items():
        if name not in settings.overrides and name != "size":  # the form sets the size
            assert getattr(cfg, name) == value, name
    with pytest.raises(InputError, match="preset 'bold' is not one of"):
        params_from_form({"preset": "bold"}, settings)


def test_index_page_shows_the_form_and_examples(api):
    r = api.get("/")
    assert r.status_code == 200
    for text in ('name="content"', 'name="style"', 'name="strength"', 'type="range"', 'value="starry_night"',
                 '<option value="" selected>auto (64 px)</option>', '<option value="64" >64 px</option>'):
        assert text in r.text
    assert api.get("/examples/starry_night").headers["content-type"] == "image/jpeg"
    assert api.get("/examples/..%2Fpyproject").status_code == 404
    assert api.get("/static/job.js").status_code == 200
    assert api.get("/history").status_code == 200
    assert api.get("/api/form").json()["fields"][0]["name"] == "strength"


# --- jobs really run -------------------------------------------------------------

def test_job_runs_streams_progress_and_keeps_its_result(live, settings):
    r = post(live, strength="1", style=None, style_example="starry_night")
    assert r.status_code == 201
    job_id = r.json()["id"]
    events = []
    with live.stream("GET", f"/api/jobs/{job_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    assert events[-1][0] == "end" and events[-1][1]["state"] == "done"
    steps = [d["progress"]["step"] for k, d in events if d["progress"].get("step")]
    assert steps == sorted(steps) and steps[-1] == 6 and events[-1][1]["preview"] >= 1
    assert all(d["progress"]["steps"] == 6 for k, d in events if d["progress"].get("steps"))
    job = live.get(f"/api/jobs/{job_id}").json()
    assert job["state"] == "done" and job["params"] == {"style_strength": 2.0}
    r = live.get(f"/jobs/{job_id}/result.png?download=1")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    assert Image.open(io.BytesIO(r.content)).size == (64, 51)
    assert live.get(f"/jobs/{job_id}/preview.jpg").headers["content-type"] == "image/jpeg"
    report = live.get(f"/jobs/{job_id}/report.json").json()
    assert report["config"]["style_strength"] == 2.0 and report["iterations"] == 6
    page = live.get(f"/jobs/{job_id}").text
    assert "Download full size" in page and "style weight" in page and str(settings.data_dir) not in page


def test_cancel_a_running_job(tmp_path, tiny_weights):
    s = web_settings(tmp_path / "d", tiny_weights, overrides={"iterations": 100_000, "device": "cpu"})
    with TestClient(create_app(s)) as c:
        job_id = post(c).json()["id"]
        wait_for(lambda: c.get(f"/api/jobs/{job_id}").json()["progress"].get("step"), 30, "the job to start")
        c.post(f"/api/jobs/{job_id}/cancel")
        job = wait_done(c, job_id, 10)
        assert job["state"] == "cancelled" and job["progress"]["step"] < 100_000


def test_a_failing_job_says_why(tmp_path, tiny_weights):
    # The weights file went missing after the server started: the worker's RestyleError is shown.
    s = web_settings(tmp_path / "d", tmp_path / "gone.pth")
    with TestClient(create_app(s)) as c:
        job_id = post(c).json()["id"]
        job = wait_done(c, job_id)
    assert job["state"] == "failed" and "gone.pth" in job["error"] and "does not exist" in job["error"]
    assert str(s.data_dir) not in job["error"]


def test_a_dead_worker_is_replaced_and_its_job_runs_again(tmp_path, tiny_weights):
    s = web_settings(tmp_path / "d", tiny_weights, overrides={"iterations": 150, "device": "cpu"})
    with TestClient(create_app(s)) as c:
        job_id = post(c).json()["id"]
        wait_for(lambda: c.get(f"/api/jobs/{job_id}").json()["progress"].get("step"), 30, "the job to start")
        (pid,) = c.app.state.pool.pids()
        os.kill(pid, signal.SIGKILL)
        job = wait_done(c, job_id, 90)
        assert job["state"] == "done" and job["attempts"] == 2
        assert c.app.state.pool.pids() != [pid]


def test_gallery_is_rendered_in_the_background(tmp_path, tiny_weights):
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / "tubingen.jpg").write_bytes(image_bytes("JPEG", (80, 64)))
    (examples / "starry_night.jpg").write_bytes(STYLE)
    (examples / "the_scream.png").write_bytes(image_bytes("PNG", (64, 64), "starry_night.jpg"))
    s = web_settings(tmp_path / "d", tiny_weights, gallery=True, examples_dir=examples)
    with TestClient(create_app(s)) as c:
        t0 = time.monotonic()
        assert c.get("/").status_code == 200 and time.monotonic() - t0 < 5  # never blocks the page
        g = wait_for(lambda: (g := c.get("/api/gallery").json()) and all(j["state"] == "done" for j in g["results"]) and g,
                     60, "the gallery")
        assert [e["key"] for e in g["styles"]] == ["starry_night", "the_scream"]
        assert [(j["content"], j["style"]) for j in g["results"]] == [
            ("Neckarfront, Tübingen", "Van Gogh, The Starry Night"), ("Neckarfront, Tübingen", "Munch, The Scream")]
        for j in g["results"]:
            assert Image.open(io.BytesIO(c.get(j["result"]).content)).size == (64, 51)
        assert g["results"][0]["result"] in c.get("/").text
        assert c.get("/api/jobs").json()["jobs"] == []  # gallery jobs are not anyone's history
    with TestClient(create_app(s)) as c:  # rendered once: a restart queues nothing new
        assert all(j["state"] == "done" for j in c.get("/api/gallery").json()["results"])
        assert len(JobStore(s.db_path, s.jobs_dir).list(None)) == 0


def test_gallery_follows_the_examples_folder(tmp_path, tiny_weights):
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / "tubingen.jpg").write_bytes(image_bytes("JPEG", (80, 64)))
    for name in ("starry_night", "shipwreck"):
        (examples / f"{name}.jpg").write_bytes(STYLE)
    s = web_settings(tmp_path / "d", tiny_weights, gallery=True, examples_dir=examples, start_workers=False)
    with TestClient(create_app(s)) as c:
        assert [j["state"] for j in c.get("/api/gallery").json()["results"]] == ["queued", "queued"]
    (examples / "shipwreck.jpg").unlink()
    with TestClient(create_app(s)) as c:  # a style that is gone is not painted
        assert [j["style"] for j in c.get("/api/gallery").json()["results"]] == ["Van Gogh, The Starry Night"]
    store = JobStore(s.db_path, s.jobs_dir)
    with store._db() as db:
        states = dict(db.execute("SELECT gallery_key, state FROM jobs").fetchall())
    assert states == {"tubingenxstarry_night@64": "queued", "tubingenxshipwreck@64": "cancelled"}
    with TestClient(create_app(replace(s, gallery=False))) as c:
        assert "The gallery is turned off" in c.get("/").text
