"""How the app sends a file: HEAD like GET without the body, and a Range header it cannot use ignored.

RFC 9110, section 14.2: a server MAY ignore a Range header, and MUST ignore one with a
range unit it does not know; an invalid range set (`abc`, `bytes=10-5`) is best ignored
too, so a client gets the whole file (200) rather than an error (Starlette answers 400).
A range that starts past the end is still refused (416), as the RFC asks.
"""

from __future__ import annotations

from typing import List, Tuple

from fastapi import FastAPI
from fastapi.routing import APIRoute
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


def answer_head(app: FastAPI, *, except_paths: Tuple[str, ...] = ()) -> None:
    """Every GET route also answers HEAD (FastAPI's routes do not, Starlette's plain ones do).

    `except_paths`: endless streams, which a HEAD request would hold open for nothing.
    """
    for route in app.routes:
        if isinstance(route, APIRoute) and "GET" in route.methods and route.path not in except_paths:
            route.methods.add("HEAD")
