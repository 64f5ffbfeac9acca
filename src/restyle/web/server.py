"""Running the app: one server per data folder, the port bound before anything is written, a quick stop.

`restyle serve` calls `serve`. In order:
1. lock the data folder (data_dir/server.lock, an OS file lock the kernel drops
   when the process dies, even by kill -9); a second server on the same folder
   stops here, with a message naming the one that holds it;
2. bind the port; a port in use stops here, before the job database is touched;
3. start the app, whose start-up writes (jobs left running are queued again,
   the gallery is seeded) and starts the workers.
Stopping (Ctrl-C, SIGTERM) ends every open progress stream first, so the server
does not wait on them and no request is cancelled mid-way.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import InputError

LOCK_NAME = "server.lock"

try:  # POSIX
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

except ImportError:  # pragma: no cover - Windows
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False


class DataDirLock:
    """An exclusive lock on a data folder, held by one server process for its lifetime."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_NAME
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise InputError naming the server that holds it. Writes nothing else."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            os.lseek(fd, 0, os.SEEK_SET)
            holder = _describe(os.read(fd, 4096))
            os.close(fd)
            raise InputError(f"data folder {self.data_dir} is in use by another restyle server ({holder}); "
                             "one server per data folder: stop that one first, or pass another --data-dir")
        self._fd = fd
        self.describe()

    def describe(self, url: Optional[str] = None) -> None:
        """Say who holds the lock (read by a second server to name us)."""
        if self._fd is None:
            return
        info = json.dumps({"pid": os.getpid(), "url": url, "since": time.time()}).encode()
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.write(self._fd, info)

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            finally:
                os.close(self._fd)  # closing drops the lock
                self._fd = None


def _describe(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode())
    except (ValueError, UnicodeDecodeError):
        return "process unknown"
    parts = [f"pid {info.get('pid')}"]
    if info.get("url"):
        parts.append(f"serving {info['url']}")
    if info.get("since"):
        parts.append(f"since {time.strftime('%Y-%m-%d %H:%M', time.localtime(info['since']))}")
    return ", ".join(parts)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or InputError saying the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a port in TIME_WAIT is free
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise InputError(f"cannot listen on {host} port {port}: {e.strerror or e}; "
                         "is another server using it? Pick another --port") from None
    sock.set_inheritable(True)
    return sock


def url_of(host: str, port: int) -> str:
    return f"http://{host if ':' not in host else '[' + host + ']'}:{port}/"


def make_server(app: Any, host: str, port: int, **config: Any):
    """A uvicorn server whose stop first ends the app's progress streams."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            hub = getattr(getattr(app, "state", None), "hub", None)
            if hub is not None:
                hub.close()  # the streams end: their connections close at once instead of timing out
            await super().shutdown(sockets=sockets)

    config.setdefault("log_level", "warning")
    config.setdefault("timeout_graceful_shutdown", 5)
    return Server(uvicorn.Config(app, host=host, port=port, **config))


def serve(settings: Any, host: str, port: int, announce: Callable[[str], None] = lambda url: None) -> None:
    """Lock the data folder, bind the port, then run the app until Ctrl-C or SIGTERM."""
    from .app import create_app

    lock = DataDirLock(settings.data_dir)
    lock.acquire()
    try:
        sock = bind(host, port)
        url = url_of(host, port)
        lock.describe(url)
        app = create_app(settings, lock=lock)
        announce(url)
        try:
            make_server(app, host, port).run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: a normal stop
            pass
        finally:
            sock.close()
    finally:
        lock.release()
