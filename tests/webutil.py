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


def wait_for(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextmanager
def live_server(settings) -> Iterator[str]:
    """The app under a real uvicorn in a thread (lifespan, workers and all); yields its base URL."""
    from restyle.web.app import create_app
    from restyle.web.server import make_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_server(create_app(settings), "127.0.0.1", port, timeout_graceful_shutdown=3)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "the server to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
