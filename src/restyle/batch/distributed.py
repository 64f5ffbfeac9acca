"""Batch mode on a Ray cluster: the same pairs, the same paint_pair() call, on many workers.

    report = run_batch_ray(["photos/"], ["starry.jpg", "scream.jpg"], "out/", StylizeConfig(),
                           address="auto")
    report = run_model_batch_ray(["photos/"], "starry.pt", "out/", address="auto")   # a trained network
    report = train_styles_ray(["a.jpg", "b.jpg"], "photos/", "models/", TrainConfig())  # a model per style

(video/on_ray.py runs a clip's chunks on the same workers, through the same driver.)

Ray's idiom: one actor per device (a GPU, or N CPU cores), each holding a Painter
(the network and the style-target cache), so each style's targets are computed once
per worker, not once per photo. The driver hands each idle actor the next pair;
actors report progress to a small board actor that the driver polls.

Faults (driver.py, the one driver of every Ray job). A worker whose process dies (killed,
out of memory, node lost) is restarted by Ray (`max_restarts`) and the pair it was painting
runs again on it (`max_task_retries`); the board counts each pair's starts, so the driver
sees and reports every loss. When Ray gives up on a worker, the driver stops using it and
queues its pair for the others (at most MAX_ATTEMPTS runs of one pair). Outputs are written
atomically by paint_pair(), so a killed worker leaves no half-written file. A bad input is
not a fault: paint_pair() returns a failed outcome, which is not retried.

Paths must be readable and writable under the same names on every node (a shared
folder). `ray` is imported only here and in cluster.py (connect), and only when a Ray batch runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ..config import StylizeConfig
from ..errors import InputError, ResourceError, RestyleError
from ..events import BatchProgress
from ..images import PathLike, sidecar_path, write_bytes_atomic
from .cluster import check_address, connect, import_ray
from .driver import MAX_ATTEMPTS, Driver, Failed, ProgressBoard, Settled, cancel_tasks
from .local import (BatchOptions, BatchReport, PairOutcome, PairTask, pair_key, paint_pair, plan_batch,
                    step_fraction, this_node)
from .transport import Copies, CopiedPair, Paths, Returned

MAX_RESTARTS = 3  # restarts of one worker actor before the driver stops using it
REPORT_EVERY_S = 0.25  # a worker's progress reports at most this often (and at each pair's first iteration)
class RayWorker:
    """Base of restyle's Ray actors (wrapped at run time by ray.remote): set up once, then one task per call.

    A subclass builds its model in setup() and does one task in work(); this class counts
    the attempts, reports progress and says where it runs. The extension point for other
    kinds of work (feed-forward models, video chunks, training one model per style).
    """

    def __init__(self, *args: Any, threads: int, board: str) -> None:
        import ray
        import torch

        if threads:
            torch.set_num_threads(threads)  # Ray's share of cores; CPU results depend on the thread count
        # The board by name: a handle among the arguments would live in the object store,
        # and a restart after it was freed would fail (ray-project/ray#53727).
        self.board = ray.get_actor(board)
        self.node = dict(this_node(), ray_node=ray.get_runtime_context().get_node_id())
        self.gpu_ids = list(ray.get_gpu_ids())  # Ray set CUDA_VISIBLE_DEVICES to these: cuda:0 is the first
        self.error: Optional[RestyleError] = None
        try:
            self.setup(*args)
        except RestyleError as e:  # no weights, no such device: said once by the driver
            self.error = e

    def setup(self, *args: Any) -> None:
        raise NotImplementedError

    def device(self, name: str) -> str:
        """The device to use here for the driver's `name`: "cuda:1" is "cuda" in an actor Ray gave a GPU."""
        from ..device import worker_device

        return worker_device(name, self.gpu_ids)

    def work(self, task: Any, attempt: int, callback: Callable[[Any], None]) -> Any:
        raise NotImplementedError

    def info(self) -> Tuple[Dict[str, Any], Optional[RestyleError]]:
        return self.node, self.error

    def run(self, task: Any) -> Any:
        import ray

        # The board counts the starts: a task Ray retried after its worker died starts again here.
        attempt = ray.get(self.board.started.remote(task.index, self.node["host"], self.node["pid"]))
        last = [0.0]

        def report(event: Any) -> None:
            fraction = step_fraction(event)  # an optimiser's Iterate, a training's TrainStep
            if fraction is not None:
                now = time.monotonic()
                if event.step == 1 or fraction == 1 or now - last[0] >= REPORT_EVERY_S:
                    last[0] = now
                    self.board.progress.remote(task.index, fraction)

        return self.work(task, attempt, report)


class BatchWorker(RayWorker):
    """Paints (content, style) pairs with one Painter: the network and the style-target cache."""

    def setup(self, cfg: StylizeConfig, weights: Optional[PathLike], sidecar: bool) -> None:
        from ..optimiser.engine import make_painter

        self.cfg, self.weights, self.sidecar = cfg.replace(device=self.device(cfg.device)), weights, sidecar
        self.painter = make_painter(self.cfg, weights)
        self.copies = Path(tempfile.mkdtemp(prefix="restyle-ray-"))  # copy mode's inputs and outputs

    def work(self, task: Any, attempt: int, callback: Callable[[Any], None]) -> Any:
        if isinstance(task, CopiedPair):
            return self.work_on_copies(task, attempt, callback)
        return paint_pair(task, self.cfg, self.painter, weights=self.weights, sidecar=self.sidecar,
                          node=self.node, attempt=attempt, callback=callback)

    def work_on_copies(self, pair: CopiedPair, attempt: int, callback: Callable[[Any], None]) -> Returned:
        import ray

        named = pair.task
        # Files named by their bytes' hash: a style keeps one path, so its targets stay cached.
        content, style = (self.copy_in(ray.get(ref), path.suffix)
                          for ref, path in ((pair.content, named.content), (pair.style, named.style)))
        (self.copies / "out").mkdir(exist_ok=True)
        task = PairTask(named.index, content, style, self.copies / "out" / named.output.name)
        try:
            if pair.done_key and pair_key(task, self.cfg, self.painter.key) == pair.done_key:
                return PairOutcome(named, "skipped", node=self.node, attempts=attempt), None, None
            outcome = paint_pair(task, self.cfg, self.painter, weights=self.weights, sidecar=self.sidecar,
                                 node=self.node, attempt=attempt, callback=callback, names=named)
            outcome.task = named
            for copy, path in ((content, named.content), (style, named.style)):  # errors name the user's files
                outcome.error = outcome.error.replace(str(copy), str(path))
            if outcome.status != "done":
                return outcome, None, None
            side = sidecar_path(task.output)
            return outcome, task.output.read_bytes(), side.read_text(encoding="utf-8") if self.sidecar else None
        finally:
            content.unlink(missing_ok=True)  # a photo is used once; styles stay for the next pairs
            shutil.rmtree(self.copies / "out", ignore_errors=True)

    def copy_in(self, data: bytes, suffix: str) -> Path:
        import hashlib

        path = self.copies / f"{hashlib.sha256(data).hexdigest()}{suffix}"
        if not path.exists():
            write_bytes_atomic(data, path)
        return path


class ModelWorker(RayWorker):
    """Stylizes photos with one trained network, loaded once per worker."""

    def setup(self, model: str, device: str, precision: str, preserve_colors: str, size: Optional[int],
              sidecar: bool, weights: Optional[str] = None) -> None:
        from ..networks.feedforward import open_model

        self.model = open_model(model, device=self.device(device), precision=precision, weights=weights)
        self.settings = (preserve_colors, size)
        self.sidecar = sidecar

    def work(self, task: Any, attempt: int, callback: Callable[[Any], None]) -> Any:
        from .model_batch import stylize_photo

        return stylize_photo(task, self.model, *self.settings, sidecar=self.sidecar, node=self.node, attempt=attempt)


class TrainWorker(RayWorker):
    """Trains one style's network per call (the photos folder and settings are the batch's)."""

    def setup(self, photos: str, config: Any, device: str, weights: Optional[str]) -> None:
        self.photos, self.config, self.where, self.weights = photos, config, self.device(device), weights

    def work(self, task: Any, attempt: int, callback: Callable[[Any], None]) -> Any:
        from .model_batch import train_style

        return train_style(task, self.photos, self.config, device=self.where, weights=self.weights, node=self.node,
                           attempt=attempt, callback=callback)


def uses_gpus(device: str) -> bool:
    """Whether workers for `device` want a GPU each: "auto" (where the cluster has GPUs) and "cuda[:N]"."""
    return device == "auto" or device == "cuda" or device.startswith("cuda:")


def plan_workers(nodes: Sequence[Dict[str, float]], cpus_per_worker: Optional[int] = None,
                 workers: Optional[int] = None, device: str = "auto") -> Tuple[int, int, int]:
    """(workers, cpus each, gpus each) for the alive nodes' resources: a worker per GPU, else per N cores.

    A "cpu" (or "mps") run takes no GPU. A GPU worker gets its node's CPUs shared among its
    GPUs: its CPU side (decoding, optical flow, PNG encoding, the optimiser's host work)
    should not queue on one core beside an idle GPU.
    """
    gpu_nodes = [n for n in nodes if int(n.get("GPU", 0)) > 0] if uses_gpus(device) else []
    gpus = sum(int(n.get("GPU", 0)) for n in gpu_nodes)
    if cpus_per_worker is not None and cpus_per_worker < 1:
        raise InputError(f"cpus per worker {cpus_per_worker} must be >= 1")
    if workers is not None and workers < 1:
        raise InputError(f"workers {workers} must be >= 1")
    if gpus:
        share = min(int(n.get("CPU", 0)) // int(n["GPU"]) for n in gpu_nodes)
        cpus, gpu_each = cpus_per_worker or max(1, share), 1
        fit = sum(min(int(n["GPU"]), int(n.get("CPU", 0)) // cpus) for n in gpu_nodes)
    else:
        biggest = max((int(n.get("CPU", 0)) for n in nodes), default=0)
        cpus = cpus_per_worker or max(1, min(4, biggest))
        fit = sum(int(n.get("CPU", 0)) // cpus for n in nodes)
        gpu_each = 0
    if fit < 1:
        raise ResourceError(f"the Ray cluster has no node with {cpus} free CPU(s) for a worker; "
                            "lower --ray-cpus-per-worker")
    return min(fit, workers or fit), cpus, gpu_each


def run_batch_ray(
    contents: Sequence[PathLike],
    styles: Sequence[PathLike],
    out_dir: PathLike,
    config: Optional[StylizeConfig] = None,
    *,
    address: Optional[str] = None,
    workers: Optional[int] = None,
    cpus_per_worker: Optional[int] = None,
    copy: bool = False,
    **options: Any,
) -> BatchReport:
    """run_batch() on Ray workers; `address` as for connect(). Emits PairStarted and BatchProgress.

    `options` are run_batch's (batch.BatchOptions: suffix, weights, sidecar, callback).
    `copy`: send the files through Ray's object store and write the results here, for a
    cluster whose nodes cannot see this machine's folders (a laptop joining with ray://).
    """
    cfg, o = config or StylizeConfig(), BatchOptions(**options)
    check_address(address)
    tasks = plan_batch(contents, styles, out_dir, cfg, o.suffix)  # bad input: refused before any cluster
    return run_on_ray(tasks, BatchWorker, (cfg, None if o.weights is None else os.fspath(o.weights), o.sidecar),
                      callback=o.callback, address=address, workers=workers, cpus_per_worker=cpus_per_worker,
                      transport=Copies if copy else Paths, device=cfg.device)


def run_model_batch_ray(
    contents: Sequence[PathLike],
    model: str,
    out_dir: PathLike,
    preserve_colors: str = "none",
    size: Optional[int] = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    sidecar: bool = True,
    weights: Optional[PathLike] = None,
    **ray_options: Any,
) -> BatchReport:
    """model_batch.run_model_batch() on Ray workers, each holding the network `model` (a bundled name or a .pt
    path every node can read; `weights`: the VGG-19 a PhotoStyled file reads photos with, default the bundled);
    `ray_options` as for run_on_ray (address, workers, cpus_per_worker, callback)."""
    from ..models.modelfile import resolve_model
    from .model_batch import plan_photos

    check_address(ray_options.get("address"))
    tasks = plan_photos(contents, resolve_model(model).stem, out_dir)  # bad input: refused before any cluster
    return run_on_ray(tasks, ModelWorker, (str(model), device, precision, preserve_colors, size, sidecar,
                                           None if weights is None else os.fspath(weights)),
                      device=device, **ray_options)


def train_styles_ray(
    styles: Sequence[PathLike],
    photos: PathLike,
    out_dir: PathLike,
    config: Any,
    *,
    device: str = "cpu",
    weights: Optional[PathLike] = None,
    **ray_options: Any,
) -> BatchReport:
    """model_batch.train_styles() on Ray workers: one model per painting, each trained by one worker."""
    from .model_batch import check_photos, plan_styles

    check_address(ray_options.get("address"))
    check_photos(photos, config)
    tasks = plan_styles(styles, out_dir)  # bad input: refused before any cluster
    return run_on_ray(tasks, TrainWorker, (os.fspath(photos), config, device,
                                           None if weights is None else os.fspath(weights)), device=device,
                      **ray_options)


def run_on_ray(
    tasks: List[Any],
    worker_cls: type,
    worker_args: Tuple[Any, ...],
    *,
    callback: Optional[Callable[[Any], None]] = None,
    address: Optional[str] = None,
    workers: Optional[int] = None,
    cpus_per_worker: Optional[int] = None,
    transport: type = Paths,
    device: str = "auto",
) -> BatchReport:
    """Run `tasks` (each with .index and .label) on actors of a RayWorker subclass, one task per call.

    `transport(ray)` turns a task into the worker's argument (send) and its result into an outcome (receive);
    `device` (the run's --device) decides whether the workers take GPUs (plan_workers).
    """
    with ray_workers(worker_cls, worker_args, len(tasks), address=address, workers=workers,
                     cpus_per_worker=cpus_per_worker, device=device) as (ray, actors, board):
        return _drive(ray, actors, board, tasks, callback or (lambda event: None), transport(ray))


@contextlib.contextmanager
def ray_workers(worker_cls: type, worker_args: Tuple[Any, ...], most: int, *, address: Optional[str] = None,
                workers: Optional[int] = None, cpus_per_worker: Optional[int] = None,
                device: str = "auto") -> Iterator[Tuple[Any, List[Any], Any]]:
    """(ray, actors, board): at most `most` actors of a RayWorker subclass, set up and checked; all gone on exit.

    Connects to Ray (or starts it, and then stops it on exit) as connect() does.
    """
    ray = import_ray()
    started = connect(address)
    actors: List[Any] = []
    board = None
    asked: List[Any] = []  # the workers' info() calls
    try:
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        n_workers, cpus, gpus = plan_workers(nodes, cpus_per_worker, workers, device)
        n_workers = min(n_workers, most) or 1
        board_name = f"restyle-board-{uuid.uuid4().hex}"
        board = ray.remote(num_cpus=0)(ProgressBoard).options(name=board_name).remote()
        # A worker that dies is restarted and its task run again by Ray; the board's start
        # counts tell the driver, which reports each loss.
        actor_cls = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=MAX_RESTARTS,
                               max_task_retries=MAX_ATTEMPTS - 1)(worker_cls)
        actors = [actor_cls.remote(*worker_args, threads=cpus, board=board_name) for _ in range(n_workers)]
        asked = [a.info.remote() for a in actors]
        for _node, error in ray.get(asked):
            if error is not None:
                raise error
        yield ray, actors, board
    finally:
        cancel_tasks(ray, asked)  # Ctrl-C while the workers set up
        for a in actors + ([board] if board is not None else []):
            ray.kill(a)
        if started:
            ray.shutdown()


def _drive(ray: Any, actors: List[Any], board: Any, tasks: List[Any], emit: Callable[[Any], None],
           transport: Any) -> BatchReport:
    """The batch through a Driver (driver.py: re-queues and counts a lost worker's pair); outcomes in task order."""

    def send(task: Any) -> Any:
        sent = transport.send(task)
        return Settled(sent) if isinstance(sent, PairOutcome) else sent  # failed before it left

    driver = Driver(ray, actors, board, send=send, receive=transport.receive, emit=emit, noun="pair",
                    verb="painting")
    for task in tasks:
        driver.put(task)
    outcomes: Dict[int, PairOutcome] = {}
    total = len(tasks)
    try:
        while driver.pending:
            for task, result in driver.step():
                if isinstance(result, Failed):
                    result = PairOutcome(task, "failed", result.error, 1, attempts=result.attempts)
                outcomes[task.index] = result
                emit(BatchProgress(len(outcomes), total, 0.0, result))
            emit(BatchProgress(len(outcomes), total, driver.running_fraction))
    finally:
        driver.cancel()  # Ctrl-C or an error: the pairs still painting are not rerun
    return BatchReport([outcomes[t.index] for t in tasks], driver.lost)
