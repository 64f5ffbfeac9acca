"""The FastAPI app: pages, the JSON API, the progress stream and the files of each job.

Pages                               JSON API
  GET  /             form, gallery     GET  /api/jobs              history
  POST /jobs         submit the form   POST /api/jobs              submit (multipart)
  GET  /jobs/{id}    watch, download   GET  /api/jobs/{id}         one job
  POST /jobs/{id}/cancel               POST /api/jobs/{id}/cancel  (the submitting browser only)
  GET  /history      past jobs         GET  /api/jobs/{id}/events  progress (server-sent events)
                                       GET  /api/gallery, /api/form, /healthz
  GET  /models, POST /train, /apply, /jobs/{id}/share: feed-forward models (model_routes.py)
Files (file_routes.py, an APIRouter): /jobs/{id}/result.png (download), preview.jpg, report.json, content,
style; /examples/{key}; result.mp4 and poster.jpg are model_routes.py's.

A job's id (128 random bits) is the capability to *see* that job: its page, files
and progress need nothing else, with or without --token, so a job link works
wherever it is followed from. Submitting, the history and the gallery need the
token; cancelling needs the browser that submitted the job (its owner cookie; access.py has the rules).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import InputError
from . import access, file_routes
from . import gallery as gallery_mod
from .access import CANCEL, USE
from .datalock import DataDirLock
from .files import answer_head
from .form import form_fields, make_config, params_from_form, preset_sizes
from .hub import ProgressHub, StreamLimit
from .jobs import PAINT, QUEUED, Cap, Job, JobStore, new_id
from .responses import BodyLimit, BodyTooLarge, Busy, _error, _message, _NotFound, settings_rows
from .responses import job_or_404 as find_job
from .settings import Settings
from .trained import model_path, without_model
from .uploads import UploadError, check_fits, image_from_form
from .visitors import address_of, claim_owner, client_of, owner_of, with_owner
from .ray_pool import RayWorkerPool
from .worker import WorkerPool

HERE = Path(__file__).parent
TOKEN_COOKIE = "restyle_token"
STREAM_LIMIT_S = 600  # an event stream ends after this long; EventSource reconnects by itself
KEEPALIVE_S = 15  # a comment line this often on a quiet stream: a client that left is noticed, proxies keep it
# What a job id alone opens, token or not: the job's page, files and progress (GET only).
JOB_VIEW = re.compile(r"^/(api/)?jobs/[A-Za-z0-9_-]{16,64}"
                      r"(/(events|result\.png|result\.mp4|report\.json|preview\.jpg|poster\.jpg|content|style))?$")
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small fields
CLIP_FORMS = ("/apply", "/api/apply")  # the forms that take a clip (model_routes.py)
EVENTS_PATH = "/api/jobs/{job_id}/events"  # the progress stream: GET only (a HEAD would hold it open)


def create_app(settings: Optional[Settings] = None, lock: Optional[DataDirLock] = None) -> FastAPI:
    """The app; `lock` is the data folder's lock when `server.serve` took it already (else start-up takes it)."""
    settings = settings or Settings()
    store = JobStore(settings.db_path, settings.jobs_dir, create=False)  # nothing written before start-up
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t))
    pool = WorkerPool(settings, store) if settings.ray_address is None else RayWorkerPool(settings, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        own_lock = None
        if lock is None or not lock.held:
            own_lock = DataDirLock(settings.data_dir)
            own_lock.acquire()  # one server per data folder, before any write
        try:
            store.create()
            store.recover()  # jobs left running by a stopped server run again
            gallery_mod.seed_gallery(store, settings)
            hub.start()
            if settings.start_workers:
                pool.start()
            try:
                yield
            finally:
                await hub.stop()
                if settings.start_workers:
                    await asyncio.to_thread(pool.stop)
        finally:
            if own_lock is not None:
                own_lock.release()

    app = FastAPI(title="restyle", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.store = store
    app.state.pool = pool
    hub = ProgressHub(store, lambda job, ahead: stream_state(job, ahead), settings.progress_interval,
                      per_client=settings.max_streams_per_client, total=settings.max_streams)
    app.state.hub = hub
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def body_limit(path: str) -> int:
        """Two images per form; the form that takes a clip takes one file of either kind."""
        if path in CLIP_FORMS:
            return max(settings.max_upload_bytes, settings.max_video_bytes) + FORM_OVERHEAD
        return 2 * settings.max_upload_bytes + FORM_OVERHEAD

    app.add_middleware(BodyLimit, limit=body_limit)

    # --- guards --------------------------------------------------------------

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        viewing_a_job = request.method in ("GET", "HEAD") and JOB_VIEW.match(path) is not None
        if settings.token and not path.startswith("/static/") and not viewing_a_job:
            given = (
                request.query_params.get("token")
                or request.headers.get("x-restyle-token")
                or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
                or request.cookies.get(TOKEN_COOKIE)
                or ""
            )
            if not secrets.compare_digest(given.encode(), settings.token.encode()):
                return _error(request, templates, 401, "this server needs its access token: open the link "
                              "with ?token=... that whoever runs it gave you")
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > body_limit(path)):
                return _error(request, templates, 413, too_large())
        response = await call_next(request)
        if settings.token and request.query_params.get("token") == settings.token:
            # Lax, not Strict: a link followed from another site (a chat, a mail) must carry it.
            response.set_cookie(TOKEN_COOKIE, settings.token, httponly=True, samesite="lax")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'self'; img-src 'self' data: blob:; object-src 'none'"
        )
        return response

    def job_or_404(job_id: str) -> Job:
        return find_job(store, job_id)

    @app.exception_handler(_NotFound)
    async def not_found(request: Request, exc: _NotFound):
        return _error(request, templates, 404, exc.message)

    # Every other error a browser can meet is a page too (JSON for the API and for scripts).
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = {404: "there is no page at this address", 405: "this address does not take that kind of request"}
        return _error(request, templates, exc.status_code, message.get(exc.status_code, str(exc.detail)),
                      headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        wrong = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
                          for e in exc.errors())
        return _error(request, templates, 422, f"this address was given a value it cannot use ({wrong})")

    # --- submitting ----------------------------------------------------------

    def too_large() -> str:
        return (f"the upload is too large; each image may be at most {settings.max_upload_bytes / 2**20:.0f} MB, "
                f"a clip {settings.max_video_bytes / 2**20:.0f} MB")

    async def read_form(request: Request):
        """The multipart form, its files spooled; UploadError for one too large or malformed."""
        try:
            return await request.form(max_files=4, max_fields=20, max_part_size=64 * 1024)
        except BodyTooLarge:
            raise UploadError(too_large(), 413) from None
        except Exception as e:  # a malformed body
            raise UploadError(f"could not read the form ({getattr(e, 'detail', e)})", 400) from None

    def enqueue(request: Request, files: Dict[str, bytes], params: Dict[str, Any], content_file: str,
                style_file: str, content_label: str, style_label: str, *, task: str = PAINT,
                prepare=None, caps: Tuple[Cap, ...] = ()) -> Job:
        """Write a new job's files into its folder and queue it; Busy if the queue is full.

        `prepare(folder)` may check and write more (a clip); its exception removes the folder.
        `caps`: more limits (JobStore.add checks them); CapReached if one is full.
        """
        job_id = new_id()
        folder = store.folder(job_id)
        folder.mkdir(parents=True)
        try:
            for name, data in files.items():
                (folder / name).write_bytes(data)
            if prepare is not None:
                prepare(folder)
            job = store.add(job_id, params, content_file, style_file, content_label, style_label,
                            owner=claim_owner(request), max_queue=settings.max_queue, task=task,
                            client=client_of(request), caps=caps)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if job is None:
            shutil.rmtree(folder, ignore_errors=True)
            raise Busy()
        pool.wake()
        return job

    async def submit(request: Request) -> Job:
        """Check and queue a job from a multipart form; raises UploadError, InputError or Busy."""
        form = await read_form(request)
        params = params_from_form({k: v for k, v in form.items() if isinstance(v, str)}, settings)
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

    def busy_message() -> str:
        return (f"the server is busy: {settings.max_queue} jobs are queued or running, the most it takes. "
                "Try again in a few minutes.")

    async def try_submit(request: Request, how: Callable = submit):
        """(job, None), or (None, (message, HTTP status, headers)) when `how` refuses the submission."""
        try:
            return await how(request), None
        except (UploadError, InputError) as e:
            return None, (_message(e), e.status if isinstance(e, UploadError) else 400, getattr(e, "headers", None))
        except Busy:
            return None, (busy_message(), 503, {"Retry-After": "60"})

    @app.post("/api/jobs")
    async def api_submit(request: Request):
        job, refused = await try_submit(request)
        if refused is not None:
            message, status, headers = refused
            return JSONResponse({"error": message}, status_code=status, headers=headers)
        return with_owner(request, JSONResponse(job.public(), status_code=201, headers={"Location": f"/jobs/{job.id}"}))

    @app.post("/jobs")
    async def page_submit(request: Request):
        job, refused = await try_submit(request)
        if refused is not None:
            message, status, headers = refused
            return index_page(request, error=message, status=status, headers=headers, values=await form_values(request))
        return with_owner(request, RedirectResponse(f"/jobs/{job.id}", status_code=303))

    # --- pages ---------------------------------------------------------------

    async def form_values(request: Request) -> Dict[str, str]:
        """The choices a refused form carried (not its files), to show the form again as it was."""
        try:
            form = await request.form()  # parsed already: starlette keeps it
        except Exception:
            return {}
        return {k: v for k, v in form.items() if isinstance(v, str)}

    def index_page(request: Request, error: Optional[str] = None, status: int = 200, headers=None, values=None):
        contents, styles = gallery_mod.examples(settings)
        return templates.TemplateResponse(request, "index.html", {
            "fields": form_fields(settings), "contents": contents, "styles": styles,
            "gallery": gallery_mod.gallery(store, settings), "recent": store.list(owner_of(request), limit=6),
            "gallery_on": settings.gallery, "error": error, "values": values or {}, "max_mb": settings.max_upload_bytes / 2**20, "page": "new",
            "preset_sizes": json.dumps(preset_sizes(settings)), "default_size": settings.default_size,
        }, status_code=status, headers=headers)

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request):
        return index_page(request)

    @app.get("/history", response_class=HTMLResponse)
    async def history(request: Request):
        return templates.TemplateResponse(request, "history.html", {"jobs": store.list(owner_of(request), limit=200), "page": "history"})

    @app.get("/jobs/{job_id}", response_class=HTMLResponse)
    async def job_page(request: Request, job_id: str):
        job = job_or_404(job_id)
        ahead = store.queue_position(job) if job.state == QUEUED else 0
        visitor = owner_of(request)
        mine = access.owns(job, visitor)
        usable = access.may(USE, job, visitor) and model_path(store, job) is not None
        return templates.TemplateResponse(request, "job.html", {
            "no_model": without_model(store, job),  # a training that ended without one: no preview, no sharing
            "job": job, "ahead": ahead, "settings_rows": settings_rows(job, settings), "page": "job",
            "state_json": json.dumps(stream_state(job, ahead)), "can_cancel": access.may(CANCEL, job, visitor),
            "mine": mine, "can_use": usable, "sizes": [s for s in settings.sizes if s <= settings.max_size],
            "default_size": settings.default_size, "max_seconds": settings.max_video_seconds,
            "video_size": settings.video_size, "values": {},
        })

    @app.post("/jobs/{job_id}/cancel")
    async def page_cancel(request: Request, job_id: str):
        job = job_or_404(job_id)
        refused = access.refusal(CANCEL, job, owner_of(request))
        if refused is not None:
            return _error(request, templates, refused.status, refused.message)
        store.request_cancel(job_id)
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

    @app.get("/jobs/{job_id}/cancel")
    @app.get("/api/jobs/{job_id}/cancel")
    async def cancel_by_get(request: Request, job_id: str):
        job_or_404(job_id)
        return _error(request, templates, 405, f"cancelling takes a POST request: use the Cancel button on "
                      f"the job's page, /jobs/{job_id}", headers={"Allow": "POST"})

    # --- API -----------------------------------------------------------------

    @app.get("/api/jobs")
    async def api_list(request: Request):
        return {"jobs": [j.public() for j in store.list(owner_of(request), limit=200)]}

    @app.get("/api/jobs/{job_id}")
    async def api_job(job_id: str):
        job = job_or_404(job_id)
        return dict(job.public(), ahead=store.queue_position(job) if job.state == QUEUED else 0)

    @app.post("/api/jobs/{job_id}/cancel")
    async def api_cancel(request: Request, job_id: str):
        job = job_or_404(job_id)
        refused = access.refusal(CANCEL, job, owner_of(request))
        if refused is not None:
            return JSONResponse({"error": refused.message}, status_code=refused.status)
        return store.request_cancel(job_id).public()

    @app.get("/api/gallery")
    async def api_gallery():
        contents, styles = gallery_mod.examples(settings)
        return {
            "contents": [{"key": e.key, "title": e.title, "image": e.url} for e in contents],
            "styles": [{"key": e.key, "title": e.title, "image": e.url} for e in styles],
            "results": [j.public() for j in gallery_mod.gallery(store, settings)],
        }

    @app.get("/api/form")
    async def api_form():
        return {"fields": [f.__dict__ for f in form_fields(settings)]}

    @app.get("/healthz")
    async def healthz():
        return {"ok": True, "version": __version__, "workers": len(pool.pids())}

    @app.get(EVENTS_PATH)
    async def events(request: Request, job_id: str):
        job = job_or_404(job_id)
        client = address_of(request)
        try:
            hub.check(client)
        except StreamLimit as e:
            return _error(request, templates, e.status, e.message, headers={"Retry-After": "30"})

        async def stream():
            # Progress is pushed by the hub's one poller; a stream only waits and forwards.
            # Subscribed here, inside the generator, so that its `finally` always undoes it.
            try:
                sub = hub.subscribe(job_id, client)
            except StreamLimit:  # taken by another stream since the check: end, the browser retries
                return
            try:
                yield "retry: 1000\n\n"
                now = store.get(job_id) or job  # read after subscribing: no change can fall in between
                state = stream_state(now, store.queue_position(now) if now.state == QUEUED else 0)
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

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    def stream_state(job: Job, ahead: int = 0) -> Dict[str, Any]:
        return {
            "state": job.state, "progress": job.progress, "preview": job.preview, "ahead": ahead,
            "error": job.error, "result": job.result_url,
        }

    from . import model_routes

    model_routes.install(app, model_routes.Env(
        settings=settings, store=store, templates=templates, read_form=read_form, enqueue=enqueue,
        error=lambda request, status, message, headers=None: _error(request, templates, status, message, headers),
        job_or_404=job_or_404, form_values=form_values, try_submit=try_submit,
    ))

    # --- files (file_routes.py) --------------------------------------------------

    app.include_router(file_routes.router)

    answer_head(app, except_paths=(EVENTS_PATH,))
    return app


