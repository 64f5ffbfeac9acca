"""Routes of the jobs once submitted: watch one, its progress stream, cancel it, the history.

Pages                                  JSON API
  GET  /jobs/{id}     watch, download    GET  /api/jobs              history
  POST /jobs/{id}/cancel                 GET  /api/jobs/{id}         one job
  GET  /history       past jobs          POST /api/jobs/{id}/cancel  (the submitting browser only)
                                         GET  /api/jobs/{id}/events  progress (server-sent events)
                                         GET  /healthz

Like file_routes.py, an APIRouter whose routes read `request.app.state` (settings, store, pool,
hub, templates). A job's id is the capability to see it (guard.py); cancelling needs the
browser that submitted it (access.py).
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse

from .. import __version__
from . import access
from .access import CANCEL, USE
from .files import get_and_head
from .hub import StreamLimit
from .jobs import QUEUED, Job
from .responses import error_answer, job_or_404, settings_rows
from .trained import model_path, without_model
from .visitors import address_of, owner_of

STREAM_LIMIT_S = 600  # an event stream ends after this long; EventSource reconnects by itself
KEEPALIVE_S = 15  # a comment line this often on a quiet stream: a client that left is noticed, proxies keep it
EVENTS_PATH = "/api/jobs/{job_id}/events"  # the progress stream: GET only (a HEAD would hold it open)

router = APIRouter()
get = get_and_head(router)


def stream_state(job: Job, ahead: int = 0) -> Dict[str, Any]:
    """What the job's page shows of it, sent again on its progress stream whenever it changes."""
    return {
        "state": job.state, "progress": job.progress, "preview": job.preview, "ahead": ahead,
        "error": job.error, "result": job.result_url,
    }


def ahead_of(store, job: Job) -> int:
    """How many jobs are queued before `job` (0 once it runs)."""
    return store.queue_position(job) if job.state == QUEUED else 0


# --- pages ---------------------------------------------------------------------


@get("/history", response_class=HTMLResponse)
async def history(request: Request):
    state = request.app.state
    return state.templates.TemplateResponse(request, "history.html", {
        "jobs": state.store.list(owner_of(request), limit=200), "page": "history"})


@get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, job_id: str):
    state = request.app.state
    settings, store = state.settings, state.store
    job = job_or_404(store, job_id)
    ahead = ahead_of(store, job)
    visitor = owner_of(request)
    mine = access.owns(job, visitor)
    usable = access.may(USE, job, visitor) and model_path(store, job) is not None
    return state.templates.TemplateResponse(request, "job.html", {
        "no_model": without_model(store, job),  # a training that ended without one: no preview, no sharing
        "job": job, "ahead": ahead, "settings_rows": settings_rows(job, settings), "page": "job",
        "state_json": json.dumps(stream_state(job, ahead)), "can_cancel": access.may(CANCEL, job, visitor),
        "mine": mine, "can_use": usable, "sizes": [s for s in settings.sizes if s <= settings.max_size],
        "default_size": settings.default_size, "max_seconds": settings.max_video_seconds,
        "video_size": settings.video_size, "values": {},
    })


def cancel(request: Request, job_id: str) -> Job:
    """Ask for the job to stop; a refusal (access.py: an UploadError, answered as a page or JSON) if this
    browser may not."""
    store = request.app.state.store
    access.check(CANCEL, job_or_404(store, job_id), owner_of(request))
    return store.request_cancel(job_id)


@router.post("/jobs/{job_id}/cancel")
async def page_cancel(request: Request, job_id: str):
    cancel(request, job_id)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)


@get("/jobs/{job_id}/cancel")
@get("/api/jobs/{job_id}/cancel")
async def cancel_by_get(request: Request, job_id: str):
    job_or_404(request.app.state.store, job_id)
    return error_answer(request, 405, f"cancelling takes a POST request: use the Cancel button on "
                        f"the job's page, /jobs/{job_id}", headers={"Allow": "POST"})


# --- API -------------------------------------------------------------------------


@get("/api/jobs")
async def api_list(request: Request):
    return {"jobs": [j.public() for j in request.app.state.store.list(owner_of(request), limit=200)]}


@get("/api/jobs/{job_id}")
async def api_job(request: Request, job_id: str):
    store = request.app.state.store
    job = job_or_404(store, job_id)
    return dict(job.public(), ahead=ahead_of(store, job))


@router.post("/api/jobs/{job_id}/cancel")
async def api_cancel(request: Request, job_id: str):
    return cancel(request, job_id).public()


@get("/healthz")
async def healthz(request: Request):
    return {"ok": True, "version": __version__, "workers": len(request.app.state.pool.pids())}


@router.get(EVENTS_PATH)
async def events(request: Request, job_id: str):
    job = job_or_404(request.app.state.store, job_id)
    client = address_of(request)
    try:
        request.app.state.hub.check(client)
    except StreamLimit as e:
        return error_answer(request, e.status, e.message, headers={"Retry-After": "30"})
    return StreamingResponse(progress_stream(request, job_id, job, client), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def progress_stream(request: Request, job_id: str, job: Job, client: str):
    """The job's states as server-sent events until it ends, the stream's time is up or the server stops."""
    store, hub = request.app.state.store, request.app.state.hub
    # Progress is pushed by the hub's one poller; a stream only waits and forwards.
    # Subscribed here, inside the generator, so that its `finally` always undoes it.
    try:
        sub = hub.subscribe(job_id, client)
    except StreamLimit:  # taken by another stream since the check: end, the browser retries
        return
    try:
        yield "retry: 1000\n\n"
        now = store.get(job_id) or job  # read after subscribing: no change can fall in between
        state = stream_state(now, ahead_of(store, now))
        deadline = time.monotonic() + STREAM_LIMIT_S
        last = None
        while True:
            if state is not None and state != last:
                last = state
                final = state["state"] in ("done", "failed", "cancelled")
                yield f"event: {'end' if final else 'progress'}\ndata: {json.dumps(state)}\n\n"
                if final:
                    return
            left = deadline - time.monotonic()
            if left <= 0 or sub.closed:
                return  # the limit (EventSource reconnects), or the server is stopping
            state = await sub.next(min(left, KEEPALIVE_S))
            if state is None and not sub.closed:
                yield ": keep-alive\n\n"
    finally:
        hub.unsubscribe(sub)
