"""What a worker does for the feed-forward jobs: train a model, stylize a photo or a clip with one.

Each runner takes a worker.JobRun and writes previews and the result into the
job's folder, progress and its end to the run's sink (worker.Sink: the store, or
the stream back from a Ray worker); worker.execute turns its exceptions into the
job's end (Cancelled: by its owner, yielded, or the server stopping).

Training shares the one worker with every other job, so it runs in turns: after
`train_slice_s` seconds, if another job waits, it saves a checkpoint and goes to
the back of the queue (`JobStore.yield_turn`); its next turn resumes from that
checkpoint at the same step with the same batches (style_training's resume is
exact). A paint job thus waits at most one slice behind a training, and a
training still advances one slice per round of the queue.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from ..errors import InputError
from .jobs import DONE, STYLIZE, TRAIN, VIDEO
from .media import POSTER
from .trained import ANY_PAINTING, CHECKPOINT_FILE, MODEL_FILE, any_painting, bundled_models, train_config

PREVIEW_QUALITY = 85
CLIP_RESULT = "result.mp4"
FRAMES_DIR = "frames"  # the video pipeline's work folder: a clip interrupted midway resumes from its frames


def _model_file(run: Any) -> Path:
    """The model the job was submitted with (ownership was checked then)."""
    key = run.job.params.get("model", "")
    bundled = bundled_models()
    if key in bundled:
        return bundled[key].path
    path = run.sink.model_file(key) if isinstance(key, str) and len(key) <= 64 else None
    if path is None:
        raise InputError("the model this job was to use is gone")
    return path


def _open_model(run: Any, photo: Optional[Path] = None) -> Any:
    """The job's network on the worker's device, a StyleModel; "any painting": the any-painting
    network made into the network for the painting that came with the job, at its paint strength
    (whose zero point is `photo`'s own style: the photo, or a clip's first frame)."""
    from ..networks.feedforward import open_model

    job = run.job
    if job.params.get("model") != ANY_PAINTING:
        return open_model(_model_file(run), device=run.device)
    choice = any_painting(run.settings.any_painting_model)
    if choice is None:
        raise InputError("this server no longer offers the any-painting network")
    model = open_model(choice.path, device=run.device, weights=run.settings.weights)
    strength = float(job.params.get("paint_strength", 1.0))
    return model.for_style(run.folder / job.style_file, name=job.style_label, strength=strength,
                           photo=photo if strength != 1 else None)


def _finish(run: Any, report: Dict[str, Any], steps: int, picture: Any = None) -> None:
    """Write the job's report.json (after its result.png, when the job made a picture) and mark it done."""
    from ..images import write_picture, write_text_atomic

    report = json.loads(json.dumps(report, default=str))
    if picture is None:
        write_text_atomic(json.dumps(report, indent=2) + "\n", run.folder / "report.json")
    else:
        write_picture(picture, run.folder / "result.png", report, sidecar_to=run.folder / "report.json")
    run.sink.progress(dict(run.progress, step=steps, steps=steps, eta=0), False)
    run.sink.end(DONE, report=report)


def run_train(run: Any) -> None:
    from ..errors import Cancelled
    from ..images import save_atomic
    from ..networks.style_training import TrainCheckpoint, TrainPreview, TrainStart, TrainStep, start_network, train

    job, folder, settings = run.job, run.folder, run.settings
    cfg = train_config(job.params, settings)
    if settings.photos_dir is None or not settings.photos_dir.is_dir():
        raise InputError("this server has no photos to train on any more (its photos folder is gone)")
    progress = run.progress
    progress.update(unit="step", steps=cfg.steps)
    turn_start = time.monotonic()

    def callback(event: Any) -> None:
        if isinstance(event, TrainStart):
            progress.update(photos=event.photos, resumed_from=event.start_step, step=event.start_step)
            run.write(force=True)
        elif isinstance(event, TrainStep):
            eta = event.eta  # None for the first few steps: the page says it is estimating
            progress.update(step=event.step, steps=event.steps, loss=event.loss,
                            eta=None if eta is None else round(eta, 1), elapsed=round(event.elapsed, 1))
            run.write(force=event.step == event.steps)
        elif isinstance(event, TrainPreview):
            save_atomic(event.image, folder / "preview.jpg", quality=PREVIEW_QUALITY)
            progress["preview_step"] = event.step
            run.write(preview=True, force=True)
        elif isinstance(event, TrainCheckpoint):
            progress["checkpoint"] = event.step
            run.sink.keep(CHECKPOINT_FILE)  # on Ray, a lost node's next attempt resumes from it

    def should_stop() -> bool:
        if run.cancel():
            return True
        if time.monotonic() - turn_start >= settings.train_slice_s and run.due("waiting"):
            run.yielded = run.sink.others_waiting()
        return run.yielded

    device = run.device
    resume = (folder / CHECKPOINT_FILE).is_file()
    start = None
    if settings.train_from_any_painting and settings.any_painting_model and not resume:
        try:
            start = start_network(settings.any_painting_model, folder / job.style_file, cfg, device, settings.weights)
            progress["start"] = "the any-painting network"
        except InputError as e:
            progress["start"] = f"from scratch ({e})"
    try:
        train(folder / job.style_file, settings.photos_dir, folder / MODEL_FILE, cfg,
              resume=resume, device=device, weights=settings.weights, start=start,
              callback=callback, should_stop=should_stop)
    except Cancelled:
        step = progress.get("checkpoint", progress.get("step", 0))
        # Who may use the model kept is the page's to say (it knows who is looking).
        run.cancel_note = (f"cancelled at step {step} of {cfg.steps}; the model as it was then is kept"
                           if step else "cancelled before the first step")
        raise
    info = json.loads((folder / "model.json").read_text())  # the training sidecar
    _finish(run, {"model": {"style": job.style_label, "arch_args": info.get("arch_args")},
                  "training": {k: v for k, v in info.get("training", {}).items() if k != "photos_dir"},
                  "task": TRAIN}, cfg.steps)


def run_stylize(run: Any) -> None:
    """A photo in one pass of a network."""
    from ..networks.feedforward import run_network

    job, folder = run.job, run.folder
    size = int(job.params.get("size") or run.settings.default_size)
    run.progress.update(unit="pass", step=0, steps=1)
    run.write(force=True)
    t0 = time.perf_counter()
    img = run_network(_open_model(run, folder / job.content_file), folder / job.content_file, size=size)
    _finish(run, {"task": STYLIZE, "model": job.params.get("model_label"), "size": size,
                  "width": img.width, "height": img.height, "seconds": round(time.perf_counter() - t0, 2)}, 1,
            picture=img)


def run_video(run: Any) -> None:
    """A clip through a network, frame by frame, with the flow-guided blend that stops flicker."""
    from PIL import Image

    from ..images import save_atomic
    from ..video import FrameDone, NetworkFrames, VideoConfig, VideoStart, stylize_video
    from ..video.pipeline import frame_name
    from ..video.stylizers import NETWORK_TEMPORAL_WEIGHT

    job, folder, settings = run.job, run.folder, run.settings
    progress = run.progress
    progress.update(unit="frame")
    work = folder / FRAMES_DIR
    made = {"frames": 0, "seconds": 0.0}

    def callback(event: Any) -> None:
        if isinstance(event, VideoStart):
            progress.update(step=event.resumed, steps=event.frames, width=event.width, height=event.height)
            run.write(force=True)
        elif isinstance(event, FrameDone):
            if not event.resumed:
                made["frames"] += 1
                made["seconds"] += event.seconds
            left = max(event.frames - event.index - 1, 0)
            pace = made["seconds"] / made["frames"] if made["frames"] else None
            progress.update(step=event.index + 1, steps=event.frames,
                            eta=None if pace is None else round(pace * left, 1))
            if run.due("preview"):
                if event.image is not None:  # the frame's file is written behind: take the pixels
                    save_atomic(Image.fromarray(event.image), folder / "preview.jpg", quality=PREVIEW_QUALITY)
                else:
                    with Image.open(work / frame_name(event.index)) as im:
                        save_atomic(im.convert("RGB"), folder / "preview.jpg", quality=PREVIEW_QUALITY)
                run.write(preview=True, force=True)
            else:
                run.write(force=left == 0)

    model = _open_model(run, folder / POSTER)  # its first frame: the zero point of a paint strength
    stylizer = NetworkFrames(model.stylize_tensor, NETWORK_TEMPORAL_WEIGHT, name=str(job.params.get("model")),
                             threads=1 if model.device.type == "cuda" else None)  # OpenCV's flow takes the rest
    cfg = VideoConfig(size=settings.video_size, duration=settings.max_video_seconds)
    result = stylize_video(folder / job.content_file, folder / CLIP_RESULT, stylizer, cfg, work_dir=work,
                           callback=callback, cancel=run.cancel)
    report = dict(result.report, task=VIDEO, model=job.params.get("model_label"))
    report["manifest"] = {k: v for k, v in report.get("manifest", {}).items() if k != "input"}  # a server path
    _finish(run, report, result.frames)


RUNNERS: Dict[str, Callable[[Any], None]] = {TRAIN: run_train, STYLIZE: run_stylize, VIDEO: run_video}

