"""Batches with feed-forward networks: photos through one trained model, one model per style.

    report = run_model_batch(["photos/"], "starry.pt", "out/")          # out/PHOTO__starry.png
    report = train_styles(["a.jpg", "b.jpg"], "photos/", "models/", TrainConfig())  # models/a.pt, b.pt

Each task is one call, here in a loop (batch.run_tasks) and on Ray workers alike
(distributed.py), with batch mode's rules: bad input fails that task alone with its
one-line error, outputs are written atomically, and a rerun skips the outputs that are
already complete (their sidecar names the inputs, settings and bytes).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import Cancelled, InputError, RestyleError
from ..hashing import sha256sum
from ..images import PathLike, check_output_path, write_text_atomic
from .local import BatchReport, PairOutcome, check_out_dir, expand, produce, run_tasks, this_node


@dataclass(frozen=True)
class FileTask:
    """One file in, one file out: a photo stylized with the batch's model, a painting trained into a model."""

    index: int
    source: Path
    output: Path

    @property
    def label(self) -> str:
        return self.source.name


def _refuse_clashes(tasks: Sequence[FileTask]) -> None:
    seen: Dict[Path, FileTask] = {}
    for t in tasks:
        if t.output in seen:
            raise InputError(f"{seen[t.output].source} and {t.source} would both be written to {t.output}; "
                             "rename one of them")
        seen[t.output] = t


def plan_photos(contents: Sequence[PathLike], model_name: str, out_dir: PathLike) -> List[FileTask]:
    """A task per photo (files as given, folders as their images): OUT_DIR/PHOTO__MODEL.png."""
    out_dir = check_out_dir(out_dir, names=f"PHOTO__{model_name}")
    photos = expand(contents, "content")
    tasks = [FileTask(i, p, out_dir / f"{p.stem}__{model_name}.png") for i, p in enumerate(photos)]
    _refuse_clashes(tasks)
    if out_dir.is_dir():
        for t in tasks:
            check_output_path(t.output, tuple(photos))
    out_dir.mkdir(parents=True, exist_ok=True)  # only once every check has passed
    return tasks


def photo_key(task: FileTask, model: Any, preserve_colors: str, size: Optional[int]) -> str:
    """Names everything that shapes a photo's result: its bytes, the model's, the settings, device and precision."""
    parts = {"content": sha256sum(task.source), "model": model.sha256, "preserve_colors": preserve_colors,
             "size": size, "device": model.device.type, "precision": model.precision}
    style = model.info.get("style", {})
    if "from" in style:  # the any-painting network: one file, many paintings, mixes and strengths
        parts["style"] = style
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def stylize_photo(task: FileTask, model: Any, preserve_colors: str = "none", size: Optional[int] = None, *,
                  sidecar: bool = True, node: Optional[Dict[str, Any]] = None, attempt: int = 1,
                  callback: Optional[Callable[[Any], None]] = None) -> PairOutcome:
    """One photo through the model, written by batch.produce() (skip if complete, atomic, sidecar)."""
    return produce(task, lambda: photo_key(task, model, preserve_colors, size),
                   lambda: feedforward_picture(task, model, preserve_colors, size), sidecar=sidecar, node=node,
                   attempt=attempt)


def feedforward_picture(task: FileTask, model: Any, preserve_colors: str = "none",
                        size: Optional[int] = None) -> Tuple[Any, Dict[str, Any]]:
    """The model's picture of task.source and its sidecar report (the single-photo CLI writes them itself)."""
    from ..networks.feedforward import run_network

    t0 = time.perf_counter()
    img = run_network(model, task.source, size=size, preserve_colors=preserve_colors)
    report = {"mode": "feedforward", "content": str(task.source), "output": str(task.output),
              "model": str(model.path), "model_sha256": model.sha256, "style": model.info["style"],
              "preserve_colors": preserve_colors, "device": str(model.device), "precision": model.precision,
              "size": list(img.size), "timings_s": {"total": round(time.perf_counter() - t0, 3)}}
    return img, report


def run_model_batch(contents: Sequence[PathLike], model: Any, out_dir: PathLike, preserve_colors: str = "none",
                    size: Optional[int] = None, *, sidecar: bool = True,
                    callback: Optional[Callable[[Any], None]] = None) -> BatchReport:
    """Every photo through one loaded StyleModel (or the any-painting network's PhotoStyled), here, one after
    another (PairStarted, BatchProgress events)."""
    tasks = plan_photos(contents, model.name, out_dir)
    return run_tasks(tasks, lambda task, **kw: stylize_photo(task, model, preserve_colors, size, sidecar=sidecar, **kw),
                     callback)


# ---- one model per style ------------------------------------------------------------------------


def plan_styles(styles: Sequence[PathLike], out_dir: PathLike) -> List[FileTask]:
    """A task per painting: MODELS_DIR/STYLE.pt (refuses two paintings of one name)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"models output {out_dir} is a file; give a folder (models are STYLE.pt)")
    if not out_dir.exists() and out_dir.suffix.lower() == ".pt":
        raise InputError(f"models output {out_dir} looks like a model file name; with several styles give a "
                         "folder, created if missing (models are STYLE.pt)")
    tasks = [FileTask(i, p, out_dir / f"{p.stem}.pt") for i, p in enumerate(expand(styles, "style"))]
    _refuse_clashes(tasks)
    out_dir.mkdir(parents=True, exist_ok=True)
    return tasks


def check_photos(photos: PathLike, config: Any) -> None:
    """Enough training photos, checked once before any style starts (each would fail alike)."""
    from ..networks.style_training import PHOTO_SUFFIXES, list_photos

    found = len(list_photos(photos))
    if found < config.holdout + 1:
        raise InputError(f"photos {photos}: found {found} photos ({', '.join(PHOTO_SUFFIXES)}); "
                         f"need at least {config.holdout + 1}")


def model_complete(output: Path, style: Path, config: Dict[str, Any]) -> bool:
    """The model file is there, its sidecar vouches for its bytes, and it was trained on this painting so."""
    from ..models.modelfile import sidecar_of

    side = sidecar_of(output)
    if not (output.is_file() and side.is_file()):
        return False
    try:
        info = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(info, dict) and info.get("model_sha256") == sha256sum(output)
            and info.get("style", {}).get("sha256") == sha256sum(style)
            and info.get("training", {}).get("config") == json.loads(json.dumps(config))  # tuples as lists
            and info.get("training", {}).get("steps_done") == config.get("steps"))


def train_style(task: FileTask, photos: PathLike, config: Any, *, device: str = "cpu",
                weights: Optional[PathLike] = None, node: Optional[Dict[str, Any]] = None, attempt: int = 1,
                callback: Optional[Callable[[Any], None]] = None) -> PairOutcome:
    """Train one style's model into task.output; previews beside it (STYLE_previews/).

    A complete model is skipped; a checkpoint left by a killed attempt is resumed (the data
    order depends on the step only, so the result is the uninterrupted run's); any other
    file at the output is refused, never overwritten. The sidecar gains the node and attempt.
    """
    from ..models.modelfile import sidecar_of
    from ..networks.style_training import TrainPreview, checkpoint_path, train
    from ..networks.training import save_preview

    t0 = time.perf_counter()
    node = node or this_node()
    emit = callback or (lambda event: None)
    previews = task.output.with_name(task.output.stem + "_previews")

    def outcome(status: str, error: str = "", code: int = 0) -> PairOutcome:
        return PairOutcome(task, status, error, code, round(time.perf_counter() - t0, 3), node, attempt)

    def on_event(event: Any) -> None:
        if isinstance(event, TrainPreview):
            save_preview(event.image, previews, event.step)
        emit(event)

    try:
        if model_complete(task.output, task.source, config.to_dict()):
            return outcome("skipped")
        resume = checkpoint_path(task.output).is_file()
        if task.output.exists() and not resume:
            raise InputError(f"output {task.output} exists and is not this style's model with these settings; "
                             "delete it or choose another folder")
        path = train(task.source, photos, task.output, config, resume=resume, device=device, weights=weights,
                     callback=on_event)
        side = sidecar_of(path)
        info = dict(json.loads(side.read_text(encoding="utf-8")), node=node, attempt=attempt)
        write_text_atomic(json.dumps(info, indent=1) + "\n", side)
    except Cancelled:
        raise
    except RestyleError as e:
        return outcome("failed", str(e), e.exit_code)
    except OSError as e:
        return outcome("failed", f"{type(e).__name__}: {e}", 1)
    return outcome("done")


def train_styles(styles: Sequence[PathLike], photos: PathLike, out_dir: PathLike, config: Any, *,
                 device: str = "cpu", weights: Optional[PathLike] = None,
                 callback: Optional[Callable[[Any], None]] = None) -> BatchReport:
    """One model per painting, here, one after another (PairStarted, BatchProgress events)."""
    check_photos(photos, config)
    tasks = plan_styles(styles, out_dir)
    return run_tasks(tasks, lambda task, **kw: train_style(task, photos, config, device=device, weights=weights, **kw),
                     callback)
