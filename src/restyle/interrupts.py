"""Ctrl-C in the `restyle` command: exit 130 with one line, never a traceback.

Python turns SIGINT into a KeyboardInterrupt wherever the main thread happens to
be. During start-up that is usually inside an import (torch's takes seconds),
and an import interrupted half-way leaves broken modules behind: a 40-line
traceback, `RecursionError`, numpy's "cannot load module more than once", or an
interrupt swallowed by someone's `except`. So the command's entry point installs
`exit_now` as its first instruction: until painting starts, Ctrl-C prints one
line and ends the process at once (nothing has been written yet). `stop_cleanly`
then hands Ctrl-C back to Python for the run itself, where the CLI catches the
KeyboardInterrupt, closes the progress bar and leaves no partial file.

Only the command installs handlers; `import restyle` in a program changes nothing.
This module loads before anything else, so it imports only what Python's start-up
has already loaded: `_signal` is the C module behind `signal`, whose import builds
enums for ~10 ms (as does `typing`), time in which a Ctrl-C would still be Python's.
"""

from __future__ import annotations

import _signal as signal
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a Ctrl-C
MESSAGE = b"restyle: interrupted\n"


def exit_now(signum: int, frame: object) -> None:
    """SIGINT handler of the start-up: one line on stderr, exit 130, no clean-up to do."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()  # keep what was printed before (a pipe buffers stdout)
        except Exception:  # a flush interrupted mid-write, a closed pipe: exit anyway
            pass
    try:
        os.write(2, MESSAGE)
    finally:
        os._exit(EXIT_INTERRUPTED)


def install() -> None:
    """Make Ctrl-C exit at once (the entry point's first instruction)."""
    signal.signal(signal.SIGINT, exit_now)


@contextmanager
def stop_cleanly() -> Iterator[None]:
    """While painting: Ctrl-C raises KeyboardInterrupt, which the CLI turns into exit 130.

    Does nothing unless `install()` ran (the CLI called in-process, e.g. by tests,
    keeps its caller's handler); restores `exit_now` afterwards.
    """
    if signal.getsignal(signal.SIGINT) is not exit_now:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, exit_now)
