"""How the app sends a file: HEAD like GET without the body, and a Range header it cannot use ignored.

RFC 9110, section 14.2: a server MAY ignore a Range header, and MUST ignore one with a
range unit it does not know; an invalid range set (`abc`, `bytes=10-5`) is best ignored
too, so a client gets the whole file (200) rather than an error (Starlette answers 400).
A range that starts past the end is still refused (416), as the RFC asks.
"""

from __future__ import annotations

import re
from typing import Any, Callable, List, Tuple

from fastapi import APIRouter
from starlette.responses import FileResponse

try:  # Starlette >= 0.39 answers Range requests; an older one sends whole files and never calls the parser
    from starlette.responses import MalformedRangeHeader
except ImportError:  # pragma: no cover
    class MalformedRangeHeader(Exception):  # type: ignore[no-redef]
        pass


class FileAnswer(FileResponse):
    """A FileResponse (200, 206 or 416; HEAD sends the headers only) that ignores a malformed Range."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> List[Tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []  # no usable range: the whole file


def get_and_head(router: APIRouter) -> Callable[..., Callable]:
    """`get = get_and_head(router)`: `@get(path, **kw)` declares a GET route of `router` that answers HEAD as well.

    HEAD is declared with each route: FastAPI's routes do not answer it by themselves (Starlette's plain
    ones do), and the FastAPI in use (0.165) keeps an included router's routes inside it, out of reach of
    a pass over `app.routes` after the fact.
    """
    def get(path: str, **kw: Any) -> Callable:
        def declare(endpoint: Callable) -> Callable:
            # OpenAPI names it as a GET-only route (name_path_get), not by whichever of the two methods a set
            # happens to list first.
            op = re.sub(r"\W", "_", f"{kw.get('name') or endpoint.__name__}{path}") + "_get"
            return router.api_route(path, methods=["GET", "HEAD"], operation_id=op, **kw)(endpoint)

        return declare

    return get
