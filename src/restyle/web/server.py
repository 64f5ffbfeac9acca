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

import socket
from typing import Any, Callable

from ..errors import InputError
from .datalock import DataDirLock


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
