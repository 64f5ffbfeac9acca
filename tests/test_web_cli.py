"""`restyle serve`: the command starts a server that answers, warns off loopback, and checks its flags."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from restyle.cli.main import main
from webutil import free_port

SRC = Path(__file__).resolve().parents[1] / "src"


def test_serve_runs_answers_and_stops_on_ctrl_c(tmp_path, tiny_weights):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "restyle", "serve", "--port", str(port), "--data-dir", str(tmp_path / "data"),
         "--weights", str(tiny_weights), "--no-gallery"],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                if r.json()["workers"] == 1:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)
        assert "Repaint a photo" in httpx.get(f"http://127.0.0.1:{port}/").text
        assert (tmp_path / "data" / "restyle.db").is_file()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"serving on http://127.0.0.1:{port}/" in err and "Traceback" not in err


def test_serve_off_loopback_warns_and_passes_the_token(monkeypatch, capsys, tmp_path):
    from restyle.web import server

    seen = {}

    def fake_serve(settings, host, port, announce):
        seen.update(settings=settings, host=host, port=port)
        announce(server.url_of(host, port))

    monkeypatch.setattr(server, "serve", fake_serve)
    assert main(["serve", "--host", "0.0.0.0", "--port", "9999", "--data-dir", str(tmp_path), "--no-gallery"]) == 0
    err = capsys.readouterr().err
    assert "warning: listening on 0.0.0.0" in err and "--token" in err
    assert seen["host"] == "0.0.0.0" and seen["port"] == 9999 and seen["settings"].token is None
    assert main(["serve", "--host", "0.0.0.0", "--token", "s3cret", "--data-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "anyone who can reach it" not in err and "?token=s3cret" in err
    assert seen["settings"].token == "s3cret" and seen["settings"].gallery is True
    assert main(["serve", "--data-dir", str(tmp_path), "--examples", str(tmp_path), "--max-queue", "3",
                 "--devices", "cuda:0, cuda:1", "--photos", str(tmp_path)]) == 0
    assert seen["settings"].photos_dir == tmp_path
    assert seen["settings"].devices == ("cuda:0", "cuda:1") and seen["settings"].workers == 2
    assert seen["settings"].examples_dir == tmp_path and seen["settings"].max_queue == 3 and seen["host"] == "127.0.0.1"
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("flags,code,words", [
    (["--port", "70000"], 2, "port 70000 is out of range"),
    (["--max-queue", "0"], 2, "max-queue 0 must be >= 1"),
    (["--weights", "/nonexistent/vgg.pth"], 1, "weights file /nonexistent/vgg.pth does not exist"),
    (["--examples", "/nonexistent/examples"], 2, "examples /nonexistent/examples: no such folder"),
    (["--photos", "/nonexistent/photos"], 2, "photos /nonexistent/photos: no such folder"),
    (["--devices", "gpu0"], 2, "device 'gpu0' is not one of auto, cpu, mps, cuda or cuda:N"),
])
def test_serve_bad_flags(flags, code, words, capsys, tmp_path):
    assert main(["serve", "--data-dir", str(tmp_path), *flags]) == code
    assert words in capsys.readouterr().err


def children(pid: int) -> list:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(c) for c in text]
    return out


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find child processes")
def test_a_killed_server_leaves_no_worker_behind(tmp_path, tiny_weights):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "restyle", "serve", "--port", str(port), "--data-dir", str(tmp_path / "data"),
         "--weights", str(tiny_weights), "--no-gallery"],
        stderr=subprocess.DEVNULL, env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()["workers"] == 1:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)
        kids = children(proc.pid)
        assert kids, "the worker process was not found"
    finally:
        proc.kill()
        proc.wait(10)
    deadline = time.monotonic() + 45  # the worker may still be importing torch when its server dies
    while any(Path(f"/proc/{k}").exists() and "zombie" not in _state(k) for k in kids):
        assert time.monotonic() < deadline, "a worker outlived its server"
        time.sleep(0.2)


def _state(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]).lower()
    except (OSError, IndexError):
        return "zombie"
