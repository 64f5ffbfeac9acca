"""The any-painting network trained data-parallel on Ray Train: one global batch a step, shared by N workers.

    path = train_arbitrary_ray("paintings/", ["photos/"], "arb.pt", ArbitraryTrainConfig(), address="auto",
                               workers=2)

Ray Train's TorchTrainer starts N workers in one torch.distributed group (gloo on CPUs,
NCCL on GPUs). Each runs the local recipe (networks/arbitrary_training.py) under the one
training loop (networks/training.fit) with two changes, made by `DataParallel`:

- its batch is its share of the local run's batch: every worker draws the step's whole
  batch from (seed, step), as a local run does, and keeps its part of the paintings
  (ArbitraryRecipe.shard), so the parts together are the local run's batch;
- its loss is share x the part's loss, and before each optimiser step the gradients are
  summed over the workers (one all_reduce of one flat tensor): every worker then holds
  the gradient of the whole batch's loss and takes the same step. The loss values the
  loop sees (history, divergence check) are the whole batch's, summed the same way.

An explicit all_reduce rather than DistributedDataParallel: the recipe calls the network's
encode() and forward() separately, which DDP's forward hooks do not see.

Checkpoints go through Ray Train: at each checkpoint step worker 0 reports its checkpoint
file (the one model-file format) with `ray.train.report`; when a worker is lost, Ray Train
restarts the group (FailureConfig(max_failures)) and every worker resumes from the last
reported one (`ray.train.get_checkpoint`). The last report carries the model file, its
checkpoint and its sidecar, which the driver writes where a local run writes them.

Paths must be readable under the same names on every node (a shared folder), as for the
batches; Ray Train's storage is a folder beside the output (removed after a run that ends well).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from ..errors import InputError, ResourceError, RestyleError
from ..events import TrainCheckpoint, TrainDone, TrainEvent, TrainPreview, TrainStart, TrainStep
from ..images import PathLike
from .cluster import check_address, connect, import_ray
from .distributed import plan_workers, uses_gpus

MAX_FAILURES = 3  # restarts of the worker group (a worker lost) before the run fails
CHECKPOINT = "checkpoint.pt"  # the checkpoint file's name inside a Ray Train checkpoint


class SummedGradients:
    """An optimiser whose step() first sums each gradient over the process group (the rest is the optimiser's)."""

    def __init__(self, optimizer: Any) -> None:
        self.optimizer = optimizer

    def step(self, closure: Any = None) -> Any:
        import torch
        import torch.distributed as dist

        grads = [p.grad for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)  # SUM
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
        return self.optimizer.step(closure)

    def __getattr__(self, name: str) -> Any:  # zero_grad, state_dict, load_state_dict, param_groups
        return getattr(self.optimizer, name)


class DataParallel:
    """A recipe as worker `rank` of `world`: its share of every batch, the gradients summed over the group.

    Duck-typed as a training.Recipe; the rest (preview, history rows, save, sidecar) is the recipe's.
    """

    def __init__(self, recipe: Any, rank: int, world: int) -> None:
        self.recipe, self.rank, self.world = recipe, rank, world
        self.net, self.scheduler = recipe.net, recipe.scheduler
        self.optimizer = SummedGradients(recipe.optimizer)

    def batch(self, step: int) -> Any:
        return self.recipe.shard(self.recipe.batch(step), self.rank, self.world)

    def loss(self, batch: Any) -> Tuple[Any, Dict[str, Any]]:
        import torch
        import torch.distributed as dist

        part, share = batch
        loss, terms = self.recipe.loss(part)
        mine = [t * share for t in (loss, *terms.values())]
        whole = torch.stack([t.detach().float() for t in mine])
        dist.all_reduce(whole)  # the whole batch's loss and terms
        # Each value is the whole batch's; each gradient is this worker's share (summed in SummedGradients).
        out = [t + (w - t.detach()) for t, w in zip(mine, whole)]
        return out[0], dict(zip(terms, out[1:]))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.recipe, name)


def _train_worker(config: Dict[str, Any]) -> None:
    """One Ray Train worker: the recipe's share of each step; worker 0 reports the checkpoints and the model."""
    import ray.train
    import ray.train.torch
    import torch

    from ..models.modelfile import read_model_file, sidecar_of
    from ..networks.arbitrary_training import FAMILY, arbitrary_recipe, checkpoint_state, prepare_run
    from ..networks.training import fit

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = config["cfg"]
    if not cfg.threads:
        torch.set_num_threads(config["threads"])  # Ray's share of cores; CPU results depend on the thread count
    device = str(ray.train.torch.get_device()) if config["gpus"] else "cpu"
    run = prepare_run(config["paintings"], config["photos"], config["output"], cfg, device=device,
                      weights=config["weights"], log=lambda s: None)  # the styles: OUT.styles.pt, made by the driver
    reported = ray.train.get_checkpoint()
    recipe, state = arbitrary_recipe(config["paintings"], config["photos"], run, cfg,
                                     resume=config["resume"] and reported is None)
    if reported is not None:  # a restarted group: on from the last checkpoint worker 0 reported
        with reported.as_directory() as d:
            payload = read_model_file(Path(d) / CHECKPOINT, FAMILY)
        recipe.net.load_state_dict(payload["state_dict"])
        state = checkpoint_state(payload)
    recipe.info["data_parallel"] = {"workers": world, "backend": "nccl" if config["gpus"] else "gloo"}
    work = Path(tempfile.mkdtemp(prefix="restyle-train-"))
    out = work / Path(config["output"]).name

    def report(step: int, files: Sequence[Path]) -> None:
        """Every worker reports (Ray Train's barrier); worker 0 with the files as the checkpoint."""
        if rank != 0:
            ray.train.report({"step": step})
            return
        folder = Path(tempfile.mkdtemp(dir=work))
        for f in files:
            shutil.copy2(f, folder / (CHECKPOINT if f.name.endswith(".ckpt.pt") else f.name))
        ray.train.report({"step": step}, checkpoint=ray.train.Checkpoint.from_directory(str(folder)))
        shutil.rmtree(folder)

    def on_event(event: TrainEvent) -> None:
        if config["on_worker"] is not None:
            config["on_worker"](rank, event)
        if isinstance(event, TrainCheckpoint) and event.step < cfg.steps:  # the last one travels with the model
            report(event.step, [event.path])
        if rank == 0 and isinstance(event, (TrainStep, TrainPreview, TrainCheckpoint)):
            config["progress"].put(event)  # to the driver's callback (progress.py's ProgressQueue)

    try:  # worker 0 draws the previews (of the whole network: every worker holds the same)
        fit(DataParallel(recipe, rank, world), out, steps=cfg.steps, checkpoint_every=cfg.checkpoint_every,
            preview_every=cfg.preview_every if rank == 0 else 0, resume=state, callback=on_event)
        ckpt = out.with_name(out.stem + ".ckpt" + out.suffix)
        report(cfg.steps, [out, sidecar_of(out), ckpt])
    finally:
        shutil.rmtree(work, ignore_errors=True)


class Relay:
    """While a training runs on Ray: worker 0's events from `queue` to `emit`, on a thread of their own.

    Each step (and preview, and checkpoint) goes out once: a group restarted from a checkpoint
    repeats steps the callback has seen. A checkpoint's path is said as where it is, inside Ray Train's `storage` folder, but
    for the `last` (the run's end), which the driver writes where a local run writes it.
    """

    def __init__(self, queue: Any, emit: Callable[[TrainEvent], None], storage: Path, last: TrainCheckpoint) -> None:
        self.queue, self.emit, self.storage, self.final = queue, emit, storage, last
        self.last: Dict[type, int] = {}  # the last step of each kind of event sent on
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, name="restyle-train-progress", daemon=True)

    def __enter__(self) -> "Relay":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.done.set()
        self.thread.join(timeout=10)

    def run(self) -> None:
        from ray.util.queue import Empty

        while True:
            try:
                event = self.queue.get(timeout=0.5)
            except Empty:
                if self.done.is_set():
                    return
                continue
            except Exception:  # the queue's actor gone with the cluster: the training says why
                return
            self.forward(event)

    def forward(self, event: TrainEvent) -> None:
        kind = type(event)
        if event.step <= self.last.get(kind, -1):  # seen before the group restarted
            return
        self.last[kind] = event.step
        if isinstance(event, TrainCheckpoint):
            event = self.final if event.step == self.final.step else dataclasses.replace(event, path=self.storage)
        self.emit(event)


def check_workers(workers: Optional[int], paintings_per_step: int) -> None:
    """At least one worker, and no more than the paintings of a step (each worker paints whole paintings)."""
    if workers is not None and not 1 <= workers <= paintings_per_step:
        raise InputError(f"--workers {workers} must be in [1, {paintings_per_step}]: each worker takes at least one "
                         f"of a step's paintings_per_step {paintings_per_step} paintings")


def train_arbitrary_ray(
    paintings: PathLike,
    photos: Sequence[PathLike],
    output: PathLike,
    config: Any,
    *,
    resume: bool = False,
    device: str = "cpu",
    weights: Optional[PathLike] = None,
    address: Optional[str] = None,
    workers: Optional[int] = None,
    cpus_per_worker: Optional[int] = None,
    max_failures: int = MAX_FAILURES,
    callback: Optional[Callable[[TrainEvent], None]] = None,
    on_worker: Optional[Callable[[int, TrainEvent], None]] = None,
    log: Callable[[str], None] = lambda s: None,
) -> Path:
    """train_arbitrary() on `workers` Ray Train workers (default: as many as fit, at most paintings_per_step).

    The model file, checkpoint and sidecar a local run writes, of a network that paints what the local
    run's does within float rounding (the sums over the workers are taken in another order; see
    docs/ray/README.md for the measured difference).
    `callback` gets the events of a local run: TrainStart and TrainDone from here, and worker 0's
    TrainStep, TrainPreview and TrainCheckpoint (its path: the checkpoint inside Ray Train's
    storage folder) through a Ray queue, each step once (a restarted group repeats steps).
    `on_worker(rank, event)` (picklable) runs on each worker with the training loop's events.
    """
    from ..networks.arbitrary_training import arbitrary_recipe, prepare_run
    from ..networks.training import checkpoint_path

    cfg, emit = config, callback or (lambda event: None)
    check_address(address)
    check_workers(workers, cfg.paintings_per_step)
    ray = import_ray()
    started = connect(address)  # an unreachable cluster is said at once
    try:
        # Checked here, before any worker; the styles are computed once, here, into OUT.styles.pt.
        run = prepare_run(paintings, photos, output, cfg, device="auto" if uses_gpus(device) else device,
                          weights=weights, log=log)
        start = 0
        if resume:  # the checkpoint's settings and data checked as a local run checks them
            start = arbitrary_recipe(paintings, photos, run, cfg, resume=True)[1].step
        storage = run.output.parent / f".{run.output.stem}.ray-train"
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        fit_n, cpus, gpus = plan_workers(nodes, cpus_per_worker, None, device)
        n = workers or min(fit_n, cfg.paintings_per_step)
        if n > fit_n:
            raise ResourceError(f"--workers {n}: the Ray cluster has room for {fit_n} workers of {cpus} CPU(s)"
                                + (" and a GPU" if gpus else ""))
        emit(TrainStart(start, cfg.steps, len(run.train_x), tuple(p.name for p in run.held_x), run.precision))
        t0 = time.perf_counter()
        from ray.util.queue import Queue

        progress = Queue(actor_options={"num_cpus": 0})  # worker 0's events, to `callback` here
        trainer = TorchTrainer(
            _train_worker,
            train_loop_config={"cfg": cfg, "paintings": os.fspath(paintings), "photos": [os.fspath(p) for p in photos],
                               "output": os.fspath(run.output.resolve()), "resume": resume, "threads": cpus,
                               "gpus": gpus, "weights": None if weights is None else os.fspath(weights),
                               "on_worker": on_worker, "progress": progress},
            scaling_config=ScalingConfig(num_workers=n, use_gpu=bool(gpus),
                                         resources_per_worker={"CPU": cpus, **({"GPU": gpus} if gpus else {})}),
            run_config=RunConfig(name=f"restyle-{uuid.uuid4().hex[:8]}", storage_path=str(storage.resolve()),
                                 failure_config=FailureConfig(max_failures=max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2)),
        )
        relay = Relay(progress, emit, storage, TrainCheckpoint(cfg.steps, checkpoint_path(run.output)))
        _fit_and_fetch(trainer, relay, run.output, max_failures)
        elapsed = time.perf_counter() - t0
        emit(TrainDone(cfg.steps, run.output, elapsed, (cfg.steps - start) / max(elapsed, 1e-9)))
        shutil.rmtree(storage, ignore_errors=True)
        return run.output
    finally:
        if started:
            ray.shutdown()


def _fit_and_fetch(trainer: Any, relay: Relay, output: Path, max_failures: int) -> None:
    """Run the Ray Train `trainer` while `relay` forwards worker 0's events; copy its last checkpoint's
    files (the checkpoint, the model file and its sidecar) to where a local run writes them, beside
    `output`. A failure is one RestyleError line."""
    from ..models.modelfile import sidecar_of
    from ..networks.training import checkpoint_path

    try:
        with relay:
            result = trainer.fit()
    except Exception as e:  # Ray Train's TrainingFailedError wraps the worker's error
        cause = e.__cause__ or e
        first = str(cause).strip().splitlines()[0][:300] if str(cause).strip() else type(cause).__name__
        raise RestyleError(f"training on Ray failed after {max_failures} restart(s): {first}") from None
    with result.checkpoint.as_directory() as d:
        folder = Path(d)
        _copy_atomic(folder / CHECKPOINT, checkpoint_path(output))
        _copy_atomic(folder / output.name, output)
        _copy_atomic(folder / sidecar_of(output).name, sidecar_of(output))


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
