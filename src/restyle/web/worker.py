"""Worker processes: each claims jobs from the store and paints them, one at a time.

A worker is a separate process (one per device), so the server stays
responsive while torch keeps the cores busy. It talks to the server only
through the job store and the job folders: progress, the preview image, the
result. The engine's Iterate events become progress rows, its Snapshot
events become preview.jpg, and its `cancel` hook reads the job's cancel flag.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..progress import StagePixels, eta_seconds
from .jobs import CANCELLED, DONE, FAILED, Job, JobStore
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

    def instant_preview(self, content: Path, style: Path, size: int) -> Optional[dict]:
        try:
            return _instant_preview(content, style, size, content.parent)
        except Exception:  # noqa: BLE001 - a preview must never fail the job
            return None

    def run_job(self, job: Job) -> None:
        from ..engine import run
        from ..errors import Cancelled, RestyleError
        from ..events import Iterate, Snapshot
        from ..images import save_atomic, write_text_atomic
        from ..schedule import pyramid
        from .form import make_config

        folder = self.store.folder(job.id)
        interval = self.settings.progress_interval
        tracker = JobProgress(())
        progress = tracker.row
        last = {"write": 0.0, "cancel": 0.0, "preview": 0.0}
        cancelled = {"by_user": False}

        def cancel() -> bool:
            if self.stopping():
                return True
            now = time.monotonic()
            if now - last["cancel"] >= interval:
                last["cancel"] = now
                cancelled["by_user"] = self.store.cancel_requested(job.id)
            return cancelled["by_user"]

        def callback(event: Any) -> None:
            now = time.monotonic()
            tracker.update(event)
            if isinstance(event, Iterate):
                if now - last["write"] >= interval or event.step == event.steps:
                    last["write"] = now
                    self.store.set_progress(job.id, progress)
            elif isinstance(event, Snapshot) and now - last["preview"] >= interval:
                last["preview"] = now
                save_atomic(event.image, folder / "preview.jpg", quality=PREVIEW_QUALITY)
                self.store.set_progress(job.id, progress, preview=True)

        try:
            cfg = make_config(job.params, self.settings)
            device = self.settings.devices[self.index]
            if device != "auto":  # this worker's device, "cuda:N" included (no global CUDA state)
                cfg = cfg.replace(device=device)
            stages = pyramid(cfg.size, cfg.iterations, cfg.scales)
            steps = sum(s.iterations for s in stages)
            tracker.stages = tuple((_pixels(folder / job.content_file, s.long_side), s.iterations) for s in stages)
            instant = self.instant_preview(folder / job.content_file, folder / job.style_file, cfg.size)
            if instant:  # a trained network knows this painting: its picture now, the optimiser's later
                progress["instant"] = instant
                self.store.set_progress(job.id, progress, preview=True)
            result = run(
                folder / job.content_file, [folder / job.style_file], cfg,
                callback=callback, cancel=cancel,
                snapshot_every=max(1, steps // max(1, self.settings.snapshots)),
                weights=self.settings.weights,
            )
            save_atomic(result.image, folder / "result.png")
            report = dict(result.report, content=job.content_label, style=job.style_label,
                          **({"instant": progress["instant"]} if "instant" in progress else {}))
            write_text_atomic(json.dumps(report, indent=2, default=str) + "\n", folder / "report.json")
            self.store.set_progress(job.id, dict(progress, step=steps, steps=steps, eta=0))
            self.store.finish(job.id, DONE, report=json.loads(json.dumps(report, default=str)))
        except Cancelled:
            if cancelled["by_user"]:
                self.store.finish(job.id, CANCELLED, error="cancelled")
            else:  # the server is stopping: the job runs again on the next start
                self.store.requeue(job.id)
        except RestyleError as e:
            self.store.finish(job.id, FAILED, error=str(e).replace(str(folder) + os.sep, ""))
        except MemoryError:
            self.store.finish(job.id, FAILED, error="out of memory; try a smaller size")
        except Exception as e:  # a bug: keep the worker alive and say what happened
            self.store.finish(job.id, FAILED, error=f"internal error: {type(e).__name__}: {e}")


def _instant_preview(content: Path, style: Path, size: int, folder: Path) -> Optional[dict]:
    """If a bundled model was trained on this very painting, write its picture as preview.jpg."""
    from ..feedforward import load_model, model_for_style, stylize_image
    from ..images import save_atomic

    match = model_for_style(style)
    if match is None:
        return None
    t0 = time.perf_counter()
    model = load_model(match)
    img = stylize_image(model, content, "none", size)
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

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    Worker(settings, index, stop, wake, parent).loop()


class WorkerPool:
    """Starts, watches and stops the worker processes; restarts one that dies."""

    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        ctx = _mp()
        self.stop_event = ctx.Event()
        self.wake_event = ctx.Event()
        self.procs: List[Optional[Any]] = [None] * settings.workers
        self._watch: Optional[threading.Thread] = None
        self._stopping = threading.Event()

    def start(self) -> None:
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
