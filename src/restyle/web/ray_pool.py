"""`restyle serve --ray`: the web app's jobs on a Ray cluster's workers instead of local processes.

The server's RayWorkerPool (WorkerPool's interface: start, wake, pids, stop) starts one
local *bridge* process, which joins the cluster as a Ray driver. The bridge, not the
server, talks to Ray: a driver whose cluster goes away may be ended by Ray itself, and
the server must go on answering. The bridge runs a dispatcher thread per Ray slot
(batch.distributed.plan_workers: one per GPU, else one per N cores, at most
--ray-workers); each claims the next job from the store as a local worker does (the
same queue order, caps and training turns), packs its folder (ray_job.JobPack) and runs
ray_job.run_job_remote as a Ray generator task on one slot's CPUs and GPU, writing what
it yields (progress rows, previews, checkpoints, the end and the result files) into
the store and the job's folder. `max_retries=0`: the dispatcher decides what a loss means.

What each failure does:
- a worker process or node dies mid-job: the task raises; the cluster still answers, so
  the job is queued again with the attempt counted (failed after MAX_ATTEMPTS), as a dead
  local worker's job is, and the next free slot runs it (a training from its last checkpoint);
- the cluster is lost: the job is queued again, not counted, and the bridge exits; the
  server queues what it left running (not counted) and starts another, which says on every
  queued job's page that the cluster is unreachable and tries again every RETRY_S;
- the server stops: the bridge asks the running jobs to stop (a training saves its
  checkpoint, which comes back), queues them again (not counted) and exits. Killed outright,
  the bridge sees its parent gone, writes nothing more and exits; Ray ends the tasks it
  owned, and the next start queues the jobs again (JobStore.recover) and runs them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple

from ..errors import InputError
from .jobs import FAILED, PAINT, STYLIZE, TRAIN, USER, VIDEO, Job, JobStore
from .settings import Settings
from .worker import end_job

LOG = logging.getLogger("restyle.web")  # the bridge's notes (stderr where no handler is set)
RETRY_S = 5.0  # between tries to reach a cluster that is not answering
RESTART_S = 2.0  # before the server starts another bridge after one exits
STOP_S = 20.0  # the bridge's time to stop: the jobs asked to stop, their files back
PROBE_S = 60.0  # `serve --ray`'s start-up check: joining a cluster takes seconds, not minutes
HEALTH_EVERY_S = 2.0  # the bridge checks that the cluster's head answers this often
FLAGS_EVERY_S = 2.0  # the control actor's flags are sent again this often (a restarted actor has none)
EXIT_LOST = 3  # the bridge's exit code when it lost the cluster
WAKE = signal.SIGUSR1  # the server to the bridge: a job was queued
STOP = signal.SIGUSR2  # the server to the bridge: stop (not SIGTERM, whose handler ray.init replaces with its own)
SIGNALS = {STOP, WAKE}


def _mp():
    return mp.get_context("spawn")  # never fork a process that runs uvicorn's threads


class RayWorkerPool:
    """The server's side: starts the bridge process, starts another when it exits, stops it.

    It wakes the bridge with SIGUSR1 and stops it with SIGUSR2, never with a shared
    multiprocessing.Event: a bridge that Ray ends abruptly (a lost head) may die holding
    such an Event's lock, and the server's next set() would then wait for ever.
    """

    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        self.proc: Optional[Any] = None
        self._watch: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._spawning = threading.Lock()

    def start(self) -> None:
        self._spawn()
        self._watch = threading.Thread(target=self._watchdog, name="restyle-ray-watchdog", daemon=True)
        self._watch.start()

    def _spawn(self) -> None:
        proc = _mp().Process(target=bridge_main, args=(self.settings, os.getpid()), name="restyle-ray-bridge",
                             daemon=True)
        # The bridge starts with the two signals blocked (the mask passes through fork and exec): one sent
        # before its handlers are in place waits for them instead of killing it.
        with self._spawning:
            if self._stopping.is_set():  # stop() came first: no new bridge
                return
            old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
            try:
                proc.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
            self.proc = proc

    def _signal(self, sig: int) -> None:
        with self._spawning:
            if self.proc is not None and self.proc.pid is not None and self.proc.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, sig)

    def _watchdog(self) -> None:
        while not self._stopping.wait(1.0):
            if self.proc is not None and not self.proc.is_alive():
                self.store.recover(counted=False)  # its jobs wait for the next bridge: not their fault
                if self._stopping.wait(RESTART_S):
                    return
                self._spawn()

    def wake(self) -> None:
        self._signal(WAKE)

    def pids(self) -> List[int]:
        """The bridge's pid (the jobs' own processes are the cluster's: a job's progress names its pid)."""
        return [self.proc.pid] if self.proc is not None and self.proc.pid is not None else []

    def stop(self, timeout: float = STOP_S + 5) -> None:
        """Ask the bridge to stop (running jobs queued again), then make sure it is gone."""
        self._stopping.set()
        self._signal(STOP)
        if self.proc is not None:
            self.proc.join(timeout)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)
        self.store.recover(counted=False)  # what it could not put back itself
        if self._watch is not None:
            self._watch.join(2)


def bridge_main(settings: Settings, parent: int) -> None:
    """Entry point of the bridge process: SIGUSR2 stops it, SIGUSR1 says a job was queued."""
    stop, wake = threading.Event(), threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the server, which stops us
    signal.signal(STOP, lambda *_: stop.set())
    signal.signal(WAKE, lambda *_: wake.set())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    code = Bridge(settings, stop, wake, parent).run()
    if code == EXIT_LOST:  # Ray's own shutdown would wait for the lost cluster: leave at once
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)  # this process's exit status, as multiprocessing reports it to the server


class Bridge:
    """Joins the cluster, runs the dispatchers and the flags they share with the jobs, and stops them."""

    def __init__(self, settings: Settings, stop: Any, wake: Any, parent: int) -> None:
        self.settings, self.stop, self.wake, self.parent = settings, stop, wake, parent
        self.store = JobStore(settings.db_path, settings.jobs_dir)
        self.lock = threading.Lock()
        self.running: Dict[str, Tuple[Job, Any]] = {}  # job id -> (job, its task's generator)
        self.lost = threading.Event()
        self.ray: Any = None
        self._photos: Optional[Tuple[str, List[Any]]] = None

    def orphaned(self) -> bool:
        """The server is gone (killed outright): a new one may own the jobs now, so write nothing more."""
        return os.getppid() != self.parent

    def stopping(self) -> bool:
        return self.stop.is_set() or self.orphaned() or self.lost.is_set()

    def run(self) -> int:
        plan = self.join()
        if plan is None:
            return 0
        from .ray_job import JobControl, run_job_remote

        ray, (slots, cpus, gpus) = self.ray, plan
        self.cpus = cpus
        self.task = ray.remote(run_job_remote).options(num_cpus=cpus, num_gpus=gpus, max_retries=0,
                                                       num_returns="streaming")
        self.control_name = f"restyle-web-control-{uuid.uuid4().hex}"
        self.control = ray.remote(num_cpus=0, max_restarts=-1)(JobControl).options(name=self.control_name).remote()
        threads = [threading.Thread(target=self.dispatch_loop, args=(i,), name=f"restyle-dispatch-{i}", daemon=True)
                   for i in range(slots)]
        for t in threads:
            t.start()
        sent: Dict[str, Any] = {}
        last = checked = 0.0
        gcs = ray.get_runtime_context().gcs_address
        while not self.stopping():
            sent, last = self.push_flags(sent, last)
            if time.monotonic() - checked >= HEALTH_EVERY_S:  # Ray itself waits a minute for a lost head
                checked = time.monotonic()
                if not self.head_answers(gcs):
                    self.lost.set()
            self.stop.wait(max(0.2, self.settings.progress_interval))
        if not self.lost.is_set():
            self.push_flags(sent, last)  # "stop": each job ends at its next check and sends its files
            deadline = time.monotonic() + STOP_S - 2
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
        with self.lock:
            left = list(self.running.items())
        for job_id, (_, gen) in left:
            if not self.lost.is_set():
                with contextlib.suppress(Exception):
                    ray.cancel(gen, force=True)
            if not self.orphaned():
                self.store.requeue(job_id)  # not an attempt lost
        return EXIT_LOST if self.lost.is_set() else 0

    def head_answers(self, gcs: str, tries: int = 2) -> bool:
        """Whether the cluster's head (its GCS port) takes a TCP connection, within `tries` tries."""
        from ..batch.cluster import check_reachable

        for _ in range(tries):
            try:
                check_reachable(gcs, timeout_s=2.0)
                return True
            except InputError:
                self.stop.wait(1.0)
        return False

    def join(self) -> Optional[Tuple[int, int, int]]:
        """Join the cluster, saying on the queued jobs' pages while it does not answer; the slots plan."""
        from ..batch.cluster import connect, import_ray
        from ..batch.distributed import plan_workers

        self.ray = ray = import_ray()
        s = self.settings
        while not self.stopping():
            try:
                connect(None if s.ray_address == "local" else s.ray_address)
                nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
                plan = plan_workers(nodes, s.ray_cpus_per_worker, s.ray_workers, s.devices[0])
                self.store.note_queued(None)
                return plan
            except Exception as e:  # noqa: BLE001 - unreachable, or no room for a worker: say it, try again
                with contextlib.suppress(Exception):
                    ray.shutdown()
                why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                self.store.note_queued(f"waiting for the Ray cluster, which does not answer: {why}")
                self.stop.wait(RETRY_S)
        return None

    def push_flags(self, sent: Dict[str, Any], last: float) -> Tuple[Dict[str, Any], float]:
        """Each running job's flags (cancelled by its owner, server stopping, others waiting) to the control actor."""
        with self.lock:
            jobs = [job for job, _ in self.running.values()]
        stop = self.stop.is_set()
        flags = {j.id: {"cancel": self.store.cancel_requested(j.id), "stop": stop,
                        "waiting": j.task == TRAIN and self.store.others_waiting(j.id)} for j in jobs}
        if flags != sent or time.monotonic() - last >= FLAGS_EVERY_S:
            with contextlib.suppress(Exception):
                self.control.update.remote(flags)
            return flags, time.monotonic()
        return sent, last

    def dispatch_loop(self, slot: int) -> None:
        while not self.stopping():
            job = self.store.claim(slot)
            if job is None:
                self.wake.wait(1.0)
                self.wake.clear()
                continue
            try:
                self.dispatch(slot, job)
            except Exception as e:  # noqa: BLE001 - a bug here must not end the slot nor strand the job
                LOG.error("restyle: dispatching job %s failed (%s: %s); queued again", job.id[:8], type(e).__name__, e)
                with contextlib.suppress(Exception):
                    self.store.recover(worker=slot)

    def dispatch(self, slot: int, job: Job) -> None:
        """Run one claimed job on the cluster; every way it can end is written to the store."""
        ray = self.ray
        if self.stopping():  # claimed as the bridge began to stop
            if not self.orphaned():
                self.store.requeue(job.id)
            return
        try:
            pack, photos = self.pack(job)
        except OSError as e:
            self.store.finish(job.id, FAILED, error=f"cannot read the job's files: {e.strerror or e}")
            return
        self.store.set_progress(job.id, {"notice": "waiting for a free Ray worker"})
        ended, where = False, {}
        try:
            gen = self.task.remote(self.settings, pack, photos, self.control_name, self.cpus)
            with self.lock:
                self.running[job.id] = (job, gen)
            for ref in gen:
                message = ray.get(ref)
                if self.orphaned():
                    return
                if message[0] == "started":
                    where = message[1]
                try:
                    ended = self.receive(job, message, where)
                except OSError as e:  # this machine's disk, not the cluster
                    with contextlib.suppress(Exception):
                        ray.cancel(gen, force=True)
                    self.store.finish(job.id, FAILED, error=f"cannot write the job's files: {e.strerror or e}")
                    return
        except ray.exceptions.TaskCancelledError:
            pass  # cancelled by the stop in run(), which queues the job again
        except ray.exceptions.RayTaskError as e:  # the task's own code failed outside the job (e.g. a full disk)
            cause = getattr(e, "cause", None) or e
            self.store.finish(job.id, FAILED, error=f"internal error: {type(cause).__name__}: {cause}")
            ended = True
        except Exception as e:  # noqa: BLE001 - a RayError: the worker, its node or the whole cluster is gone
            self.lose(slot, job, e)
            ended = True
        finally:
            with self.lock:
                self.running.pop(job.id, None)
        if not ended and not self.orphaned() and not self.stop.is_set():
            self.store.recover(worker=slot)  # it ended without a word: as a lost worker's run

    def lose(self, slot: int, job: Job, error: Exception) -> None:
        """The task died with its worker: queued again, counted; unless the cluster itself is gone."""
        if self.stop.is_set():  # cancelled by the stop in run(): not an attempt lost
            self.store.requeue(job.id)
        elif self.cluster_answers():
            self.store.recover(worker=slot)  # counted, as a dead local worker's job (MAX_ATTEMPTS)
            LOG.warning("restyle: the Ray worker running job %s was lost (%s); queued again", job.id[:8],
                        type(error).__name__)
        else:
            self.store.requeue(job.id)  # not its fault
            self.lost.set()

    def cluster_answers(self) -> bool:
        try:
            return any(n.get("Alive") for n in self.ray.nodes())
        except Exception:  # noqa: BLE001 - no answer is the answer
            return False

    def receive(self, job: Job, message: Tuple[Any, ...], where: Dict[str, Any]) -> bool:
        """Write one message of a job's task into the store and its folder; True at its end."""
        from ..images import write_bytes_atomic
        from .ray_job import write_files

        folder = self.store.folder(job.id)
        kind = message[0]
        if kind == "started":
            self.store.set_progress(job.id, {"ray": where})
        elif kind == "progress":
            _, row, preview = message
            if preview is not None:
                write_bytes_atomic(preview, folder / "preview.jpg")
            self.store.set_progress(job.id, dict(row, ray=where), preview=preview is not None)
        elif kind == "file":
            write_files({message[1]: message[2]}, folder)
        elif kind == "end":
            _, state, error, report, files = message
            write_files(files, folder)  # the results first: a job marked done has them
            end_job(self.store, job.id, state, error=error, report=report)
            return True
        return False

    def pack(self, job: Job) -> Tuple[Any, Optional[Tuple[str, List[Any]]]]:
        """The job's folder and the trained models it needs (ray_job.JobPack); the photos, for a training."""
        from ..hashing import sha256sum
        from .ray_job import JobPack, folder_files
        from .trained import ANY_PAINTING, bundled_models, trained_model, visitor_models

        folder = self.store.folder(job.id)
        files = folder_files(folder, skip=("preview.jpg",))
        models: Dict[str, bytes] = {}
        own: Tuple[str, ...] = ()
        key = job.params.get("model")
        if (job.task in (STYLIZE, VIDEO) and isinstance(key, str) and len(key) <= 64
                and key != ANY_PAINTING and key not in bundled_models()):
            path = trained_model(self.store, key)
            if path is not None:
                models[f"{key}/{path.name}"] = path.read_bytes()
        elif job.task == PAINT and job.kind == USER:  # the owner's models that know this painting
            digest = sha256sum(folder / job.style_file)
            mine = [m for m in visitor_models(self.store, job.owner) if m.style_sha256 in (None, digest)]
            models.update({f"{m.key}/{m.path.name}": m.path.read_bytes() for m in mine})
            own = tuple(m.key for m in mine)
        return JobPack(job, files, models, own), self.photos() if job.task == TRAIN else None

    def photos(self) -> Optional[Tuple[str, List[Any]]]:
        """The training photos in the object store, put once per bridge (digest, [ref]); None without any."""
        from .ray_job import folder_files

        with self.lock:
            d = self.settings.photos_dir
            if self._photos is None and d is not None and d.is_dir():
                files = folder_files(d)
                h = hashlib.sha256()
                for name, data in files.items():
                    h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
                self._photos = (h.hexdigest(), [self.ray.put(files)])  # in a list: the worker gets it if needed
            return self._photos


def check_cluster(settings: Settings, timeout: float = PROBE_S) -> str:
    """`serve --ray`'s start-up check: what the cluster offers, or InputError in one line if none answers."""
    import importlib.util

    from ..batch.cluster import check_address, check_reachable

    address = check_address(settings.ray_address)
    if importlib.util.find_spec("ray") is None:
        raise InputError("--ray needs Ray: pip install 'restyle[ray]'")
    if address in (None, "local"):
        return "a Ray instance started on this machine by the server"
    if address not in (None, "local", "auto"):
        check_reachable(address)  # a closed port: said in a moment, not after Ray's own retries
    ctx = _mp()
    receiver, sender = ctx.Pipe(duplex=False)
    probe = ctx.Process(target=_probe, args=(settings, sender), name="restyle-ray-probe", daemon=True)
    probe.start()
    ok, text = receiver.recv() if receiver.poll(timeout) else (False, f"no answer within {timeout:g} s")
    probe.join(5)
    if probe.is_alive():
        probe.kill()
    if not ok:
        raise InputError(text if text.startswith("cannot reach") else f"Ray cluster at {address}: {text}")
    return text


def _probe(settings: Settings, sender: Any) -> None:
    """In a process of its own (a driver that joined stays one): join, plan the slots, leave."""
    try:
        from ..batch.cluster import connect, import_ray
        from ..batch.distributed import plan_workers

        ray = import_ray()
        connect(None if settings.ray_address == "local" else settings.ray_address)
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        slots, cpus, gpus = plan_workers(nodes, settings.ray_cpus_per_worker, settings.ray_workers,
                                         settings.devices[0])
        ray.shutdown()
        each = f"{cpus} CPU(s)" + (" and a GPU" if gpus else "")
        sender.send((True, f"{len(nodes)} node(s); {slots} job(s) at once, each on {each}"))
    except Exception as e:  # noqa: BLE001 - said in one line by check_cluster
        sender.send((False, (str(e).strip().splitlines() or [type(e).__name__])[0][:300]))
