"""Helpers for the web app's tests: settings on the tiny network, a live server, image bytes."""

from __future__ import annotations

import io
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SLOW = 300  # seconds a training or a clip may take on a loaded CI machine
# The training form's overrides: a network and crops small enough that a step takes milliseconds on the tiny VGG.
TRAIN_OVERRIDES = {"widths": (4, 8), "res_blocks": 1, "size": 32, "batch_size": 1, "style_size": 32, "holdout": 2,
                   "precision": "fp32", "max_scale": 1.0}


def web_settings(data_dir: Path, weights: Path, **kw: Any):
    from restyle.web.settings import Settings

    base = dict(
        data_dir=data_dir, weights=str(weights), sizes=(64,), default_size=64, max_size=256,
        overrides={"iterations": 6, "device": "cpu", "precision": "fp32"},
        gallery=False, gallery_size=64, torch_threads=1, progress_interval=0.05,
    )
    base.update(kw)
    return Settings(**base)


def image_bytes(fmt: str = "PNG", size=(80, 64), source: str = "tubingen.jpg") -> bytes:
    buf = io.BytesIO()
    Image.open(EXAMPLES / source).convert("RGB").resize(size).save(buf, fmt)
    return buf.getvalue()


PNG = image_bytes("PNG")  # the photo, 80x64
STYLE = image_bytes("JPEG", (64, 64), "starry_night.jpg")  # the painting


def post(client, content=PNG, style=STYLE, *, url="/api/jobs", names=("photo.png", "style.jpg"),
         follow_redirects=True, **data):
    """Submit a painting: `content` and `style` as uploads (None: left out), `data` the form's fields."""
    files = {}
    if content is not None:
        files["content"] = (names[0], content, "image/png")
    if style is not None:
        files["style"] = (names[1], style, "image/jpeg")
    return client.post(url, files=files, data=data, follow_redirects=follow_redirects)


def wait_for(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_done(client, job_id, timeout=60):
    """The job's JSON once it has ended (done, failed or cancelled)."""
    return wait_for(lambda: (j := client.get(f"/api/jobs/{job_id}").json())["state"] in ("done", "failed", "cancelled") and j,
                    timeout, f"job {job_id} to end")


def clip_bytes(tmp_path: Path, name: str = "clip.mp4", **kw) -> bytes:
    """A tiny clip's bytes (videoutil.make_clip's pattern; `kw` goes to it)."""
    from videoutil import make_clip

    return make_clip(tmp_path / name, **kw).read_bytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(settings) -> Iterator[str]:
    """The app under a real uvicorn in a thread (lifespan, workers and all); yields its base URL."""
    from restyle.web.app import create_app
    from restyle.web.server import make_server

    port = free_port()
    server = make_server(create_app(settings), "127.0.0.1", port, timeout_graceful_shutdown=3)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "the server to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def write_train_photos(folder: Path) -> Path:
    """Four small photos (the examples, resized) for a web training to train on, in `folder`."""
    folder.mkdir()
    for k, (name, size) in enumerate((("tubingen.jpg", (64, 48)), ("starry_night.jpg", (48, 64)),
                                      ("tubingen.jpg", (56, 56)), ("starry_night.jpg", (64, 56)))):
        (folder / f"photo{k}.png").write_bytes(image_bytes("PNG", size, name))
    return folder


def model_settings(tmp_path: Path, tiny_weights: Path, photos: Path, **kw: Any):
    """Web settings for the model tests: tiny trainings on `photos`, short clips."""
    base = dict(photos_dir=photos, train_steps=(4, 3000), default_train_steps=4, max_train_steps=3000,
                train_overrides=TRAIN_OVERRIDES, video_size=64)
    base.update(kw)
    return web_settings(tmp_path / "data", tiny_weights, **base)
