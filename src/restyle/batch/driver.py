"""The one Ray driver: tasks handed to worker actors, a lost worker's task run again and counted.

Every Ray job goes through a Driver: the pairs and photos of a batch and the paintings of a
training (distributed.run_on_ray) and the chunks of a clip (video/on_ray.py). The caller
put()s tasks (each with .index, unique within the run, and .label) and calls step() until
nothing is pending; step() returns the tasks finished meanwhile in the order they finished,
and the caller puts them in its own order (a batch by index at the end, a clip frame by
frame as they come).

Faults. A worker whose process dies (killed, out of memory, node lost) is restarted by Ray
(`max_restarts`) and its task runs again on it (`max_task_retries`); the board counts each
task's starts, so the driver sees every loss. When Ray gives up on a worker, the driver
stops using it and queues its task for the others, unless the task has had MAX_ATTEMPTS
runs already. Each lost run is one line of `lost`. An exception raised by a task is not a
loss: the task fails once, not retried.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from ..errors import ResourceError
from ..events import PairStarted

MAX_ATTEMPTS = 3  # runs of one task before it is reported failed (each lost run killed its worker)
POLL_S = 0.2  # the driver's longest wait for a result between progress polls


class ProgressBoard:
    """A Ray actor: workers post starts and fractions, the driver polls them."""

    def __init__(self) -> None:
        self.starts: List[Tuple[int, int, str, int]] = []  # (task index, attempt, host, pid)
        self.attempts: Dict[int, int] = {}
        self.fractions: Dict[int, float] = {}

    def started(self, index: int, host: str, pid: int) -> int:
        self.attempts[index] = self.attempts.get(index, 0) + 1
        self.starts.append((index, self.attempts[index], host, pid))
        self.fractions[index] = 0.0
        return self.attempts[index]

    def progress(self, index: int, fraction: float) -> None:
        self.fractions[index] = fraction

    def poll(self, running: Sequence[int]) -> Tuple[List[Tuple[int, int, str, int]], Dict[int, float]]:
        """The starts since the last poll, and the fractions of the tasks `running` (the others are dropped:
        a clip's thousands of chunks would otherwise travel with every poll)."""
        starts, self.starts = self.starts, []
        keep = set(running)
        self.fractions = {i: f for i, f in self.fractions.items() if i in keep}
        return starts, dict(self.fractions)


@dataclass(frozen=True)
class Settled:
    """What a send() returns for a task that ends before it reaches a worker: its result (a file unreadable here)."""

    result: Any


@dataclass(frozen=True)
class Failed:
    """The result of a task that did not come back: its worker raised, or MAX_ATTEMPTS workers died running it."""

    error: str
    attempts: int


def cancel_tasks(ray: Any, refs: Iterable[Any]) -> None:
    """Cancel the actor tasks `refs` still queued or running, before ray_workers() kills their actors.

    Ray reruns the task of a worker that dies (max_task_retries), one it was told to kill too,
    and says so on stdout ("Task BatchWorker.run failed. There are 2 retries remaining, so the
    task will be retried"): after a Ctrl-C, noise. A cancelled task is never rerun.
    """
    for ref in refs:
        with contextlib.suppress(Exception):  # finished, or Ray already stopped: nothing to rerun
            ray.cancel(ref)


class Driver:
    """Hands each idle actor the next task, one at a time each; re-queues a lost worker's task; counts its runs.

    `send(task)` makes an actor's argument (or a Settled) as the task leaves, `receive(task, value)` the
    result from an actor's return value; `emit` gets a PairStarted per start. `noun` and `verb` name the
    tasks in messages ("pair", "painting"). The lines of `lost` are appended to the list given, if one is.
    """

    def __init__(self, ray: Any, actors: List[Any], board: Any, *, send: Optional[Callable[[Any], Any]] = None,
                 receive: Optional[Callable[[Any, Any], Any]] = None, emit: Optional[Callable[[Any], None]] = None,
                 noun: str = "task", verb: str = "running", lost: Optional[List[str]] = None) -> None:
        self.ray, self.actors, self.board = ray, actors, board
        self.send = send or (lambda task: task)
        self.receive = receive or (lambda task, value: value)
        self.emit = emit or (lambda event: None)
        self.noun, self.verb = noun, verb
        self.lost: List[str] = [] if lost is None else lost
        self.queue: Deque[Any] = deque()
        self.idle = list(range(len(actors)))
        self.inflight: Dict[Any, Tuple[int, Any]] = {}  # ObjectRef -> (actor, task)
        self.labels: Dict[int, str] = {}  # labels only: a clip's chunks hold frames, not kept once done
        self.where: Dict[int, Tuple[int, str, int]] = {}  # task index -> (attempt, host, pid) of its latest start
        self.reported: Set[Tuple[int, int]] = set()  # (task index, attempt) of the runs counted lost
        self.fractions: Dict[int, float] = {}
        self.settled: List[Tuple[Any, Any]] = []  # tasks that ended as they left, for the next step()

    def cancel(self) -> None:
        """Cancel the tasks in flight (Ctrl-C or an error): none of them is rerun (cancel_tasks)."""
        cancel_tasks(self.ray, list(self.inflight))
        self.inflight.clear()

    def put(self, task: Any) -> None:
        """Queue `task`; an idle worker starts it at once."""
        self.labels[task.index] = task.label
        self.queue.append(task)
        self._dispatch()

    @property
    def pending(self) -> int:
        """Tasks put and not yet returned by step()."""
        return len(self.queue) + len(self.inflight) + len(self.settled)

    @property
    def running_fraction(self) -> float:
        """The sum of the running tasks' fractions done (their workers' latest reports)."""
        running = {t.index for _, t in self.inflight.values()}
        return sum(f for i, f in self.fractions.items() if i in running)

    def step(self) -> List[Tuple[Any, Any]]:
        """Dispatch, wait up to POLL_S for a task to finish, poll the board: [(task, result)] of those finished.

        A result is receive()'s, a Settled's, or a Failed. ResourceError when tasks are left and every worker
        was lost.
        """
        self._dispatch()
        finished, self.settled = self.settled, []
        if not self.inflight:
            if self.queue:
                raise ResourceError(f"every Ray worker was lost; {len(self.queue)} {self.noun}(s) left undone")
            return finished
        ready, _ = self.ray.wait(list(self.inflight), num_returns=1, timeout=POLL_S)
        starts, self.fractions = self.ray.get(self.board.poll.remote([t.index for _, t in self.inflight.values()]))
        for index, attempt, host, pid in starts:
            if attempt > 1:  # a task Ray ran again: its worker died and was restarted
                self._lose(index, "ran it again")
            self.where[index] = (attempt, host, pid)
            self.emit(PairStarted(index, len(self.labels), self.labels[index], host, pid, attempt))
        for ref in ready:
            a, task = self.inflight.pop(ref)
            try:
                value = self.ray.get(ref)
            except self.ray.exceptions.RayTaskError as e:  # an exception in the task, not a lost worker
                cause = getattr(e, "cause", None) or e
                finished.append((task, Failed(f"internal error: {type(cause).__name__}: {cause}", 1)))
            except self.ray.exceptions.RayError as e:  # Ray gave up on this worker: use the others
                attempts = self.where.get(task.index, (0,))[0]
                if attempts < MAX_ATTEMPTS:
                    self._lose(task.index, f"{type(e).__name__}, worker retired, {self.noun} queued for the others")
                    self.queue.appendleft(task)
                    continue
                self._lose(task.index, "gave up")
                finished.append((task, Failed(f"{attempts} workers died {self.verb} it", attempts)))
            else:
                self.idle.append(a)
                finished.append((task, self.receive(task, value)))
        self._dispatch()  # a freed worker starts its next task before the caller goes on
        return finished

    def _dispatch(self) -> None:
        while self.queue and self.idle:
            task = self.queue.popleft()
            sent = self.send(task)
            if isinstance(sent, Settled):  # ended before it left
                self.settled.append((task, sent.result))
                continue
            a = self.idle.pop(0)
            self.inflight[self.actors[a].run.remote(sent)] = (a, task)

    def _lose(self, index: int, cause: str) -> None:
        """One line for the latest run of task `index`, whose worker died; once, however the loss was seen."""
        attempt, host, pid = self.where.get(index, (0, "?", 0))
        if (index, attempt) in self.reported:  # a retired worker's task, now started on another
            return
        self.reported.add((index, attempt))
        self.lost.append(f"worker pid {pid} on {host} died {self.verb} {self.labels[index]} (attempt {attempt}); "
                         f"{cause}")
