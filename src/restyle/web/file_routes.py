"""Routes of a job's files and of the bundled examples: an APIRouter, the pattern for the app's other routes.

  GET /jobs/{id}/result.png (?download=1: as an attachment), report.json, preview.jpg, content, style
  GET /examples/{key}

A route finds what it needs on `request.app.state` (settings, store: set by app.create_app),
not in a closure, so a group of routes is a module of its own. Each answers HEAD too, declared
with files.get_and_head.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from . import gallery as gallery_mod
from .files import FileAnswer, get_and_head
from .media import VIDEO_TYPES
from .responses import _NotFound, job_or_404
from .uploads import MEDIA_TYPE

router = APIRouter()
get = get_and_head(router)


@get("/jobs/{job_id}/result.png")
async def result(request: Request, job_id: str, download: int = 0):
    store = request.app.state.store
    job = job_or_404(store, job_id)
    path = store.folder(job.id) / "result.png"
    if job.result_url != f"/jobs/{job.id}/result.png" or not path.is_file():
        raise _NotFound(f"this job has no result{'' if job.final else ' yet'} (it is {job.state})")
    name = f"restyle-{job.id[:8]}.png"
    return FileAnswer(path, media_type="image/png", filename=name if download else None,
                      content_disposition_type="attachment" if download else "inline")


@get("/jobs/{job_id}/report.json")
async def report(request: Request, job_id: str):
    job = job_or_404(request.app.state.store, job_id)
    if job.report is None:
        raise _NotFound(f"this job has no report{'' if job.final else ' yet'} (it is {job.state})")
    return JSONResponse(job.report)


@get("/jobs/{job_id}/preview.jpg")
async def preview(request: Request, job_id: str):
    store = request.app.state.store
    job = job_or_404(store, job_id)
    try:  # read whole: the worker replaces the file while it paints (a small JPEG)
        data = (store.folder(job.id) / "preview.jpg").read_bytes()
    except FileNotFoundError:
        raise _NotFound("this job has no preview yet") from None
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@get("/jobs/{job_id}/{role}")
async def source(request: Request, job_id: str, role: str):
    store = request.app.state.store
    job = job_or_404(store, job_id)
    if role not in ("content", "style"):
        raise _NotFound("a job has no such file: its files are result.png, preview.jpg, report.json, "
                        "content and style")
    name = job.content_file if role == "content" else job.style_file
    path = store.folder(job.id) / name
    if not name or not path.is_file():
        raise _NotFound(f"this job has no {role} picture")
    return FileAnswer(path, media_type=MEDIA_TYPE.get(path.suffix) or VIDEO_TYPES.get(path.suffix,
                                                                                      "application/octet-stream"))


@get("/examples/{key}")
async def example(request: Request, key: str):
    ex = gallery_mod.find(request.app.state.settings, key)
    if ex is None:
        raise _NotFound("there is no example by that name")
    return FileAnswer(ex.path, media_type=MEDIA_TYPE.get(ex.path.suffix.lower().replace("jpeg", "jpg")))
