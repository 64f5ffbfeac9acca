"""The web app's feed-forward models: train one for a painting, use it on a photo or a short clip.

On the tiny VGG and a tiny network (a few steps on 48 px photos), with clips
made with PyAV. Ownership: a model is used only by the browser that trained it
until its owner shares it; every bad input gets a 4xx and a message.
"""

from __future__ import annotations

import io
import shutil
import sqlite3
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from restyle.web.app import create_app
from restyle.web.jobs import DONE, JobStore
from tinynets import arbitrary_model_file
from videoutil import clip_stats, pan_frames
from webutil import (PNG, SLOW, STYLE, TRAIN_OVERRIDES, clip_bytes, image_bytes, model_settings, wait_done, wait_for,
                     web_settings, write_train_photos)



@pytest.fixture
def web_photos(tmp_path):
    """Four small photos to train on (webutil.write_train_photos)."""
    return write_train_photos(tmp_path / "photos")


# Generous: a loaded machine (CI beside other work) runs a tiny step in seconds, not milliseconds.
def train(client, steps="4", style=STYLE, url="/api/train", headers=None, **data):
    files = {"style": ("painting.jpg", style, "image/jpeg")} if style is not None else {}
    return client.post(url, files=files, data={"steps": steps, **data}, headers=headers)


def apply(client, model, media=PNG, name="photo.png", url="/api/apply", headers=None, **data):
    files = {"media": (name, media, "application/octet-stream")} if media is not None else {}
    return client.post(url, files=files, data={"model": model, **data}, headers=headers)


# --- training, then using the model -------------------------------------------


def test_train_a_model_then_use_it_on_a_photo_a_clip_and_as_instant_preview(tmp_path, tiny_weights, web_photos):
    s = model_settings(tmp_path, tiny_weights, web_photos)
    with TestClient(create_app(s)) as c:
        r = train(c)
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["task"] == "train" and job["params"]["steps"] == 4 and job["result"] is None
        job = wait_done(c, job["id"], SLOW)
        assert job["state"] == "done", job["error"]
        model_id = job["id"]
        assert job["progress"]["step"] == 4 and job["progress"]["steps"] == 4 and job["progress"]["unit"] == "step"
        assert job["progress"]["photos"] == 2 and job["preview"] >= 2  # step 0 and later grids
        grid = Image.open(io.BytesIO(c.get(f"/jobs/{model_id}/preview.jpg").content))
        assert grid.size == (2 * 64, 2 * 64)  # two held-aside photos at twice the crop, photos above pictures
        report = c.get(f"/jobs/{model_id}/report.json").json()
        assert report["training"]["steps_done"] == 4 and "photos_dir" not in report["training"]
        assert report["training"]["config"]["lr_decay"] == "cosine"  # as `train --from arbitrary`
        page = c.get(f"/jobs/{model_id}").text
        assert "Use this model" in page and "Share this model" in page and str(s.data_dir) not in page
        assert model_id in c.get("/models").text  # listed among the visitor's models

        # One pass on a photo.
        r = apply(c, model_id, size="64")
        assert r.status_code == 201 and r.json()["task"] == "stylize", r.text
        done = wait_done(c, r.json()["id"], SLOW)
        assert done["state"] == "done", done["error"]
        result = Image.open(io.BytesIO(c.get(done["result"]).content))
        assert result.size == (64, 51)
        assert c.get(f"/jobs/{done['id']}/style").content == STYLE  # the painting the model learnt, shown beside

        # A short clip through the same model.
        r = apply(c, model_id, clip_bytes(tmp_path, audio=False), "clip.mp4")
        assert r.status_code == 201 and r.json()["task"] == "video", r.text
        done = wait_done(c, r.json()["id"], SLOW)
        assert done["state"] == "done", done["error"]
        assert done["result"].endswith("/result.mp4") and done["progress"]["step"] == 10

        # The model knows its painting: a paint job with it shows the network's picture at once.
        r = c.post("/api/jobs", files={"content": ("p.png", PNG, "image/png"), "style": ("s.jpg", STYLE, "image/jpeg")})
        done = wait_done(c, r.json()["id"], SLOW)
        assert done["state"] == "done" and done["progress"]["instant"]["model"] == "model"


def test_a_model_is_its_owners_until_shared(tmp_path, tiny_weights, web_photos):
    s = model_settings(tmp_path, tiny_weights, web_photos)
    with TestClient(create_app(s)) as c:
        model_id = train(c).json()["id"]
        assert wait_done(c, model_id, SLOW)["state"] == "done"
        other = TestClient(c.app)  # another browser: no owner cookie (the app is already started)
        r = apply(other, model_id)
        assert r.status_code == 403 and "belongs to the visitor who trained it" in r.json()["error"]
        assert "Use this model" not in other.get(f"/jobs/{model_id}").text  # the link shows it, nothing more
        assert other.post(f"/api/jobs/{model_id}/share", data={"shared": "1"}).status_code == 403
        assert other.post(f"/jobs/{model_id}/share", data={"shared": "1"},
                          headers={"accept": "text/html"}).status_code == 403
        assert c.post(f"/api/jobs/{model_id}/share", data={"shared": "yes"}).status_code == 400
        r = c.post(f"/api/jobs/{model_id}/share", data={"shared": "1"})
        assert r.status_code == 200 and r.json()["shared"] is True
        assert "Use this model" in other.get(f"/jobs/{model_id}").text
        r = apply(other, model_id)
        assert r.status_code == 201
        assert wait_done(c, r.json()["id"], SLOW)["state"] == "done"
        assert c.post(f"/api/jobs/{model_id}/share", data={"shared": "0"}).json()["shared"] is False
        assert apply(other, model_id).status_code == 403


@pytest.mark.slow
def test_a_training_starts_from_the_any_painting_network_when_it_fits(tmp_path, tiny_weights, web_photos):
    """Issue 23: a visitor's training starts where the any-painting network paints their painting."""
    from restyle.networks.feedforward import load_model

    arb = arbitrary_model_file(tmp_path / "arb.pt")  # widths 4, 8 and one block, as TRAIN_OVERRIDES; reads the tiny VGG
    cases = ((dict(any_painting_model=str(arb)), "the any-painting network"),
             (dict(any_painting_model="arbitrary"), "from scratch"),  # the bundled one reads the real VGG-19
             (dict(any_painting_model=str(arb), train_from_any_painting=False), None))
    for k, (kw, start) in enumerate(cases):
        s = model_settings(tmp_path / f"server{k}", tiny_weights, web_photos, **kw)
        with TestClient(create_app(s)) as c:
            job = wait_done(c, train(c).json()["id"], SLOW)
            assert job["state"] == "done", job["error"]
            assert job["progress"].get("start", "")[: len(start or "")] == (start or "") and \
                ("start" in job["progress"]) == (start is not None), job["progress"]
            report = c.get(f"/jobs/{job['id']}/report.json").json()
            if start == "the any-painting network":
                assert report["training"]["started_from"]["sha256"] == load_model(arb, weights=tiny_weights).sha256
                assert "started from</th><td>the any-painting network" in c.get(f"/jobs/{job['id']}").text
            else:
                assert "started_from" not in report["training"]


def test_a_stopped_server_resumes_a_training_and_a_cancel_keeps_its_checkpoint(tmp_path, tiny_weights, web_photos):
    # A checkpoint every step: even a worker killed by a slow stop leaves one.
    s = model_settings(tmp_path, tiny_weights, web_photos, train_overrides={**TRAIN_OVERRIDES, "checkpoint_every": 1})
    with TestClient(create_app(s)) as c:
        model_id = train(c, steps="3000").json()["id"]
        wait_for(lambda: (c.get(f"/api/jobs/{model_id}").json()["progress"].get("step") or 0) >= 2, SLOW,
                 "a few training steps")
        owner = dict(c.cookies)
    # The server stops mid-training (the worker saves a checkpoint); the next one resumes from it.
    with TestClient(create_app(s), cookies=owner) as c:
        resumed = wait_for(lambda: c.get(f"/api/jobs/{model_id}").json()["progress"].get("resumed_from"), SLOW,
                           "the training to resume after the restart")
        assert resumed >= 2
        r = apply(c, model_id)
        assert r.status_code == 409 and "running" in r.json()["error"]  # not a model yet
        assert TestClient(c.app).post(f"/api/jobs/{model_id}/cancel").status_code == 403
        assert c.post(f"/api/jobs/{model_id}/cancel").status_code == 200
        job = wait_done(c, model_id, SLOW)
        assert job["state"] == "cancelled" and "cancelled at step" in job["error"]
        assert (s.jobs_dir / model_id / "model.ckpt.pt").is_file() and not (s.jobs_dir / model_id / "model.pt").exists()
        stranger = TestClient(c.app).get(f"/jobs/{model_id}").text  # issue 27: no promise a stranger cannot use
        assert "can be used" not in stranger and "Only the browser that trained it may use it" in stranger
        assert "You can use it below." in c.get(f"/jobs/{model_id}").text
        r = apply(c, model_id)
        assert r.status_code == 201, r.text
        assert wait_done(c, r.json()["id"], SLOW)["state"] == "done"


@pytest.mark.slow
def test_a_training_takes_turns_with_paint_jobs_and_resumes(tmp_path, tiny_weights, web_photos):
    # A short slice: the training gives the worker to the paint job within a second, then goes on.
    s = model_settings(tmp_path, tiny_weights, web_photos, train_slice_s=0.5)
    with TestClient(create_app(s)) as c:
        train_id = train(c, steps="3000").json()["id"]
        wait_for(lambda: (c.get(f"/api/jobs/{train_id}").json()["progress"].get("step") or 0) >= 1, SLOW,
                 "the training to start")
        paint = c.post("/api/jobs", files={"content": ("p.png", PNG, "image/png"),
                                           "style": ("s.jpg", STYLE, "image/jpeg")}).json()
        done = wait_done(c, paint["id"], SLOW)
        training = c.get(f"/api/jobs/{train_id}").json()
        assert done["state"] == "done" and training["state"] in ("queued", "running")
        assert training["seq"] > done["seq"]  # it went to the back of the queue
        # Its next turn resumes from the checkpoint it saved, not from step 0.
        resumed = wait_for(lambda: c.get(f"/api/jobs/{train_id}").json()["progress"].get("resumed_from"), SLOW,
                           "the training to resume")
        assert resumed >= 1
        c.post(f"/api/jobs/{train_id}/cancel")
        assert wait_done(c, train_id, SLOW)["state"] == "cancelled"


# --- clips ------------------------------------------------------------------------------


def test_a_clip_through_the_bundled_model_plays_on_the_page(tmp_path, tiny_weights, web_photos):
    s = model_settings(tmp_path, tiny_weights, web_photos)
    with TestClient(create_app(s)) as c:
        r = apply(c, "starry_night", clip_bytes(tmp_path), "holiday.mp4")
        assert r.status_code == 201, r.text
        job = wait_done(c, r.json()["id"], SLOW)
        assert job["state"] == "done", job["error"]
        assert job["progress"]["unit"] == "frame" and job["progress"]["steps"] == 10
        r = c.get(job["result"])
        assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
        assert r.headers["accept-ranges"] == "bytes"
        out = tmp_path / "got.mp4"
        out.write_bytes(r.content)
        frames, fps, seconds, audio, _ = clip_stats(out)
        assert frames == 10 and fps == 10 and audio == "aac"  # the sound kept
        import av

        with av.open(str(out)) as box:
            assert box.streams.video[0].codec_context.name == "h264"
            assert box.streams.video[0].codec_context.pix_fmt == "yuv420p"  # what browsers play
        part = c.get(job["result"], headers={"range": "bytes=0-99"})
        assert part.status_code == 206 and len(part.content) == 100 and part.content == r.content[:100]
        assert part.headers["content-range"] == f"bytes 0-99/{len(r.content)}"
        page = c.get(f"/jobs/{job['id']}").text
        assert '<video id="clip"' in page and f'src="/jobs/{job["id"]}/result.mp4"' in page
        assert c.get(f"/jobs/{job['id']}/poster.jpg").headers["content-type"] == "image/jpeg"
        assert "holiday.mp4" in page


# --- bad input: 4xx and a message, never a 500 ------------------------------------------


@pytest.fixture
def idle(tmp_path, tiny_weights, web_photos):
    """No workers: jobs wait, so every check runs at once."""
    s = model_settings(tmp_path, tiny_weights, web_photos, start_workers=False, max_video_bytes=200_000)
    with TestClient(create_app(s)) as c:
        yield c


def fake_model(client, owner_client=None) -> str:
    """A finished training (its model: the bundled network's file), owned by `owner_client`'s browser."""
    c = owner_client or client
    job_id = train(c).json()["id"]
    store: JobStore = client.app.state.store
    from restyle.models.modelfile import bundled_models

    shutil.copyfile(bundled_models()["starry_night"], store.folder(job_id) / "model.pt")
    store.finish(job_id, DONE, report={})
    return job_id


def test_training_bad_input(idle, tmp_path):
    r = train(idle, steps="5")
    assert r.status_code == 400 and "steps '5' is not one of this server's choices (4, 3000)" in r.json()["error"]
    assert train(idle, steps="lots").status_code == 400
    assert train(idle, strength="9").status_code == 400
    r = train(idle, style=None)
    assert r.status_code == 400 and "painting is missing" in r.json()["error"]
    r = train(idle, style=b"GIF89a not really")
    assert r.status_code == 400
    r = train(idle, style=b"hello, world")
    assert r.status_code == 415
    thin = image_bytes("PNG", (400, 20))
    r = train(idle, style=thin)
    assert r.status_code == 400 and "too long and thin" in r.json()["error"]
    assert train(idle).status_code == 201
    r = train(idle)  # one training at a time per visitor
    assert r.status_code == 429 and "already have 1 model(s) training" in r.json()["error"]
    r = train(idle, url="/train", headers={"accept": "text/html"})
    assert r.status_code == 429 and "<form" in r.text and "already have" in r.text  # the page, with the message


def test_training_is_off_without_photos(tmp_path, tiny_weights):
    s = web_settings(tmp_path / "data", tiny_weights, photos_dir=None, start_workers=False)
    with TestClient(create_app(s)) as c:
        r = train(c)
        assert r.status_code == 503 and "training is off on this server" in r.json()["error"]
        page = c.get("/models").text
        assert 'id="training-off"' in page and 'id="train-form"' not in page
        assert apply(c, "starry_night").status_code == 201  # the bundled models still work


def test_using_a_model_bad_input(idle, tmp_path):
    r = apply(idle, "no_such_model")
    assert r.status_code == 404 and "there is no model 'no_such_model'" in r.json()["error"]
    assert apply(idle, "x" * 500).status_code == 404
    r = apply(idle, "")
    assert r.status_code == 400 and "choose a model" in r.json()["error"]
    paint = idle.post("/api/jobs", files={"content": ("p.png", PNG, "image/png"),
                                          "style": ("s.jpg", STYLE, "image/jpeg")}).json()["id"]
    assert apply(idle, paint).status_code == 404  # a paint job is no model
    r = apply(idle, "starry_night", media=None)
    assert r.status_code == 400 and "photo or clip is missing" in r.json()["error"]
    r = apply(idle, "starry_night", b"just some text", "notes.mp4")
    assert r.status_code == 415 and "neither" in r.json()["error"]
    r = apply(idle, "starry_night", b"\x00\x00\x00\x18ftypisom" + b"\x00" * 200, "broken.mp4")
    assert r.status_code == 415 and "not a video that can be read" in r.json()["error"]
    r = apply(idle, "starry_night", size="4096")
    assert r.status_code == 400 and "size '4096' is not one of 64" in r.json()["error"]
    r = apply(idle, "starry_night", image_bytes("PNG", (640, 8)))
    assert r.status_code == 400 and "too long and thin" in r.json()["error"]

    owner = TestClient(idle.app)  # another browser trains a model
    theirs = fake_model(idle, owner)
    r = apply(idle, theirs)
    assert r.status_code == 403 and "belongs to the visitor who trained it" in r.json()["error"]
    r = apply(idle, theirs, url="/apply", headers={"accept": "text/html"})
    assert r.status_code == 403 and "belongs to the visitor" in r.text
    assert apply(owner, theirs).status_code == 201
    r = idle.post(f"/api/jobs/{paint}/share", data={"shared": "1"})
    assert r.status_code == 400 and "only a trained model" in r.json()["error"]
    assert idle.post("/api/jobs/nosuchjob0000000000/share").status_code == 404


def test_clip_limits(idle, tmp_path):
    # 12 frames at 1 frame a second: 12 s, over the 10 s limit.
    long_clip = clip_bytes(tmp_path, "long.mp4", frames=pan_frames(frames=12), fps=1, audio=False)
    r = apply(idle, "starry_night", long_clip, "long.mp4")
    assert r.status_code == 400 and "12.0 s long" in r.json()["error"] and "at most 10 s" in r.json()["error"]
    # Too many frames for its length: 2 s at 200 frames a second.
    fast = clip_bytes(tmp_path, "fast.mp4", frames=pan_frames(frames=400), fps=200, audio=False)
    r = apply(idle, "starry_night", fast, "fast.mp4")
    assert r.status_code in (400, 413) and "at most 300" in r.json()["error"], r.text
    thin = clip_bytes(tmp_path, "thin.mp4", frames=pan_frames(width=640, height=32, frames=3), audio=False)
    r = apply(idle, "starry_night", thin, "thin.mp4")
    assert r.status_code == 400 and "640x32 is too long and thin" in r.json()["error"]
    big = b"\x00\x00\x00\x18ftypisom" + b"\x00" * 300_000  # over this server's 200 kB clip cap
    r = apply(idle, "starry_night", big, "big.mp4")
    assert r.status_code == 413 and "larger than the limit" in r.json()["error"]
    r = apply(idle, "starry_night", clip_bytes(tmp_path, "ok.webm", codec="libvpx-vp9", audio=False), "ok.webm")
    assert r.status_code == 201 and r.json()["task"] == "video"  # WebM in, an mp4 out later
    # Nothing is left behind by the refused ones: only the accepted job's folder.
    store: JobStore = idle.app.state.store
    assert [p.name for p in store.jobs_dir.iterdir()] == [r.json()["id"]]


def test_files_a_job_does_not_have_are_404(idle, tmp_path):
    paint = idle.post("/api/jobs", files={"content": ("p.png", PNG, "image/png"),
                                          "style": ("s.jpg", STYLE, "image/jpeg")}).json()["id"]
    training = train(idle).json()["id"]
    video = apply(idle, "starry_night", clip_bytes(tmp_path, audio=False), "c.mp4").json()["id"]
    for url in (f"/jobs/{paint}/result.mp4", f"/jobs/{paint}/poster.jpg", f"/jobs/{training}/content",
                f"/jobs/{training}/result.png", f"/jobs/{video}/result.mp4", f"/jobs/{video}/result.png"):
        r = idle.get(url)
        assert r.status_code == 404, url
    for job_id in (paint, training, video):  # every page renders, whatever the task
        assert idle.get(f"/jobs/{job_id}").status_code == 200
    assert idle.get(f"/jobs/{video}/poster.jpg").headers["content-type"] == "image/jpeg"
    assert idle.get(f"/jobs/{video}/content").headers["content-type"] == "video/mp4"  # the uploaded clip
    for page in ("/", "/history", "/models"):
        assert idle.get(page).status_code == 200


def test_an_older_database_gains_the_new_columns(tmp_path):
    db = tmp_path / "restyle.db"
    old = sqlite3.connect(db)
    old.executescript("""
        CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
          owner TEXT, gallery_key TEXT UNIQUE, state TEXT NOT NULL, created REAL NOT NULL, started REAL,
          finished REAL, attempts INTEGER NOT NULL DEFAULT 0, worker INTEGER, params TEXT NOT NULL,
          content_file TEXT NOT NULL, style_file TEXT NOT NULL, content_label TEXT NOT NULL,
          style_label TEXT NOT NULL, progress TEXT NOT NULL DEFAULT '{}', preview INTEGER NOT NULL DEFAULT 0,
          cancel INTEGER NOT NULL DEFAULT 0, error TEXT, report TEXT);
        INSERT INTO jobs (id, kind, state, created, params, content_file, style_file, content_label, style_label)
          VALUES ('oldjob0000000000000000', 'user', 'done', 1.0, '{}', 'content.png', 'style.png', 'c', 's');
    """)
    old.commit()
    old.close()
    store = JobStore(db, tmp_path / "jobs")
    job = store.get("oldjob0000000000000000")
    assert job.task == "paint" and job.shared is False and job.result_url.endswith("/result.png")
    assert replace(job, task="video").result_url.endswith("/result.mp4")


def test_the_default_web_training_is_the_clis_fine_tune_from_any_painting(tmp_path):
    from restyle.config.train import FROM_ARBITRARY, TrainConfig
    from restyle.web.settings import Settings
    from restyle.web.trained import train_config

    s = Settings(data_dir=tmp_path)
    cfg = train_config({"steps": s.default_train_steps}, s)
    assert s.train_from_any_painting and s.any_painting_model == "arbitrary"
    assert (cfg.steps, cfg.lr_decay) == (FROM_ARBITRARY["steps"], FROM_ARBITRARY["lr_decay"])
    assert cfg.size == TrainConfig().size  # the crops the CLI's fine-tune was measured with
    assert 1 < cfg.steps // cfg.preview_every <= 10  # a few grids, not one every few steps
