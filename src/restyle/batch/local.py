"""Batch mode: one result per (content, style) pair, each style's targets computed once per scale.

    report = run_batch(["a.jpg", "photos/"], ["starry.jpg", "scream.jpg"], "out/", StylizeConfig())

Folders are expanded to the images in them (sorted, non-recursive). Outputs are
named `{content_stem}__{style_stem}.png` in the output folder. Batch mode does
not blend styles: several styles give several results (blending stays the
single-run default of `restyle stylize CONTENT STYLE STYLE`).

One pair is one `paint_pair()` call, here in a loop and on Ray workers alike
(distributed.py): it skips an output that is already complete, writes the image
and its sidecar atomically, and turns a bad input into a failed outcome with a
one-line error, so the other pairs go on.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..config import StylizeConfig
from ..errors import OUT_OF_MEMORY_HINT, Cancelled, InputError, RestyleError, is_out_of_memory
from ..events import BatchProgress, Iterate, PairStarted
from ..hashing import sha256sum
from ..images import IMAGE_SUFFIXES, PathLike, WRITE_SUFFIXES, check_output_path, sidecar_path, write_picture


def expand(paths: Sequence[PathLike], what: str) -> List[Path]:
    """Files as given, folders as their images (sorted by name)."""
    out: List[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"{what} folder {p} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            out += found
        elif not p.exists():
            raise InputError(f"{what} {p}: no such file")
        else:
            out.append(p)  # load_image() checks it is an image
    return out


@dataclass(frozen=True)
class PairTask:
    """One unit of batch work: paint `content` after `style` into `output`."""

    index: int  # position in the batch (content-major)
    content: Path
    style: Path
    output: Path

    @property
    def label(self) -> str:
        return f"{self.content.name} x {self.style.name}"


@dataclass
class PairOutcome:
    task: PairTask
    status: str  # one of OUTCOMES
    error: str = ""  # the one-line reason, for "failed"
    exit_code: int = 0  # the CLI's code for this failure (2: bad input)
    seconds: float = 0.0
    node: Dict[str, Any] = field(default_factory=dict)  # where it ran: host, pid, Ray node id
    attempts: int = 1  # >1 when a worker was lost mid-task and the pair ran again


OUTCOMES = ("done", "skipped", "failed")  # skipped: complete already (a rerun)


@dataclass
class BatchReport:
    """What a batch did, pair by pair, and the workers it lost on the way."""

    outcomes: List[PairOutcome]
    lost: List[str] = field(default_factory=list)  # one line per worker lost mid-task

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> List[PairOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def exit_code(self) -> int:
        return max((o.exit_code for o in self.failed), default=0)

    def summary(self, done: str = "painted", tasks: str = "pairs") -> List[str]:
        """A headline, then one line per failure and per lost worker (what the CLI prints)."""
        head = f"{self.count('done')} {done}, {self.count('skipped')} complete already, {self.count('failed')} failed"
        if self.lost:
            head += f"; {len(self.lost)} worker(s) lost mid-task, their {tasks} ran again"
        return ([head] + [f"failed: {o.task.label}: {o.error}" for o in self.failed]
                + [f"lost: {line}" for line in self.lost])


def check_out_dir(out_dir: PathLike, suffix: str = ".png", names: str = "CONTENT__STYLE") -> Path:
    """A batch's output folder: it may not exist yet (created once the whole batch checks out), but is no file."""
    out_dir = Path(out_dir)
    if suffix not in WRITE_SUFFIXES:
        raise InputError(f"batch output suffix {suffix!r} is not one of {', '.join(WRITE_SUFFIXES)}")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"batch output {out_dir} is a file; give a folder (outputs are {names}{suffix})")
    if not out_dir.exists() and out_dir.suffix.lower() in WRITE_SUFFIXES:
        raise InputError(f"batch output {out_dir} looks like an image file name; give a folder, created if "
                         f"missing (outputs are {names}{suffix})")
    return out_dir


def plan_pairs(contents: Sequence[Path], styles: Sequence[Path], out_dir: PathLike,
               suffix: str = ".png") -> List[PairTask]:
    """A task for every pair; refuses name clashes and outputs that are inputs.

    `out_dir` may not exist yet (plan_batch creates it), but must not be a file.
    """
    out_dir = check_out_dir(out_dir, suffix)
    inputs = tuple(contents) + tuple(styles)
    tasks: List[PairTask] = []
    seen: Dict[Path, PairTask] = {}
    for c in contents:
        for s in styles:
            out = out_dir / f"{c.stem}__{s.stem}{suffix}"
            if out in seen:
                raise InputError(f"{c} x {s} and {seen[out].content} x {seen[out].style} would both be written "
                                 f"to {out}; rename one of the inputs")
            if out_dir.is_dir():  # a folder made below holds no inputs and no files yet
                check_output_path(out, inputs)
            seen[out] = PairTask(len(tasks), c, s, out)
            tasks.append(seen[out])
    return tasks


def plan_batch(contents: Sequence[PathLike], styles: Sequence[PathLike], out_dir: PathLike,
               config: StylizeConfig, suffix: str = ".png") -> List[PairTask]:
    """Check the whole batch up front (before any work or any cluster): folders, names, settings."""
    if config.style_blend_weights is not None:
        raise InputError("style_blend_weights has no meaning in batch mode (one result per style); drop it")
    tasks = plan_pairs(expand(contents, "content"), expand(styles, "style"), out_dir, suffix)
    Path(out_dir).mkdir(parents=True, exist_ok=True)  # only once every check has passed
    return tasks


def pair_key(task: PairTask, cfg: StylizeConfig, painter_key: Any) -> str:
    """Names everything that shapes a pair's result: both inputs' bytes, the settings, network and device."""
    parts = {"content": sha256sum(task.content), "style": sha256sum(task.style), "config": cfg.to_dict(),
             "painter": painter_key}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def complete_key(output: Path) -> str:
    """The batch_key that `output`'s sidecar records, if the output is there and is the bytes it vouches for."""
    side = sidecar_path(output)
    if not (output.is_file() and side.is_file()):
        return ""
    try:
        report = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    if not isinstance(report, dict) or report.get("output_sha256") != sha256sum(output):
        return ""
    return str(report.get("batch_key") or "")


def is_complete(task: PairTask, key: str) -> bool:
    """The output exists and its sidecar says it was made from these inputs and settings, and is these bytes."""
    return bool(key) and complete_key(task.output) == key


def _remove_leftovers(out: Path) -> None:
    """Temporary files of an earlier attempt killed while writing (save_atomic's `.NAME.*.tmp`)."""
    for name in (out.name, sidecar_path(out).name):
        for tmp in out.parent.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def this_node() -> Dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def step_fraction(event: Any) -> Optional[float]:
    """The share of a task's work done, from an event that counts steps (Iterate, TrainStep)."""
    step, steps = getattr(event, "step", None), getattr(event, "steps", None)
    return step / steps if isinstance(step, int) and isinstance(steps, int) and steps > 0 else None


def produce(
    task: Any,
    key: Callable[[], str],
    make: Callable[[], Tuple[Any, Dict[str, Any]]],
    *,
    sidecar: bool = True,
    node: Optional[Dict[str, Any]] = None,
    attempt: int = 1,
) -> PairOutcome:
    """Make one image output and write it: skip it if complete, else write image then sidecar atomically.

    The common part of every batch's task (a painted pair, a photo through a trained
    network), in the local loop and on a Ray worker alike. `key()` names everything that
    shapes the result; `make()` returns the image and its sidecar's report. Without a
    sidecar nothing proves an existing output complete, so it is made again. A
    RestyleError (bad input, too big for memory) becomes a failed outcome; Cancelled and
    anything unexpected propagate.
    """
    t0 = time.perf_counter()
    node = node or this_node()

    def outcome(status: str, error: str = "", code: int = 0) -> PairOutcome:
        return PairOutcome(task, status, error, code, round(time.perf_counter() - t0, 3), node, attempt)

    try:
        batch_key = key() if sidecar else ""
        if sidecar and is_complete(task, batch_key):
            return outcome("skipped")
        _remove_leftovers(task.output)
        image, report = make()
        write_picture(image, task.output, (lambda written: dict(  # after the image: it vouches for its bytes
            report, node=node, attempt=attempt, batch_key=batch_key, output_sha256=sha256sum(written)))
            if sidecar else None)
    except Cancelled:
        raise
    except RestyleError as e:
        return outcome("failed", str(e), e.exit_code)
    except OSError as e:  # unreadable input, full disk, ...: this task fails, the others go on
        return outcome("failed", f"{type(e).__name__}: {e}", 1)
    except Exception as e:
        if not is_out_of_memory(e):  # a bug: the batch stops and says so
            raise
        oom = outcome("failed", OUT_OF_MEMORY_HINT, 1)  # a photo too large for the GPU: the others go on
    else:
        return outcome("done")
    from ..device import free_cached_memory

    free_cached_memory()  # after the except clause, whose traceback held the failed pair's tensors
    return oom


def paint_pair(
    task: PairTask,
    cfg: StylizeConfig,
    painter: Any,
    *,
    weights: Optional[PathLike] = None,
    sidecar: bool = True,
    node: Optional[Dict[str, Any]] = None,
    attempt: int = 1,
    callback: Optional[Callable[[Any], None]] = None,
    cancel: Any = None,
    names: Optional[PairTask] = None,
) -> PairOutcome:
    """Paint one pair and write it (produce()): the same call in the local loop and on a Ray worker.

    `names`: the pair as the user named it, for the sidecar, where `task` holds copies
    (a Ray worker that cannot see the user's folders).
    """
    from ..optimiser.engine import run

    def make() -> Tuple[Any, Dict[str, Any]]:
        r = run(task.content, [task.style], cfg, callback=callback, cancel=cancel, weights=weights, painter=painter)
        named = names or task
        return r.image, dict(r.report, content=str(named.content), styles=[str(named.style)], output=str(named.output))

    return produce(task, lambda: pair_key(task, cfg, painter.key), make, sidecar=sidecar, node=node, attempt=attempt)


def run_tasks(tasks: Sequence[Any], do: Callable[..., PairOutcome], callback: Optional[Callable[[Any], None]] = None,
              ) -> BatchReport:
    """The local loop: `do(task, node=..., callback=...)` for each task, with the events a Ray run emits."""
    emit = callback or (lambda event: None)
    node = this_node()
    outcomes: List[PairOutcome] = []
    for task in tasks:
        emit(PairStarted(task.index, len(tasks), task.label, node["host"], node["pid"], 1))

        def progress(event: Any, finished: int = len(outcomes)) -> None:
            fraction = step_fraction(event)
            if fraction is not None:
                emit(BatchProgress(finished, len(tasks), fraction))

        outcomes.append(do(task, node=node, callback=progress))
        emit(BatchProgress(len(outcomes), len(tasks), 0.0, outcomes[-1]))
    return BatchReport(outcomes)


@dataclass(frozen=True)
class BatchOptions:
    """run_batch's keyword options, which distributed.run_batch_ray takes too (as **options)."""

    suffix: str = ".png"
    weights: Optional[PathLike] = None
    sidecar: bool = True
    callback: Optional[Callable[[Any], None]] = None


def run_batch(
    contents: Sequence[PathLike],
    styles: Sequence[PathLike],
    out_dir: PathLike,
    config: Optional[StylizeConfig] = None,
    *,
    suffix: str = ".png",
    weights: Optional[PathLike] = None,
    sidecar: bool = True,
    callback: Optional[Callable[[Any], None]] = None,
    cancel: Any = None,
    painter: Any = None,
) -> BatchReport:
    """Stylise every content after every style, here, one pair after another.

    `callback` gets PairStarted and BatchProgress events. One Painter (network and style
    cache) serves all pairs, so a style's Gram matrices are computed once per scale.
    """
    from ..optimiser.engine import make_painter

    cfg = config or StylizeConfig()
    tasks = plan_batch(contents, styles, out_dir, cfg, suffix)
    painter = painter or make_painter(cfg, weights)
    return run_tasks(tasks, lambda task, **kw: paint_pair(task, cfg, painter, weights=weights, sidecar=sidecar,
                                                         cancel=cancel, **kw), callback)
