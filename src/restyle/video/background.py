"""Threads that keep every core busy while the network paints: read ahead, write behind.

A clip's frames pass through stages that each use one library: PyAV decodes and
resizes, OpenCV computes the optical flow, torch runs the network, Pillow and PyAV
write the frame and encode it. All of them release the GIL while they work, so
running the stages on their own threads overlaps them (on a 2-core CPU the flow,
decoding and encoding of the next frames cost about as much as the network pass).

- `ReadAhead(items)`: iterate `items` on a background thread, a few items ahead.
- `WriteBehind()`: run jobs in order on one background thread, a bounded number pending.
- `thread_share(torch_threads)`: give torch that many intra-op threads and OpenCV the
  rest of the cores for the duration of a run, then restore both: without it both
  libraries start a thread per core and, with another stage running beside them,
  spend their time waiting on each other.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Deque, Generic, Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")
_END = object()


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


class ReadAhead(Generic[T]):
    """`items` produced on a background thread, at most `depth` ahead of the consumer.

    An exception raised by `items` is raised again in the consumer, in order.
    close() (or leaving a `with` block) stops the thread and closes `items` there.
    """

    def __init__(self, items: Iterable[T], depth: int = 4, name: str = "restyle-read-ahead") -> None:
        self._queue: "queue.Queue[Any]" = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(items,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, items: Iterable[T]) -> None:
        it = iter(items)
        try:
            for item in it:
                if not self._put((item, None)):
                    return
            self._put((_END, None))
        except BaseException as e:  # handed to the consumer
            self._put((_END, e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[T]:
        while True:
            item, error = self._queue.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> "ReadAhead[T]":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class WriteBehind:
    """Jobs run one after another, in the order given, on one background thread.

    submit() waits while `depth` jobs are pending and raises the first failed job's
    exception; finish() waits for all of them. Leaving a `with` block waits for the
    jobs already submitted (their files are good) and re-raises nothing new.
    """

    def __init__(self, depth: int = 4, name: str = "restyle-write-behind") -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: Deque[Future] = deque()
        self.depth = depth

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        while len(self._pending) >= self.depth or (self._pending and self._pending[0].done()):
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(fn, *args))

    def finish(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> "WriteBehind":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._pool.shutdown(wait=True)


@contextmanager
def thread_share(torch_threads: Optional[int]) -> Iterator[None]:
    """torch gets `torch_threads` intra-op threads, OpenCV the other cores (at least 1); restored after.

    None changes nothing (the optimiser engine: its results depend on torch's thread count).
    """
    if torch_threads is None:
        yield
        return
    import cv2
    import torch

    old_torch, old_cv2 = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(max(1, torch_threads))
    cv2.setNumThreads(max(1, cpu_cores() - torch_threads))
    try:
        yield
    finally:
        torch.set_num_threads(old_torch)
        cv2.setNumThreads(old_cv2)
