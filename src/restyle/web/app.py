"""The FastAPI app: pages, the JSON API, the progress stream and the files of each job.

Pages                               JSON API
  GET  /             form, gallery     GET  /api/jobs              history
  POST /jobs         submit the form   POST /api/jobs              submit (multipart)
  GET  /jobs/{id}    watch, download   GET  /api/jobs/{id}         one job
  POST /jobs/{id}/cancel               POST /api/jobs/{id}/cancel
  GET  /history      past jobs         GET  /api/jobs/{id}/events  progress (server-sent events)
                                       GET  /api/gallery, /api/form, /healthz
Files: /jobs/{id}/result.png (download), preview.jpg, content, style; /examples/{key}.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.datastructures import UploadFile

from .. import __version__
from ..errors import InputError
from . import gallery as gallery_mod
from .form import form_fields, make_config, params_from_form
from .jobs import DONE, QUEUED, Job, JobStore, new_id
from .settings import Settings
from .uploads import MEDIA_TYPE, UploadError, check_image, display_name
from .worker import WorkerPool

HERE = Path(__file__).parent
TOKEN_COOKIE = "restyle_token"
OWNER_COOKIE = "restyle_owner"  # a random id per browser: its history lists its own jobs only
STREAM_LIMIT_S = 600  # an event stream ends after this long; EventSource reconnects by itself
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small fields


class Busy(Exception):
    pass


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: stop reading a request body past `limit` bytes, Content-Length or not (chunked)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge()
            return message

        return await self.app(scope, limited, send)


def create_app(settings: Optional[Settings] = None) -> FastAPI:
    settings = settings or Settings()
    store = JobStore(settings.db_path, settings.jobs_dir)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t))
    pool = WorkerPool(settings, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        store.recover()  # jobs left running by a stopped server run again
        gallery_mod.seed_gallery(store, settings)
        if settings.start_workers:
            pool.start()
        try:
            yield
        finally:
            if settings.start_workers:
                await asyncio.to_thread(pool.stop)

    app = FastAPI(title="restyle", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.store = store
    app.state.pool = pool
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    body_limit = 2 * settings.max_upload_bytes + FORM_OVERHEAD
    app.add_middleware(BodyLimit, limit=body_limit)

    # --- guards --------------------------------------------------------------

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if settings.token and not request.url.path.startswith("/static/"):
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
            if length is not None and (not length.isdigit() or int(length) > body_limit):
                return _error(request, templates, 413, f"the upload is too large; each image may be at most "
                              f"{settings.max_upload_bytes / 2**20:.0f} MB")
        response = await call_next(request)
        if settings.token and request.query_params.get("token") == settings.token:
            response.set_cookie(TOKEN_COOKIE, settings.token, httponly=True, samesite="strict")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'self'; img-src 'self' data: blob:; object-src 'none'"
        )
        return response

    def job_or_404(job_id: str) -> Job:
        job = store.get(job_id) if len(job_id) <= 64 else None
        if job is None:
            raise _NotFound()
        return job

    @app.exception_handler(_NotFound)
    async def not_found(request: Request, exc: _NotFound):
        return _error(request, templates, 404, "no such job (results are reachable only by their job link)")

    # --- submitting ----------------------------------------------------------

    def owner_of(request: Request) -> Optional[str]:
        cookie = request.cookies.get(OWNER_COOKIE)
        return hashlib.sha256(cookie.encode()).hexdigest() if cookie else None

    def with_owner(request: Request, response: Response) -> Response:
        if not request.cookies.get(OWNER_COOKIE):
            response.set_cookie(OWNER_COOKIE, request.state.new_owner, max_age=10 * 365 * 86400,
                                httponly=True, samesite="lax")
        return response

    async def submit(request: Request) -> Job:
        """Check and queue a job from a multipart form; raises UploadError, InputError or Busy."""
        try:
            form = await request.form(max_files=4, max_fields=20, max_part_size=64 * 1024)
        except BodyTooLarge:
            raise UploadError(f"the upload is too large; each image may be at most "
                              f"{settings.max_upload_bytes / 2**20:.0f} MB", 413) from None
        except Exception as e:  # a malformed body
            raise UploadError(f"could not read the form ({getattr(e, 'detail', e)})", 400) from None
        files: Dict[str, Tuple[bytes, str, str]] = {}  # role -> (data, suffix, label)
        for role, what in (("content", "content image"), ("style", "style image")):
            upload = form.get(role)
            example_key = form.get(f"{role}_example") or ""
            if isinstance(upload, UploadFile) and (upload.filename or upload.size):
                data = await upload.read(settings.max_upload_bytes + 1)
                # Decoding a big photo takes a while: off the event loop, so other pages stay quick.
                img = await asyncio.to_thread(check_image, data, what, max_bytes=settings.max_upload_bytes,
                                              max_pixels=settings.max_pixels)
                files[role] = (data, img.suffix, display_name(upload.filename, f"uploaded {role}"))
            elif isinstance(example_key, str) and example_key:
                ex = gallery_mod.find(settings, example_key)
                if ex is None:
                    raise UploadError(f"{what}: there is no example called {example_key[:40]!r}", 400)
                files[role] = (ex.path.read_bytes(), ex.path.suffix.lower(), ex.title)
            else:
                hint = "upload one or pick one of the examples" if role == "style" else "upload a photo"
                raise UploadError(f"{what} is missing: {hint}", 400)
        params = params_from_form({k: v for k, v in form.items() if isinstance(v, str)}, settings)
        job_id = new_id()
        folder = store.folder(job_id)
        folder.mkdir(parents=True)
        names = {}
        for role, (data, suffix, _) in files.items():
            names[role] = role + suffix
            (folder / names[role]).write_bytes(data)
        if not request.cookies.get(OWNER_COOKIE):
            request.state.new_owner = secrets.token_urlsafe(24)
            owner = hashlib.sha256(request.state.new_owner.encode()).hexdigest()
        else:
            owner = owner_of(request)
        job = store.add(job_id, params, names["content"], names["style"], files["content"][2], files["style"][2],
                        owner=owner, max_queue=settings.max_queue)
        if job is None:
            for p in folder.iterdir():
                p.unlink()
            folder.rmdir()
            raise Busy()
        pool.wake()
        return job

    def busy_message() -> str:
        return (f"the server is busy: {settings.max_queue} jobs are queued or running, the most it takes. "
                "Try again in a few minutes.")

    @app.post("/api/jobs")
    async def api_submit(request: Request):
        try:
            job = await submit(request)
        except (UploadError, InputError) as e:
            status = e.status if isinstance(e, UploadError) else 400
            return JSONResponse({"error": _message(e)}, status_code=status)
        except Busy:
            return JSONResponse({"error": busy_message()}, status_code=503, headers={"Retry-After": "60"})
        return with_owner(request, JSONResponse(job.public(), status_code=201, headers={"Location": f"/jobs/{job.id}"}))

    @app.post("/jobs")
    async def page_submit(request: Request):
        try:
            job = await submit(request)
        except (UploadError, InputError) as e:
            status = e.status if isinstance(e, UploadError) else 400
            return index_page(request, error=_message(e), status=status, values=await form_values(request))
        except Busy:
            return index_page(request, error=busy_message(), status=503, headers={"Retry-After": "60"},
                              values=await form_values(request))
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
        return templates.TemplateResponse(request, "job.html", {
            "job": job, "ahead": ahead, "settings_rows": settings_rows(job, settings), "page": "job",
            "state_json": json.dumps(stream_state(job)),
        })

    @app.post("/jobs/{job_id}/cancel")
    async def page_cancel(job_id: str):
        job_or_404(job_id)
        store.request_cancel(job_id)
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

    # --- API -----------------------------------------------------------------

    @app.get("/api/jobs")
    async def api_list(request: Request):
        return {"jobs": [j.public() for j in store.list(owner_of(request), limit=200)]}

    @app.get("/api/jobs/{job_id}")
    async def api_job(job_id: str):
        return job_or_404(job_id).public()

    @app.post("/api/jobs/{job_id}/cancel")
    async def api_cancel(job_id: str):
        job_or_404(job_id)
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

    @app.get("/api/jobs/{job_id}/events")
    async def events(request: Request, job_id: str):
        job_or_404(job_id)

        async def stream():
            last = None
            t0 = time.monotonic()
            yield "retry: 1000\n\n"
            while time.monotonic() - t0 < STREAM_LIMIT_S:
                job = store.get(job_id)
                state = stream_state(job)
                if state != last:
                    last = state
                    kind = "end" if job.final else "progress"
                    yield f"event: {kind}\ndata: {json.dumps(state)}\n\n"
                    if job.final:
                        return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(settings.progress_interval)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    def stream_state(job: Job) -> Dict[str, Any]:
        return {
            "state": job.state, "progress": job.progress, "preview": job.preview,
            "ahead": store.queue_position(job) if job.state == QUEUED else 0,
            "error": job.error, "result": f"/jobs/{job.id}/result.png" if job.state == DONE else None,
        }

    # --- files ---------------------------------------------------------------

    @app.get("/jobs/{job_id}/result.png")
    async def result(job_id: str, download: int = 0):
        job = job_or_404(job_id)
        path = store.folder(job.id) / "result.png"
        if job.state != DONE or not path.is_file():
            raise _NotFound()
        name = f"restyle-{job.id[:8]}.png"
        return FileResponse(path, media_type="image/png", filename=name if download else None,
                            content_disposition_type="attachment" if download else "inline")

    @app.get("/jobs/{job_id}/report.json")
    async def report(job_id: str):
        job = job_or_404(job_id)
        if job.report is None:
            raise _NotFound()
        return JSONResponse(job.report)

    @app.get("/jobs/{job_id}/preview.jpg")
    async def preview(job_id: str):
        job = job_or_404(job_id)
        try:  # read whole: the worker replaces the file while it paints (a small JPEG)
            data = (store.folder(job.id) / "preview.jpg").read_bytes()
        except FileNotFoundError:
            raise _NotFound() from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/jobs/{job_id}/{role}")
    async def source(job_id: str, role: str):
        job = job_or_404(job_id)
        if role not in ("content", "style"):
            raise _NotFound()
        name = job.content_file if role == "content" else job.style_file
        path = store.folder(job.id) / name
        return FileResponse(path, media_type=MEDIA_TYPE.get(path.suffix, "application/octet-stream"))

    @app.get("/examples/{key}")
    async def example(key: str):
        ex = gallery_mod.find(settings, key)
        if ex is None:
            raise _NotFound()
        return FileResponse(ex.path, media_type=MEDIA_TYPE.get(ex.path.suffix.lower().replace("jpeg", "jpg")))

    return app


class _NotFound(Exception):
    pass


def settings_rows(job: Job, settings: Settings):
    """(name, value) pairs shown on the job page: the settings it runs with, then what it took."""
    rows = [("content", job.content_label), ("style", job.style_label)]
    cfg = (job.report or {}).get("config")
    if cfg is None:
        try:
            cfg = make_config(job.params, settings).to_dict()
        except InputError:  # the server's overrides changed since: show what was asked
            cfg = job.params
    for name in ("size", "style_strength", "style_weight", "content_weight", "preserve_colors", "preset", "iterations",
                 "optimizer"):
        if name in cfg and cfg[name] is not None:
            rows.append((name.replace("_", " "), cfg[name]))
    if job.report:
        rows += [("device", job.report.get("device")), ("precision", job.report.get("precision")),
                 ("time", f"{job.report.get('timings_s', {}).get('total', 0):.1f} s"),
                 ("iterations", job.report.get("iterations"))]
    seen, out = set(), []
    for k, v in rows:
        if k not in seen:
            seen.add(k)
            out.append((k, v))
    return out


def _message(e: Exception) -> str:
    return e.message if isinstance(e, UploadError) else str(e)


def _error(request: Request, templates: Jinja2Templates, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", ""):
        return JSONResponse({"error": message}, status_code=status)
    return templates.TemplateResponse(request, "error.html", {"status": status, "message": message, "page": ""},
                                      status_code=status)
