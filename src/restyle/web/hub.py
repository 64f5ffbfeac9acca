"""Progress for the event streams: one poller reads the job store, every open stream gets what changed.

Each stream used to poll SQLite itself, on the event loop, five times a second:
a thousand open job pages slowed every other request to seconds. Now one task
reads all watched jobs in a single query (in a thread, off the event loop) each
`interval` and pushes a job's state to its streams only when it changed. Streams
are capped per client address and in total, and `close()` ends them all at once
when the server stops (otherwise they hold the shutdown until its timeout).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, Callable, Dict, Optional, Set

from .jobs import QUEUED, Job, JobStore

StateOf = Callable[[Job, int], Dict[str, Any]]  # (job, jobs ahead) -> what a stream sends


class StreamLimit(Exception):
    """Too many open streams: `status` is 429 (this client) or 503 (the server)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Subscription:
    """One open stream: the newest state pushed to it, and whether the hub closed it."""

    def __init__(self, job_id: str, client: str) -> None:
        self.job_id = job_id
        self.client = client
        self.closed = False
        self._state: Optional[Dict[str, Any]] = None
        self._ready = asyncio.Event()

    def push(self, state: Dict[str, Any]) -> None:
        self._state = state  # only the newest matters: a slow reader skips the ones in between
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def next(self, timeout: float) -> Optional[Dict[str, Any]]:
        """The next state pushed; None after `timeout` seconds without one, or when closed."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            return None
        self._ready.clear()
        state, self._state = self._state, None
        return None if self.closed else state


class ProgressHub:
    def __init__(self, store: JobStore, state_of: StateOf, interval: float, *, per_client: int, total: int) -> None:
        self.store = store
        self.state_of = state_of
        self.interval = interval
        self.per_client = per_client
        self.total = total
        self.closed = False
        self.polls = 0  # store reads so far (tests check they do not grow with the number of streams)
        self._subs: Dict[str, Set[Subscription]] = {}
        self._clients: Counter = Counter()
        self._last: Dict[str, Dict[str, Any]] = {}
        self._task: Optional[asyncio.Task] = None

    @property
    def open_streams(self) -> int:
        return sum(self._clients.values())

    def check(self, client: str) -> None:
        """Raise StreamLimit if `client` may not open another stream now."""
        if self.closed:
            raise StreamLimit("the server is stopping", 503)
        if self._clients[client] >= self.per_client:
            raise StreamLimit(f"too many progress streams open from your address ({self.per_client} is the most "
                              "per client); close some job pages, or reload them later", 429)
        if self.open_streams >= self.total:
            raise StreamLimit(f"the server has {self.total} progress streams open, the most it keeps; "
                              "reload the page in a minute", 503)

    def subscribe(self, job_id: str, client: str) -> Subscription:
        self.check(client)
        sub = Subscription(job_id, client)
        self._subs.setdefault(job_id, set()).add(sub)
        self._clients[client] += 1
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.job_id)
        if subs is None or sub not in subs:
            return
        subs.discard(sub)
        if not subs:
            del self._subs[sub.job_id]
            self._last.pop(sub.job_id, None)
        self._clients[sub.client] -= 1
        if self._clients[sub.client] <= 0:
            del self._clients[sub.client]

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="restyle-progress-hub")

    async def stop(self) -> None:
        self.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def close(self) -> None:
        """End every stream now (the server is stopping); new ones are refused."""
        self.closed = True
        for subs in list(self._subs.values()):
            for sub in subs:
                sub.close()

    async def _run(self) -> None:
        while not self.closed:
            if self._subs:
                try:
                    await self.poll()
                except Exception:  # a locked or briefly unreadable database: try again next tick
                    pass
            await asyncio.sleep(self.interval)

    async def poll(self) -> None:
        """Read every watched job once and push the states that changed."""
        ids = list(self._subs)
        self.polls += 1
        jobs, ahead = await asyncio.to_thread(self._read, ids)
        for job_id in ids:
            job = jobs.get(job_id)
            subs = self._subs.get(job_id)
            if job is None or not subs:
                continue
            state = self.state_of(job, ahead.get(job_id, 0))
            if state != self._last.get(job_id):
                self._last[job_id] = state
                for sub in subs:
                    sub.push(state)

    def _read(self, ids):
        jobs = self.store.snapshot(ids)
        return jobs, self.store.queue_positions([j for j in jobs.values() if j.state == QUEUED])
