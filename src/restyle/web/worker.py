"""Worker processes: each claims jobs from the store and paints them, one at a time.

A worker is a separate process (one per device), so the server stays
responsive while torch keeps the cores busy. It talks to the server only
through the job store and the job folders: progress, the preview image, the
result. The engine's Iterate events become progress rows, its Snapshot
events become preview.jpg, and its `cancel` hook reads the job's cancel flag.

The job code itself (`execute`, `paint` and tasks.RUNNERS) works in a folder and
talks to a `Sink` (progress rows, cancel and turn questions, the run's end), never
to the store: here a StoreSink writes to the store and the job's own folder; on a
Ray cluster (ray_job.py) a sink streams the same rows and the folder's files back
to the server. One code path for both.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence

from ..optimiser.progress import StagePixels, eta_seconds
from .jobs import CANCELLED, DONE, FAILED, PAINT, USER, Job, JobStore
from .settings import Settings

PREVIEW_QUALITY = 85


class JobProgress:
    """The progress row of a job, from the engine's events: scale, step, loss and an ETA across scales.

    The ETA counts pixel-iterations (progress.eta_seconds), paced from the start of
    the first scale, so it neither counts the set-up (loading the network) nor
    assumes a 512 px step costs what a 256 px one did.
    """

    def __init__(self, stages: Sequence[StagePixels], clock: Callable[[], float] = time.monotonic) -> None:
        self.stages = tuple(stages)
        self.clock = clock
        self.row: Dict[str, Any] = {}
        self._t0: Optional[float] = None

    def update(self, event: Any) -> None:
        from ..events import Iterate, StageStart

        if isinstance(event, StageStart):
            if self._t0 is None:
                self._t0 = self.clock()
            self.row.update(scale=event.scale + 1, scales=event.scales, width=event.width, height=event.height)
        elif isinstance(event, Iterate):
            t0 = self._t0 if self._t0 is not None else self.clock() - event.elapsed
            eta = eta_seconds(self.stages, event.step, self.clock() - t0)
            self.row.update(step=event.step, steps=event.steps, loss=event.loss,
                            eta=None if eta is None else round(eta, 1), elapsed=round(event.elapsed, 1))


def _mp():
    # spawn: never fork a process that runs uvicorn's threads and event loop.
    return mp.get_context("spawn")


YIELDED, REQUEUED = "yielded", "requeued"  # a run's other ends: its turn given up; stopped with the server


class Sink(Protocol):
    """Where a running job's news goes, and where it asks its questions (StoreSink; ray_job.StreamSink)."""

    def progress(self, row: Dict[str, Any], preview: bool) -> None: ...  # preview: preview.jpg is new
    def cancel_requested(self) -> bool: ...  # by the job's owner
    def others_waiting(self) -> bool: ...  # another user job waits (a training then gives its turn away)
    def stopping(self) -> bool: ...  # the server (or this worker) is stopping
    def keep(self, name: str) -> None: ...  # a file of the job's folder worth keeping now (a checkpoint)
    def model_file(self, key: str) -> Optional[Path]: ...  # a visitor's trained model, by its training's id
    def own_models(self) -> Sequence[Path]: ...  # the job owner's trained models (instant previews)
    def end(self, state: str, *, error: Optional[str] = None, report: Any = None) -> None: ...


def end_job(store: JobStore, job_id: str, state: str, *, error: Optional[str] = None, report: Any = None) -> None:
    """Write how a run ended: done, failed or cancelled; YIELDED (the back of the queue) or REQUEUED (not an
    attempt lost)."""
    if state == YIELDED:
        store.yield_turn(job_id)
    elif state == REQUEUED:
        store.requeue(job_id)
    else:
        store.finish(job_id, state, error=error, report=report)


class StoreSink:
    """A local worker's sink: the job store, read and written directly."""

    def __init__(self, store: JobStore, job: Job, stopping: Callable[[], bool]) -> None:
        self.store, self.job, self._stopping = store, job, stopping

    def progress(self, row: Dict[str, Any], preview: bool) -> None:
        self.store.set_progress(self.job.id, row, preview=preview)

    def cancel_requested(self) -> bool:
        return self.store.cancel_requested(self.job.id)

    def others_waiting(self) -> bool:
        return self.store.others_waiting(self.job.id)

    def stopping(self) -> bool:
        return self._stopping()

    def keep(self, name: str) -> None:
        pass  # the folder is the job's own

    def model_file(self, key: str) -> Optional[Path]:
        from .trained import trained_model

        return trained_model(self.store, key)

    def own_models(self) -> Sequence[Path]:
        from .trained import visitor_models

        return [m.path for m in visitor_models(self.store, self.job.owner)] if self.job.kind == USER else []

    def end(self, state: str, *, error: Optional[str] = None, report: Any = None) -> None:
        end_job(self.store, self.job.id, state, error=error, report=report)


class Worker:
    """Paints jobs: `loop` until `stop` is set; `run_job` for one job."""

    def __init__(self, settings: Settings, index: int, stop: Any, wake: Any, parent: Optional[int] = None) -> None:
        self.settings = settings
        self.index = index
        self.stop = stop
        self.wake = wake
        self.store = JobStore(settings.db_path, settings.jobs_dir)
        self.parent = os.getppid() if parent is None else parent  # the server's pid

    def stopping(self) -> bool:
        """Asked to stop, or orphaned: a server killed outright must not leave a worker painting."""
        return self.stop.is_set() or os.getppid() != self.parent

    def loop(self) -> None:
        while not self.stopping():
            job = self.store.claim(self.index)
            if job is None:
                self.wake.wait(1.0)
                self.wake.clear()
                continue
            self.run_job(job)

    def run_job(self, job: Job) -> None:
        """Run one job of any task in its folder; every way it can end is written to the store."""
        execute(JobRun(self.settings, job, self.store.folder(job.id), self.settings.devices[self.index],
                       StoreSink(self.store, job, self.stopping)))


def execute(run: "JobRun") -> None:
    """Run one job of any task; every way it can end goes to its sink's end()."""
    from ..device import free_cached_memory
    from ..errors import Cancelled, RestyleError, is_out_of_memory

    job, sink = run.job, run.sink
    out_of_memory = False
    try:
        if job.task == PAINT:
            paint(run)
        else:
            from . import tasks

            tasks.RUNNERS[job.task](run)
    except Cancelled:
        if run.by_user:
            sink.end(CANCELLED, error=run.cancel_note or "cancelled")
        elif run.yielded:  # a training job's turn is up: the back of the queue, resumed later
            sink.end(YIELDED)
        else:  # the server is stopping: the job runs again on the next start
            sink.end(REQUEUED)
    except RestyleError as e:
        sink.end(FAILED, error=str(e).replace(str(run.folder) + os.sep, ""))
    except Exception as e:  # a bug: keep the worker alive and say what happened
        if is_out_of_memory(e):  # MemoryError, or torch.OutOfMemoryError from the GPU: free it, go on
            out_of_memory = True
            sink.end(FAILED, error="out of memory; try a smaller size")
        else:
            sink.end(FAILED, error=f"internal error: {type(e).__name__}: {e}")
    if out_of_memory:  # here, once the traceback (and the failed job's tensors) is gone
        free_cached_memory()


def instant_preview(run: "JobRun", size: int) -> Optional[dict]:
    """The network's picture of the job's photo as preview.jpg (_instant_preview), or None; never fails the job."""
    job, folder, settings = run.job, run.folder, run.settings
    try:
        return _instant_preview(folder / job.content_file, folder / job.style_file, size, folder,
                                models=run.sink.own_models(), device=run.device,
                                any_painting=settings.any_painting_model, weights=settings.weights)
    except Exception:  # noqa: BLE001 - a preview must never fail the job
        return None


def paint(run: "JobRun") -> None:
    """The optimiser's job: the form's photo in the style of its painting."""
    from ..events import Iterate, Snapshot
    from ..images import save_atomic, write_picture
    from ..optimiser.engine import run as paint_photo
    from ..optimiser.schedule import pyramid
    from .form import make_config

    job, folder, settings = run.job, run.folder, run.settings
    tracker = JobProgress(())
    run.progress = progress = tracker.row

    def callback(event: Any) -> None:
        tracker.update(event)
        if isinstance(event, Iterate):
            run.write(force=event.step == event.steps)
        elif isinstance(event, Snapshot) and run.due("preview"):
            save_atomic(event.image, folder / "preview.jpg", quality=PREVIEW_QUALITY)
            run.write(preview=True, force=True)

    cfg = make_config(job.params, settings)
    if run.device != "auto":  # this worker's device, "cuda:N" included (no global CUDA state)
        cfg = cfg.replace(device=run.device)
    stages = pyramid(cfg.size, cfg.iterations, cfg.scales)
    steps = sum(s.iterations for s in stages)
    tracker.stages = tuple((_pixels(folder / job.content_file, s.long_side), s.iterations) for s in stages)
    # The visitor's own trained models know their paintings too (another visitor's never serve).
    instant = instant_preview(run, cfg.size)
    if instant:  # a trained network knows this painting: its picture now, the optimiser's later
        progress["instant"] = instant
        run.write(preview=True, force=True)
    result = paint_photo(
        folder / job.content_file, [folder / job.style_file], cfg,
        callback=callback, cancel=run.cancel,
        snapshot_every=max(1, steps // max(1, settings.snapshots)),
        weights=settings.weights,
    )
    report = dict(result.report, content=job.content_label, style=job.style_label,
                  **({"instant": progress["instant"]} if "instant" in progress else {}))
    write_picture(result.image, folder / "result.png", report, sidecar_to=folder / "report.json")
    run.sink.progress(dict(progress, step=steps, steps=steps, eta=0), False)
    run.sink.end(DONE, report=json.loads(json.dumps(report, default=str)))


class JobRun:
    """One job being run: its settings, folder, device and sink, throttled progress writes, the cancel hook.

    `cancel()` is what the engines poll: True when the server stops, or (asked of the sink at
    most every progress interval) when the job's owner asked to cancel it.
    """

    def __init__(self, settings: Settings, job: Job, folder: Path, device: str, sink: Sink) -> None:
        self.settings = settings
        self.job = job
        self.folder = folder
        self.device = device
        self.sink = sink
        self.progress: Dict[str, Any] = {}
        self.by_user = False  # cancelled by its owner
        self.yielded = False  # stopped to let waiting jobs run (training)
        self.cancel_note: Optional[str] = None  # what a cancelled job says (a training: its checkpoint)
        self._last: Dict[str, float] = {}

    def due(self, what: str) -> bool:
        """True at most once per progress interval for each `what` (writes, store reads, previews)."""
        now = time.monotonic()
        if now - self._last.get(what, -1e9) < self.settings.progress_interval:
            return False
        self._last[what] = now
        return True

    def write(self, *, preview: bool = False, force: bool = False) -> None:
        if force or self.due("write"):
            self.sink.progress(self.progress, preview)

    def cancel(self) -> bool:
        if self.sink.stopping():
            return True
        if self.due("cancel"):
            self.by_user = self.sink.cancel_requested()
        return self.by_user


ARBITRARY = "arbitrary"  # the bundled any-painting network


def _instant_preview(content: Path, style: Path, size: int, folder: Path,
                     models: Sequence[Path] = (), device: str = "auto", any_painting: str = ARBITRARY,
                     weights: Optional[str] = None) -> Optional[dict]:
    """The network's picture of the photo as preview.jpg, while the optimiser paints.

    A model trained on this very painting if there is one (`models`: the visitor's own
    trained models, looked at before the bundled ones), else the any-painting network
    (`any_painting`: the server's, Settings.any_painting_model; it reads the painting with
    the VGG-19 `weights`) with this painting; None when neither is installed.
    """
    from ..images import save_atomic
    from ..networks.feedforward import model_for_style, open_model, run_network
    from .trained import any_painting as offered

    match = model_for_style(style, models)
    anything = None if match else offered(any_painting)
    if match is None and anything is None:
        return None
    t0 = time.perf_counter()
    model = (open_model(match, device=device) if match
             else open_model(anything.path, device=device, weights=weights))
    img = run_network(model, content, size=size, styles=() if match else (style,))
    save_atomic(img, folder / "preview.jpg", quality=PREVIEW_QUALITY)
    return {"model": model.name, "model_sha256": model.sha256, "seconds": round(time.perf_counter() - t0, 2)}


def _pixels(content: Any, long_side: int) -> int:
    """Pixels of the content at this long side (orientation does not change the count)."""
    from PIL import Image

    from ..images import fit_size

    try:
        with Image.open(content) as im:
            w, h = fit_size(im.width, im.height, long_side)
    except OSError:  # the engine will say what is wrong with the file
        w, h = long_side, long_side
    return w * h


def worker_main(settings: Settings, index: int, stop: Any, wake: Any, parent: int) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the server, which stops us
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    import torch

    from ..device import resolve_device, use_device

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    # This process's GPU as the current device: kernels and caches torch starts without an
    # explicit device (cuDNN handles, empty_cache) land on it, not on cuda:0.
    use_device(resolve_device(settings.devices[index]))
    Worker(settings, index, stop, wake, parent).loop()


class SharedFlag:
    """A flag the server and its worker processes share (set, clear, is_set, wait), with no lock.

    multiprocessing.Event guards its flag with a lock every process takes, even to read it: a
    worker killed while it held that lock (inside wait or clear) would leave every other
    worker, and the server's event loop setting the flag, blocked for good. One shared byte,
    written whole, needs no lock; `wait` looks at it every POLL_S.
    """

    POLL_S = 0.05

    def __init__(self, ctx: Any) -> None:
        self._value = ctx.RawValue("b", 0)

    def set(self) -> None:
        self._value.value = 1

    def clear(self) -> None:
        self._value.value = 0

    def is_set(self) -> bool:
        return bool(self._value.value)

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self.POLL_S, left))
        return True


class WorkerPool:
    """Starts, watches and stops the worker processes; restarts one that dies."""

    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        ctx = _mp()
        self.stop_event = SharedFlag(ctx)
        self.wake_event = SharedFlag(ctx)
        self.procs: List[Optional[Any]] = [None] * settings.workers
        self._watch: Optional[threading.Thread] = None
        self._stopping = threading.Event()

    def start(self) -> None:
        from ..device import resolve_device

        for d in self.settings.devices:  # a cuda:5 that is not there: refused at start-up, not job by job
            resolve_device(d)
        for i in range(self.settings.workers):
            self._spawn(i)
        self._watch = threading.Thread(target=self._watchdog, name="restyle-watchdog", daemon=True)
        self._watch.start()

    def _spawn(self, i: int) -> None:
        p = _mp().Process(
            target=worker_main, args=(self.settings, i, self.stop_event, self.wake_event, os.getpid()),
            name=f"restyle-worker-{i}", daemon=True,
        )
        p.start()
        self.procs[i] = p

    def _watchdog(self) -> None:
        while not self._stopping.wait(1.0):
            for i, p in enumerate(self.procs):
                if p is not None and not p.is_alive() and not self._stopping.is_set():
                    self.store.recover(worker=i)  # its job runs again (up to MAX_ATTEMPTS)
                    self._spawn(i)

    def wake(self) -> None:
        self.wake_event.set()

    def pids(self) -> List[int]:
        return [p.pid for p in self.procs if p is not None and p.pid is not None]

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the workers to stop (a running job is queued again), then make sure they are gone."""
        self._stopping.set()
        self.stop_event.set()
        self.wake_event.set()
        deadline = time.monotonic() + timeout
        for p in self.procs:
            if p is None:
                continue
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(5)
        if self._watch is not None:
            self._watch.join(2)
