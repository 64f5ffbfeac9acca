"""Routes of the painting form: the front page, submitting a painting, what the form offers.

  GET  /             the form, the examples, the gallery and your recent jobs
  POST /jobs         submit the form (a redirect to the job's page, or the form again with the refusal)
  POST /api/jobs     submit (multipart: content, style or their examples, the form's fields)
  GET  /api/gallery  the examples and the gallery's results
  GET  /api/form     the form's fields

Like file_routes.py, an APIRouter whose routes read `request.app.state` (settings, store, templates).
"""

from __future__ import annotations

import json
from typing import Dict, Optional, Tuple

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from . import gallery as gallery_mod
from .files import get_and_head
from .form import form_fields, make_config, params_from_form, preset_sizes
from .jobs import Job
from .submitting import add_form_routes, enqueue, read_form, strings
from .uploads import check_fits, image_from_form
from .visitors import owner_of

router = APIRouter()
get = get_and_head(router)


async def submit(request: Request) -> Job:
    """Check and queue a painting from a multipart form; raises UploadError, InputError or Busy."""
    settings = request.app.state.settings
    form = await read_form(request)
    params = params_from_form(strings(form), settings)
    cfg = make_config(params, settings)
    files: Dict[str, Tuple[bytes, str, str]] = {}  # role -> (data, suffix, label)
    for role, what in (("content", "content image"), ("style", "style image")):
        data, suffix, label, img = await image_from_form(form, role, what, settings)
        if img is not None:
            # Refuse now what the painting would refuse later (a 1000x1 strip), in the page's words.
            check_fits(img, what, role, cfg, max_size=settings.max_size)
        files[role] = (data, suffix, label)
    names = {role: role + suffix for role, (_, suffix, _) in files.items()}
    return enqueue(request, {names[r]: files[r][0] for r in files}, params, names["content"], names["style"],
                   files["content"][2], files["style"][2])


def index_page(request: Request, error: Optional[str] = None, status: int = 200, headers=None, values=None):
    state = request.app.state
    settings, store = state.settings, state.store
    contents, styles = gallery_mod.examples(settings)
    return state.templates.TemplateResponse(request, "index.html", {
        "fields": form_fields(settings), "contents": contents, "styles": styles,
        "gallery": gallery_mod.gallery(store, settings), "recent": store.list(owner_of(request), limit=6),
        "gallery_on": settings.gallery, "error": error, "values": values or {}, "max_mb": settings.max_upload_bytes / 2**20, "page": "new",
        "preset_sizes": json.dumps(preset_sizes(settings)), "default_size": settings.default_size,
    }, status_code=status, headers=headers)


add_form_routes(router, "submit", "/jobs", "/api/jobs", submit, index_page)


@get("/", response_class=HTMLResponse)
async def index(request: Request):
    return index_page(request)


@get("/api/gallery")
async def api_gallery(request: Request):
    settings = request.app.state.settings
    contents, styles = gallery_mod.examples(settings)
    return {
        "contents": [{"key": e.key, "title": e.title, "image": e.url} for e in contents],
        "styles": [{"key": e.key, "title": e.title, "image": e.url} for e in styles],
        "results": [j.public() for j in gallery_mod.gallery(request.app.state.store, settings)],
    }


@get("/api/form")
async def api_form(request: Request):
    return {"fields": [f.__dict__ for f in form_fields(request.app.state.settings)]}
