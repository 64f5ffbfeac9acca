"""What every request passes before a route: the access token, the size of a form, the security headers.

A job's id (128 random bits) is the capability to *see* that job: its page, files and
progress (GET or HEAD, `JOB_VIEW`) need nothing else, with or without --token, so a job
link works wherever it is followed from. Everything else needs the token when the server
has one: in the query (`?token=`, then kept in a cookie), a header or that cookie.
The middleware reads the app's settings and templates from `request.app.state`.
"""

from __future__ import annotations

import re
import secrets

from fastapi import Request

from .responses import _error
from .settings import Settings

TOKEN_COOKIE = "restyle_token"
# What a job id alone opens, token or not: the job's page, files and progress (GET only).
JOB_VIEW = re.compile(r"^/(api/)?jobs/[A-Za-z0-9_-]{16,64}"
                      r"(/(events|result\.png|result\.mp4|report\.json|preview\.jpg|poster\.jpg|content|style))?$")
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small fields
CLIP_FORMS = ("/apply", "/api/apply")  # the forms that take a clip (model_routes.py)


def body_limit(settings: Settings, path: str) -> int:
    """The most bytes a request to `path` may send: two images per form; the form that takes a clip takes
    one file of either kind."""
    if path in CLIP_FORMS:
        return max(settings.max_upload_bytes, settings.max_video_bytes) + FORM_OVERHEAD
    return 2 * settings.max_upload_bytes + FORM_OVERHEAD


def too_large(settings: Settings) -> str:
    return (f"the upload is too large; each image may be at most {settings.max_upload_bytes / 2**20:.0f} MB, "
            f"a clip {settings.max_video_bytes / 2**20:.0f} MB")


def given_token(request: Request) -> str:
    return (
        request.query_params.get("token")
        or request.headers.get("x-restyle-token")
        or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        or request.cookies.get(TOKEN_COOKIE)
        or ""
    )


async def guard(request: Request, call_next):
    """HTTP middleware: refuse a request without the token (401) or with too large a body (413), then add
    the token cookie and the security headers to the answer."""
    settings, templates = request.app.state.settings, request.app.state.templates
    path = request.url.path
    viewing_a_job = request.method in ("GET", "HEAD") and JOB_VIEW.match(path) is not None
    if settings.token and not path.startswith("/static/") and not viewing_a_job:
        if not secrets.compare_digest(given_token(request).encode(), settings.token.encode()):
            return _error(request, templates, 401, "this server needs its access token: open the link "
                          "with ?token=... that whoever runs it gave you")
    if request.method == "POST":
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > body_limit(settings, path)):
            return _error(request, templates, 413, too_large(settings))
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
