"""Who is asking: a random id per browser (a cookie) says whose history, jobs and models are whose.

The cookie holds a random secret; the store keeps only its sha256, so the
database alone cannot be used to act as a visitor.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Optional

from starlette.requests import Request
from starlette.responses import Response

OWNER_COOKIE = "restyle_owner"
TEN_YEARS = 10 * 365 * 86400


def owner_of(request: Request) -> Optional[str]:
    cookie = request.cookies.get(OWNER_COOKIE)
    return hashlib.sha256(cookie.encode()).hexdigest() if cookie else None


def claim_owner(request: Request) -> str:
    """This browser's owner id; a new one (its cookie set by `with_owner`) for a browser without."""
    owner = owner_of(request)
    if owner is not None:
        return owner
    if not getattr(request.state, "new_owner", None):
        request.state.new_owner = secrets.token_urlsafe(24)
    return hashlib.sha256(request.state.new_owner.encode()).hexdigest()


def address_of(request: Request) -> str:
    """The client's address, as the limits per address count it (behind a proxy: the proxy's)."""
    return request.client.host if request.client else "?"


def client_of(request: Request) -> str:
    """What the store keeps of the address: its sha256 (whose jobs came from where, not the address)."""
    return hashlib.sha256(address_of(request).encode()).hexdigest()


def with_owner(request: Request, response: Response) -> Response:
    """Set the cookie of an owner id `claim_owner` made for this request."""
    new = getattr(request.state, "new_owner", None)
    if new and not request.cookies.get(OWNER_COOKIE):
        response.set_cookie(OWNER_COOKIE, new, max_age=TEN_YEARS, httponly=True, samesite="lax")
    return response
