"""The one registry of bundled trained networks, without torch (the web form lists them).

Each bundled network is `bundled/NAME.pt` with its training sidecar `bundled/NAME.json`; the
sidecar names the network's family (`"style"`, `"upscaler"`, ...: modelfile.FAMILIES) and, for a
style network, the painting it learned. `restyle models`, the web app, `--model`, `--init-model`
and `--upscale` all find bundled networks here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional, Tuple

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
MODEL_SUFFIX = ".pt"


@dataclass(frozen=True)
class Bundled:
    name: str  # the file's stem: what a user types (`--model starry_night`, `--upscale up4`)
    path: Path
    family: str  # modelfile.FAMILIES key
    style_name: Optional[str] = None  # the painting a style network learned
    style_sha256: Optional[str] = None


@lru_cache(maxsize=4)
def _scan(folder: Path) -> Tuple[Bundled, ...]:
    found = []
    for path in sorted(folder.glob(f"*{MODEL_SUFFIX}")):
        try:
            info = json.loads(path.with_suffix(".json").read_text())
        except (OSError, ValueError):
            info = {}
        style = info.get("style") or {}
        found.append(Bundled(path.stem, path, str(info.get("family", "unknown")), style.get("name"),
                             style.get("sha256")))
    return tuple(found)


def bundled(family: Optional[str] = None, folder: Optional[Path] = None) -> Dict[str, Bundled]:
    """The bundled networks by name, all of them or those of one family."""
    return {b.name: b for b in _scan(folder or BUNDLED_DIR) if family is None or b.family == family}
