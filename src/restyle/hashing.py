"""sha256 of a file, read in 1 MB blocks. No torch: the web server uses it too."""

from __future__ import annotations

import hashlib
import os
from typing import Union


def sha256sum(path: Union[str, os.PathLike]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
