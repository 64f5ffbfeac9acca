"""Routes of the feed-forward models: train one for a painting, use one on a photo or a short clip.

Pages                                 JSON API
  GET  /models        your models, the forms
  POST /train         train a model        POST /api/train            (multipart: style or style_example, steps, strength)
  POST /apply         use a model          POST /api/apply            (multipart: model, media = a photo or a clip, size;
                                                                       model "arbitrary", any painting: style or style_example,
                                                                       paint_strength 0-3, 1 by default)
  POST /jobs/{id}/share                    POST /api/jobs/{id}/share  (the owner only: shared=1 or 0)
Files: /jobs/{id}/result.mp4 (a clip's result; range requests), /jobs/{id}/poster.jpg (its first frame).

A trained model is named by its training job's id; it is used only by the browser
that trained it, or by anyone with its link once its owner shared it (403 otherwise; access.py).
Like file_routes.py, an APIRouter whose routes read `request.app.state` (settings, store, templates).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any, Dict, Tuple

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.datastructures import UploadFile

from . import access
from . import gallery as gallery_mod
from . import trained
from .access import SHARE
from .files import FileAnswer, get_and_head
from .jobs import DONE, STYLIZE, TRAIN, VIDEO, Cap, CapReached
from .media import ACCEPTED_VIDEO, POSTER, check_clip, sniff_video
from .responses import error_answer, job_or_404
from .settings import Settings
from .submitting import add_form_routes, enqueue, read_form, strings
from .uploads import (ACCEPTED, UploadError, check_image, check_not_thin, display_name, image_from_form, sniff,
                      upload_name)
from .visitors import client_of, owner_of

router = APIRouter()
get = get_and_head(router)


def models_page(request: Request, error: str = "", status: int = 200, values=None, headers=None):
    """The Models page: your trainings and models, the training and using forms (with a refusal, as sent)."""
    state = request.app.state
    settings, store = state.settings, state.store
    owner = owner_of(request)
    contents, styles = gallery_mod.examples(settings)
    any_painting = trained.any_painting(settings.any_painting_model)
    return state.templates.TemplateResponse(request, "models.html", {
        "page": "models", "error": error, "values": values or {},
        "training_off": trained.training_available(settings),
        "trainings": store.list(owner, limit=50, task=TRAIN),
        "models": [*trained.bundled_models().values(), *filter(None, [any_painting]),
                   *trained.visitor_models(store, owner)],
        "any_painting": any_painting, "min_painting_side": trained.MIN_STYLE_SIDE,
        "max_paint": trained.MAX_CODE_STRENGTH,
        "styles": styles, "steps": settings.train_steps, "default_steps": settings.default_train_steps,
        "sizes": [s for s in settings.sizes if s <= settings.max_size], "default_size": settings.default_size,
        "max_mb": settings.max_upload_bytes / 2**20, "max_video_mb": settings.max_video_bytes / 2**20,
        "max_seconds": settings.max_video_seconds, "video_size": settings.video_size,
    }, status_code=status, headers=headers)


# --- training ---------------------------------------------------------------


async def submit_training(request: Request):
    settings, store = request.app.state.settings, request.app.state.store
    why = trained.training_available(settings)
    if why:
        raise UploadError(why, 503)
    form = await read_form(request)
    params = trained.train_params(strings(form), settings)
    caps = training_caps(settings)
    full = store.cap_reached(caps, owner_of(request), client_of(request))  # before reading the painting
    if full is not None:
        raise cap_refusal(full)
    data, suffix, label, img = await image_from_form(form, "style", "painting", settings)
    cfg = trained.train_config(params, settings)
    if img is not None:
        check_not_thin(img.width, img.height, cfg.style_size, "painting", "learn from", f"at {cfg.style_size} px")
    params["style_sha256"] = hashlib.sha256(data).hexdigest()
    name = "style" + suffix
    try:  # checked again as the job is queued: two requests at once cannot both take the last place
        return enqueue(request, {name: data}, params, "", name, "", label, task=TRAIN, caps=caps)
    except CapReached as e:
        raise cap_refusal(e.cap) from None


def training_caps(settings: Settings) -> Tuple[Cap, ...]:
    return (Cap(settings.max_training_per_visitor, TRAIN, "owner"),
            Cap(settings.max_training_per_address, TRAIN, "client"), Cap(settings.max_trainings, TRAIN))


def cap_refusal(cap: Cap) -> UploadError:
    if cap.by == "owner":
        return UploadError(f"you already have {cap.most} model(s) training, the most this server trains for "
                           "one visitor; wait for it or cancel it", 429)
    if cap.by == "client":
        return UploadError(f"{cap.most} model(s) are already training for your network address, the most this "
                           "server trains for one address; wait for one to finish", 429)
    return UploadError(f"the server is already training {cap.most} models, the most it trains at once; "
                       "try again in a few minutes", 503, {"Retry-After": "60"})


add_form_routes(router, "train", "/train", "/api/train", submit_training, models_page)


# --- using a model ----------------------------------------------------------


async def submit_apply(request: Request):
    settings, store = request.app.state.settings, request.app.state.store
    form = await read_form(request)
    model = trained.resolve(store, str(form.get("model") or ""), owner_of(request), settings)
    upload = form.get("media")
    if not (isinstance(upload, UploadFile) and (upload.filename or upload.size)):
        raise UploadError("the photo or clip is missing: upload one", 400)
    params: Dict[str, Any] = {"model": model.key, "model_label": model.label}
    files: Dict[str, bytes] = {}
    style_file, style_label = "", model.label
    if model.any_painting:  # the visitor's painting (an upload or an example) travels with the job
        painting_data, suffix, style_label, img = await image_from_form(form, "style", "painting", settings)
        if img is not None:
            trained.check_painting(img.width, img.height)
        style_file = "style" + suffix
        files[style_file] = painting_data
        params.update(trained.paint_strength(strings(form)))
    else:
        painting = trained.painting_of(store, settings, model)
        if painting is not None:
            style_file = "style" + painting.suffix.lower()
            files[style_file] = painting.read_bytes()
    limit = max(settings.max_upload_bytes, settings.max_video_bytes)
    data = await upload.read(limit + 1)
    label = display_name(upload_name(upload), "uploaded file")
    if not data:
        raise UploadError("the file is empty", 400)
    if sniff(data):
        img = await asyncio.to_thread(check_image, data, "photo", max_bytes=settings.max_upload_bytes,
                                      max_pixels=settings.max_pixels)
        size = _size(strings(form).get("size"), settings)
        check_not_thin(img.width, img.height, size, "photo", "stylize", f"at {size} px")
        params["size"] = size
        files["content" + img.suffix] = data
        return enqueue(request, files, params, "content" + img.suffix, style_file, label, style_label, task=STYLIZE)
    return await enqueue_clip(request, data, files, params, style_file, label, style_label)


async def enqueue_clip(request: Request, data: bytes, files: Dict[str, bytes], params: Dict[str, Any],
                       style_file: str, label: str, style_label: str):
    """Queue a clip through a model: its kind sniffed, its size, length and first frame checked."""
    settings = request.app.state.settings
    suffix = sniff_video(data)
    if not suffix:
        raise UploadError(f"this is neither a {ACCEPTED} image nor a {ACCEPTED_VIDEO} video "
                          "(the file's content was checked, not its name)", 415)
    if len(data) > settings.max_video_bytes:
        raise UploadError(f"clip: the file is larger than the limit of {settings.max_video_bytes / 2**20:.0f} MB",
                          413)
    clip = "clip" + suffix
    files[clip] = data

    def check(folder: Path) -> None:
        check_clip(folder / clip, "clip", max_seconds=settings.max_video_seconds,
                   max_frames=settings.max_video_frames, max_pixels=settings.max_pixels,
                   size=settings.video_size, poster=folder / POSTER)

    # Decoding the first frame of a clip takes a moment: off the event loop.
    return await asyncio.to_thread(enqueue, request, files, params, clip, style_file, label, style_label,
                                   task=VIDEO, prepare=check)


add_form_routes(router, "apply", "/apply", "/api/apply", submit_apply, models_page)


# --- sharing ----------------------------------------------------------------


def share(request: Request, job_id: str, shared: str):
    store = request.app.state.store
    job = job_or_404(store, job_id)
    access.check(SHARE, job, owner_of(request))
    if shared not in ("0", "1"):
        raise UploadError(f"shared {shared[:10]!r} must be 1 (share) or 0 (stop sharing)", 400)
    why = trained.without_model(store, job)
    if shared == "1" and why:
        raise UploadError(f"there is no model to share: {why}", 409)
    return store.set_shared(job.id, shared == "1")


@router.post("/api/jobs/{job_id}/share")
async def api_share(request: Request, job_id: str):
    try:
        form = await read_form(request)
        job = share(request, job_id, str(form.get("shared", "1")))
    except UploadError as e:
        return JSONResponse({"error": e.message}, status_code=e.status)
    return dict(job.public(), shared=job.shared)


@router.post("/jobs/{job_id}/share")
async def page_share(request: Request, job_id: str):
    try:
        form = await read_form(request)
        share(request, job_id, str(form.get("shared", "1")))
    except UploadError as e:
        return error_answer(request, e.status, e.message)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


# --- pages and files --------------------------------------------------------


@get("/models")
async def models(request: Request):
    return models_page(request)


@get("/jobs/{job_id}/result.mp4")
async def clip_result(request: Request, job_id: str):
    store = request.app.state.store
    job = job_or_404(store, job_id)
    path = store.folder(job.id) / "result.mp4"
    if job.task != VIDEO or job.state != DONE or not path.is_file():
        raise UploadError(f"this job has no clip{'' if job.final or job.task != VIDEO else ' yet'}", 404)
    # Range requests answered (206): browsers seek and stream the clip; HEAD too (files.get_and_head).
    return FileAnswer(path, media_type="video/mp4")


@get("/jobs/{job_id}/poster.jpg")
async def poster(request: Request, job_id: str):
    store = request.app.state.store
    job = job_or_404(store, job_id)
    path = store.folder(job.id) / POSTER
    if not path.is_file():
        raise UploadError("this job has no poster frame (only clips have one)", 404)
    return FileAnswer(path, media_type="image/jpeg")


def _size(text: Any, settings: Any) -> int:
    """The output size of a photo stylized with a model: one of the form's sizes."""
    sizes = [s for s in settings.sizes if s <= settings.max_size]
    if text in (None, ""):
        return settings.default_size
    if not str(text).isdigit() or int(text) not in sizes:
        raise UploadError(f"size {str(text)[:20]!r} is not one of {', '.join(map(str, sizes))}", 400)
    return int(text)
