"""Feed-forward models on the web: the training form, and which models a visitor may use.

A visitor trains a model with a training job; the model is that job's
`model.pt` (or, for a training cancelled midway, the checkpoint it left), and
it is named by the job's id. It belongs to the browser that trained it; its
owner may share it, and then anyone with the job's link may use it too (access.py). The
bundled models (the package's `models/bundled/`) are everyone's, and so is the
any-painting network ("any painting"), which paints in the painting the visitor
sends with the photo or clip.

The server process never imports torch: bundled models are listed from the
JSON sidecars beside them, and the job rows say everything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from ..config.train import FROM_ARBITRARY, TrainConfig
from ..errors import InputError
from ..hashing import sha256sum
from ..models.registry import bundled
from ..models.transformer_config import MAX_CODE_STRENGTH, MIN_STYLE_SIDE
from . import access
from .access import USE
from .form import _number, strength_param
from .jobs import CANCELLED, DONE, STYLIZE, TRAIN, Job, JobStore
from .settings import Settings
from .uploads import UploadError

MODEL_FILE = "model.pt"
CHECKPOINT_FILE = "model.ckpt.pt"  # style_training.checkpoint_path(model.pt)


@dataclass(frozen=True)
class ModelChoice:
    key: str  # a bundled model's name, or the id of the training job that made it
    label: str  # for display
    path: Path  # the model file (or the checkpoint a cancelled training left)
    style_sha256: Optional[str]  # the painting it learned
    job: Optional[Job] = None  # the training job, for a visitor's model
    any_painting: bool = False  # the any-painting network: the visitor chooses the painting too


# --- training ----------------------------------------------------------------


def training_available(settings: Settings) -> Optional[str]:
    """None if this server can train, else why not (said on the page and in a 503)."""
    d = settings.photos_dir
    if d is None:
        return ("training is off on this server: it has no photos to train on (start it with "
                "--photos DIR, a folder of a few hundred photos such as coco256)")
    if not d.is_dir():
        return f"training is off on this server: its photos folder {d.name!r} is missing"
    return None


def train_params(form: Mapping[str, Any], settings: Settings) -> Dict[str, Any]:
    """The training form's values (steps, strength), checked against this server's caps."""
    steps_text = form.get("steps")
    steps = settings.default_train_steps if steps_text in (None, "") else _number(steps_text, "steps", 0)
    if steps != int(steps) or int(steps) not in settings.train_steps:
        raise InputError(f"steps {str(steps_text)[:20]!r} is not one of this server's choices "
                         f"({', '.join(map(str, settings.train_steps))})")
    params: Dict[str, Any] = {"steps": int(steps), **strength_param(form)}
    train_config(params, settings)  # raises InputError naming the value and the rule
    return params


def train_config(params: Mapping[str, Any], settings: Settings) -> TrainConfig:
    """A training job's config: the web's small settings, the job's choices, then the server's overrides."""
    steps = int(params["steps"])
    values: Dict[str, Any] = {
        "steps": steps, "size": settings.train_size, "lr_decay": FROM_ARBITRARY["lr_decay"],
        "preview_every": max(1, steps // 5),  # 6 grids a run: each paints eight photos at 512 px (~2 s here)
        "checkpoint_every": max(10, steps // 10),
    }
    if "style_strength" in params:
        values["style_strength"] = float(params["style_strength"])
    values.update(settings.train_overrides)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return TrainConfig(**values)
    except TypeError as e:  # an override naming no TrainConfig field
        raise InputError(f"training settings: {e}") from None


# --- which models a visitor may use -------------------------------------------


def model_path(store: JobStore, job: Job) -> Optional[Path]:
    """A training job's model file: the finished model, else the checkpoint a cancelled run left."""
    if job.task != TRAIN:
        return None
    folder = store.folder(job.id)
    if job.state == DONE and (folder / MODEL_FILE).is_file():
        return folder / MODEL_FILE
    # A training cancelled after some steps leaves its checkpoint: the model as it was then.
    if job.state == CANCELLED and (job.progress or {}).get("step") and (folder / CHECKPOINT_FILE).is_file():
        return folder / CHECKPOINT_FILE
    return None


def trained_model(store: JobStore, key: str) -> Optional[Path]:
    """The model file of the training job `key` (a job's id), if it has one."""
    trainer = store.get(key)
    return model_path(store, trainer) if trainer is not None else None


def without_model(store: JobStore, job: Job) -> Optional[str]:
    """Why a training that has ended left no model (nothing to use, share or preview); None if it has
    one or may still make one."""
    if job.task != TRAIN or not job.final or model_path(store, job) is not None:
        return None
    if job.state == CANCELLED:
        return "its training was cancelled before its first step"
    if job.state == DONE:
        return "its model file is missing"
    return f"its training {job.state}"


def bundled_models() -> Dict[str, ModelChoice]:
    """The bundled style networks (models/registry.py, the one registry), as the form offers them."""
    return {b.name: ModelChoice(b.name, f"{(b.style_name or b.name).replace('_', ' ')} (bundled)", b.path,
                                b.style_sha256)
            for b in bundled("style").values()}


ANY_PAINTING = "arbitrary"  # the form's key for the any-painting network (the CLI's `--model arbitrary`)


def any_painting(name: str) -> Optional[ModelChoice]:
    """The any-painting network `name` (Settings.any_painting_model: a bundled name or a file), if it is there."""
    if not name:
        return None
    found = bundled("arbitrary").get(name)
    path = found.path if found is not None else Path(name)
    if not path.is_file():
        return None
    return ModelChoice(ANY_PAINTING, "any painting (one network for every painting: choose the painting)", path,
                       None, any_painting=True)


def check_painting(width: int, height: int) -> None:
    """Refuse (400) a painting the any-painting network cannot read (its rule, MIN_STYLE_SIDE, said here first)."""
    if min(width, height) < MIN_STYLE_SIDE:
        raise UploadError(f"painting: {width}x{height} is too small for the any-painting network: it needs at least "
                          f"{MIN_STYLE_SIDE} px on each side", 400)


def paint_strength(form: Mapping[str, Any]) -> Dict[str, Any]:
    """{"paint_strength": s} from the any-painting form's slider, {} at 1 (the network's own picture)."""
    strength = _number(form.get("paint_strength"), "paint strength", 1.0)
    if not 0 <= strength <= MAX_CODE_STRENGTH:
        raise UploadError(f"paint strength {strength:g} is out of range; it must be in [0, {MAX_CODE_STRENGTH:g}]", 400)
    return {} if strength == 1 else {"paint_strength": strength}


def visitor_models(store: JobStore, owner: Optional[str]) -> List[ModelChoice]:
    """The models this visitor trained that can be used now, newest first."""
    out = []
    for job in store.list(owner, limit=100, task=TRAIN):
        path = model_path(store, job)
        if path is not None:
            out.append(ModelChoice(job.id, _label(job, path), path, job.params.get("style_sha256"), job))
    return out


def _label(job: Job, path: Path) -> str:
    steps = (job.progress or {}).get("step")
    partial = f", stopped at step {steps}" if path.name == CHECKPOINT_FILE and steps else ""
    return f"{job.style_label} ({job.params.get('steps')} steps{partial})"


def resolve(store: JobStore, key: str, owner: Optional[str], settings: Optional[Settings] = None) -> ModelChoice:
    """The model `key` names, if this visitor may use it; else UploadError with a 4xx status.

    With `settings`, the any-painting network it offers (ANY_PAINTING) is one of the choices."""
    if not isinstance(key, str) or not key:
        raise UploadError("choose a model: a bundled one or one you trained", 400)
    bundled = bundled_models()
    anything = any_painting(settings.any_painting_model) if settings is not None else None
    if anything is not None:
        bundled[anything.key] = anything
    if key in bundled:
        return bundled[key]
    job = store.get(key) if len(key) <= 64 else None
    if job is None or job.task != TRAIN:
        names = ", ".join(bundled) or "none"
        raise UploadError(f"there is no model {key[:40]!r} (bundled models: {names}; or one you trained)", 404)
    access.check(USE, job, owner)
    path = model_path(store, job)
    if path is None:
        why = without_model(store, job)
        raise UploadError(f"there is no model to use: {why}" if why else
                          f"this model cannot be used yet: its training is {job.state}", 409)
    return ModelChoice(job.id, _label(job, path), path, job.params.get("style_sha256"), job)


def painting_of(store: JobStore, settings: Settings, model: ModelChoice) -> Optional[Path]:
    """The painting a model learned, when this server has it (to show beside its pictures)."""
    if model.job is not None:
        path = store.folder(model.job.id) / model.job.style_file
        return path if model.job.style_file and path.is_file() else None
    from . import gallery

    for example in gallery.examples(settings)[1]:
        if model.style_sha256 and sha256sum(example.path) == model.style_sha256:
            return example.path
    return None


def model_settings_rows(job: Job, settings: Settings) -> list:
    """(name, value) pairs for the job page of a training, a photo or a clip through a model."""
    report = job.report or {}
    if job.task == TRAIN:
        rows = [("painting", job.style_label), ("steps", job.params.get("steps"))]
        if job.params.get("style_strength"):
            rows.append(("style strength", job.params["style_strength"]))
        try:
            cfg = train_config(job.params, settings)
            rows += [("training crops", f"{cfg.size} px, {cfg.batch_size} a step"),
                     ("network", f"widths {', '.join(map(str, cfg.widths))}, {cfg.res_blocks} residual blocks")]
        except InputError:  # the server's settings changed since
            pass
        start = (job.progress or {}).get("start")
        if start:
            rows.append(("started from", start))
        photos = (job.progress or {}).get("photos") or report.get("training", {}).get("photos")
        if photos:
            rows.append(("photos", photos))
        rows.append(("shared", "yes: anyone with this page's link may use the model" if job.shared else "no"))
        wall = report.get("training", {}).get("wall_s")
        if wall is not None:
            rows.append(("time", f"{wall:.0f} s"))
        return rows
    rows = [("model", job.params.get("model_label")), ("input", job.content_label)]
    if job.params.get("model") == ANY_PAINTING:
        rows.append(("painting", job.style_label))
        if "paint_strength" in job.params:
            rows.append(("paint strength", f"×{float(job.params['paint_strength']):g}"))
    if job.task == STYLIZE:
        rows.append(("size", job.params.get("size")))
        if report:
            rows += [("output", f"{report.get('width')}x{report.get('height')}"), ("time", f"{report.get('seconds')} s")]
    elif report:
        size = report.get("manifest", {}).get("size")
        rows += [("frames", report.get("frames")), ("output", "x".join(map(str, size)) if size else None),
                 ("time", f"{report.get('elapsed_s', 0):.1f} s ({report.get('seconds_per_frame', 0):.2f} s a frame)")]
    return [r for r in rows if r[1] is not None]
