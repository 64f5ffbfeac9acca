"""The data folder's lock: one server process per folder for its lifetime (data_dir/server.lock,
an OS file lock the kernel drops when the process dies, even by kill -9)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

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
