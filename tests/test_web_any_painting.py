"""The Models page's "any painting": the any-painting network on a visitor's painting, for a photo and a clip.

On a tiny random any-painting network that reads the tiny VGG (tinynets.arbitrary_model_file),
through the HTTP API like the other web tests; every bad painting gets a 4xx and a message.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from restyle.web.app import create_app
from restyle.web.jobs import JobStore
from tinynets import arbitrary_model_file
from webutil import EXAMPLES, SLOW, clip_bytes, image_bytes, wait_done, web_settings

PHOTO = image_bytes("PNG", (80, 64))
PAINTING = image_bytes("PNG", (96, 72), "starry_night.jpg")
OTHER = image_bytes("PNG", (96, 72), "the_scream.jpg")


def any_settings(tmp_path, tiny_weights, data="data", **kw):
    base = dict(any_painting_model=str(arbitrary_model_file(tmp_path / "arb.pt")), photos_dir=None, video_size=64)
    base.update(kw)
    return web_settings(tmp_path / data, tiny_weights, **base)


def apply(client, media=PHOTO, name="photo.png", painting=PAINTING, url="/api/apply", headers=None, **data):
    files = {"media": (name, media, "application/octet-stream")} if media is not None else {}
    if painting is not None:
        files["style"] = ("painting.png", painting, "image/png")
    return client.post(url, files=files, data={"model": "arbitrary", **data}, headers=headers)


def picture(client, url) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(client.get(url).content)).convert("RGB")).astype(float)


def test_any_painting_paints_a_photo_and_a_clip_in_the_chosen_painting(tmp_path, tiny_weights):
    from restyle.networks.feedforward import open_model, run_network

    s = any_settings(tmp_path, tiny_weights)
    with TestClient(create_app(s)) as c:
        page = c.get("/models").text
        assert '<option value="arbitrary"' in page and 'id="apply-painting"' in page and "/static/models.js" in page
        assert c.get("/static/models.js").status_code == 200

        r = apply(c, size="64")
        assert r.status_code == 201 and r.json()["task"] == "stylize", r.text
        assert r.json()["style"] == "painting.png" and r.json()["params"]["model"] == "arbitrary"
        done = wait_done(c, r.json()["id"], SLOW)
        assert done["state"] == "done", done["error"]
        got = picture(c, done["result"])
        assert got.shape == (51, 64, 3)
        assert c.get(f"/jobs/{done['id']}/style").content == PAINTING  # the visitor's painting, kept beside
        page = c.get(f"/jobs/{done['id']}").text
        assert "painting.png" in page and "any painting" in page

        # The library's picture of this photo in this painting, not in another one.
        (tmp_path / "photo.png").write_bytes(PHOTO)
        model = open_model(s.any_painting_model, weights=str(tiny_weights))
        for name, data in (("painting", PAINTING), ("other", OTHER)):
            (tmp_path / f"{name}.png").write_bytes(data)
        ours = np.asarray(run_network(model.for_style(tmp_path / "painting.png"), tmp_path / "photo.png", size=64),
                          dtype=float)
        theirs = np.asarray(run_network(model.for_style(tmp_path / "other.png"), tmp_path / "photo.png", size=64),
                            dtype=float)
        assert np.abs(got - ours).mean() < 1.0 < np.abs(got - theirs).mean(), (
            np.abs(got - ours).mean(), np.abs(got - theirs).mean())

        # Less paint: the slider's strength, whose zero point is the photo's own style.
        r = apply(c, size="64", paint_strength="0.5")
        assert r.status_code == 201 and r.json()["params"]["paint_strength"] == 0.5, r.text
        done = wait_done(c, r.json()["id"], SLOW)
        assert done["state"] == "done", done["error"]
        half = picture(c, done["result"])
        lib = np.asarray(run_network(model.for_style(tmp_path / "painting.png", strength=0.5,
                                                     photo=tmp_path / "photo.png"), tmp_path / "photo.png", size=64),
                         dtype=float)
        assert np.abs(half - lib).mean() < 1.0 < np.abs(half - got).mean(), (
            np.abs(half - lib).mean(), np.abs(half - got).mean())
        assert "paint strength" in c.get(f"/jobs/{done['id']}").text and "×0.5" in c.get(f"/jobs/{done['id']}").text

        # One of the examples as the painting.
        r = apply(c, painting=None, style_example="the_scream", size="64")
        assert r.status_code == 201, r.text
        done = wait_done(c, r.json()["id"], SLOW)
        assert done["state"] == "done", done["error"]
        assert c.get(f"/jobs/{done['id']}/style").content == (EXAMPLES / "the_scream.jpg").read_bytes()

        # A short clip, frame by frame through the same network.
        r = apply(c, clip_bytes(tmp_path, audio=False), "clip.mp4", paint_strength="2")  # the zero point: frame 1
        assert r.status_code == 201 and r.json()["task"] == "video", r.text
        done = wait_done(c, r.json()["id"], SLOW)
        assert done["state"] == "done", done["error"]
        assert done["result"].endswith("/result.mp4") and done["progress"]["step"] == 10
        assert c.get(done["result"]).headers["content-type"] == "video/mp4"
        assert c.get(f"/jobs/{done['id']}/style").content == PAINTING


@pytest.fixture
def idle_any(tmp_path, tiny_weights):
    """No workers: jobs wait, so every check runs at once."""
    with TestClient(create_app(any_settings(tmp_path, tiny_weights, start_workers=False))) as c:
        yield c


def test_any_painting_bad_paintings_are_refused_with_a_message(idle_any, tmp_path):
    r = apply(idle_any, painting=None)
    assert r.status_code == 400 and "painting is missing" in r.json()["error"]
    r = apply(idle_any, clip_bytes(tmp_path, audio=False), "clip.mp4", painting=None)
    assert r.status_code == 400 and "painting is missing" in r.json()["error"]
    r = apply(idle_any, painting=image_bytes("PNG", (200, 40)))
    assert r.status_code == 400, r.text
    assert "200x40 is too small for the any-painting network" in r.json()["error"]
    assert "at least 64 px on each side" in r.json()["error"]
    r = apply(idle_any, painting=b"hello, world")
    assert r.status_code == 415 and r.json()["error"].startswith("painting: this is not a")
    r = apply(idle_any, painting=b"GIF89a not really")
    assert r.status_code == 400 and r.json()["error"].startswith("painting:")
    r = apply(idle_any, painting=b"")
    assert r.status_code == 400 and "painting: the file is empty" in r.json()["error"]
    for bad, why in (("5", "paint strength 5 is out of range; it must be in [0, 3]"),
                     ("-1", "paint strength -1 is out of range"), ("lots", "paint strength 'lots' is not a number")):
        r = apply(idle_any, paint_strength=bad)
        assert r.status_code == 400 and why in r.json()["error"], r.text
    r = apply(idle_any, painting=None, style_example="no_such_painting")
    assert r.status_code == 400 and "no example called 'no_such_painting'" in r.json()["error"]
    r = apply(idle_any, painting=None, url="/apply", headers={"accept": "text/html"})
    assert r.status_code == 400 and "painting is missing" in r.text and 'id="apply-form"' in r.text
    # Nothing is left behind by the refused ones.
    store: JobStore = idle_any.app.state.store
    assert list(store.jobs_dir.iterdir()) == []
    r = apply(idle_any, painting=image_bytes("PNG", (64, 64)))  # the smallest painting it reads
    assert r.status_code == 201, r.text
    r = apply(idle_any, painting=PAINTING, size="4096")  # the photo's rules still hold
    assert r.status_code == 400 and "size '4096' is not one of 64" in r.json()["error"]


def test_a_server_without_the_any_painting_network_does_not_offer_it(tmp_path, tiny_weights):
    s = any_settings(tmp_path, tiny_weights, start_workers=False, any_painting_model="")
    with TestClient(create_app(s)) as c:
        page = c.get("/models").text
        assert '<option value="arbitrary"' not in page and 'id="apply-painting"' not in page
        assert '<option value="starry_night"' in page
        r = apply(c)
        assert r.status_code == 404 and "there is no model 'arbitrary'" in r.json()["error"]
    missing = any_settings(tmp_path, tiny_weights, start_workers=False, any_painting_model=str(tmp_path / "gone.pt"),
                           data="data2")
    with TestClient(create_app(missing)) as c:
        assert '<option value="arbitrary"' not in c.get("/models").text
        assert apply(c).status_code == 404
