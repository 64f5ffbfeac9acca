"""The app's plumbing around its routes: the request-body limit, the error answers (a page for a
browser, JSON for the API) and their exception handlers, and the job page's settings table.
How files are sent: files.py."""

from __future__ import annotations

from typing import Any, Callable

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import InputError
from .form import make_config
from .jobs import PAINT, Job, JobStore
from .settings import Settings
from .trained import model_settings_rows
from .uploads import UploadError


class Busy(Exception):
    pass


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: stop reading a request body past `limit(path)` bytes, Content-Length or not (chunked)."""

    def __init__(self, app: Any, limit: Callable[[str], int]) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        seen = 0
        limit = self.limit(scope.get("path", ""))

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return message

        return await self.app(scope, limited, send)


class _NotFound(Exception):
    def __init__(self, message: str = "no such job (results are reachable only by their job link)") -> None:
        super().__init__(message)
        self.message = message


def job_or_404(store: JobStore, job_id: str) -> Job:
    """The job `job_id` names; _NotFound (404) for none (an id is at most 64 characters)."""
    job = store.get(job_id) if len(job_id) <= 64 else None
    if job is None:
        raise _NotFound()
    return job


def settings_rows(job: Job, settings: Settings):
    """(name, value) pairs shown on the job page: the settings it runs with, then what it took.

    Iterations are shown per scale as they run (or ran): `110 + 28 = 138 (256 px, 512 px)`,
    the count the progress bar uses, not the config's coarsest-scale number alone.
    """
    from ..optimiser.schedule import pyramid

    if job.task != PAINT:
        return model_settings_rows(job, settings)
    rows = [("content", job.content_label), ("style", job.style_label)]
    cfg = (job.report or {}).get("config")
    stages = (job.report or {}).get("stages")
    if cfg is None:
        try:
            config = make_config(job.params, settings)
            cfg = config.to_dict()
            stages = [{"long_side": s.long_side, "iterations": s.iterations}
                      for s in pyramid(config.size, config.iterations, config.scales)]
        except InputError:  # the server's overrides changed since: show what was asked
            cfg = job.params
    for name in ("size", "style_strength", "style_weight", "content_weight", "preserve_colors", "preset",
                 "optimizer"):
        if name in cfg and cfg[name] is not None:
            rows.append((name.replace("_", " "), cfg[name]))
    if stages:
        counts = [int(s["iterations"]) for s in stages]
        sides = ", ".join(f"{s['long_side']} px" for s in stages)
        rows.append(("iterations", f"{' + '.join(map(str, counts))} = {sum(counts)} ({sides})" if len(counts) > 1
                     else f"{counts[0]} ({sides})"))
    elif "iterations" in cfg:
        rows.append(("iterations", cfg["iterations"]))
    if job.report:
        rows += [("device", job.report.get("device")), ("precision", job.report.get("precision")),
                 ("time", f"{job.report.get('timings_s', {}).get('total', 0):.1f} s")]
    return rows


def _message(e: Exception) -> str:
    return e.message if isinstance(e, UploadError) else str(e)


def _error(request: Request, templates: Jinja2Templates, status: int, message: str, headers=None) -> Response:
    """A page for a browser (it asks for text/html), JSON for the API and for scripts."""
    if request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", ""):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    return templates.TemplateResponse(request, "error.html", {"status": status, "message": message, "page": ""},
                                      status_code=status, headers=headers)


def error_answer(request: Request, status: int, message: str, headers=None) -> Response:
    """_error with the app's templates (request.app.state.templates)."""
    return _error(request, request.app.state.templates, status, message, headers)


async def not_found(request: Request, exc: _NotFound):
    return error_answer(request, 404, exc.message)


async def http_error(request: Request, exc: StarletteHTTPException):
    """Every other error a browser can meet is a page too (JSON for the API and for scripts)."""
    message = {404: "there is no page at this address", 405: "this address does not take that kind of request"}
    return error_answer(request, exc.status_code, message.get(exc.status_code, str(exc.detail)),
                        headers=getattr(exc, "headers", None))


async def invalid(request: Request, exc: RequestValidationError):
    wrong = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
                      for e in exc.errors())
    return error_answer(request, 422, f"this address was given a value it cannot use ({wrong})")


async def refused(request: Request, exc: UploadError):
    return error_answer(request, exc.status, exc.message, exc.headers)


# The app's exception handlers (app.create_app adds them): each answers with error_answer.
ERROR_HANDLERS = {_NotFound: not_found, StarletteHTTPException: http_error, RequestValidationError: invalid,
                  UploadError: refused}
