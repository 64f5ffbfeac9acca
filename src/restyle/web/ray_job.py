"""A web job on a Ray worker: its folder's files in, the local worker's job code, its news and files back.

The server's dispatcher (ray_pool.py) sends a JobPack: the job's row, the files of its
folder (the uploads; a training's checkpoint from its earlier turns; a clip's frames
made so far) and the trained model files it needs from other jobs' folders. Nothing
else is shared: the database and the uploads stay with the server.
`run_job_remote`, a Ray generator task, writes the files into a temporary folder on
the worker's node, runs the very code a local worker runs (worker.execute) there with
a StreamSink, and yields what a local worker would write into the store and folder:

    ("started", {"host", "pid", "node"})          where it runs
    ("progress", row, preview.jpg bytes or None)  a progress row (and the new preview)
    ("file", name, bytes)                         a file to keep now (a training's checkpoint)
    ("end", state, error, report, files)          how it ended, and the files it made or changed

The questions a local worker asks the store (cancelled by its owner? others waiting
for a training's turn? the server stopping?) it asks a small JobControl actor, whose
flags the dispatcher keeps up to date from the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from .jobs import FAILED, Job
from .settings import Settings

Files = Dict[str, bytes]  # a folder's files: path relative to it ("/"-separated) -> bytes
CONTROL_TIMEOUT_S = 10.0  # a flags read that takes longer keeps the flags read before


@dataclass(frozen=True)
class JobPack:
    """What travels to the worker with a job: its row, its folder's files, the trained models it uses."""

    job: Job
    files: Files
    models: Files = field(default_factory=dict)  # "<training job's id>/<its model file's name>" -> bytes
    own: Tuple[str, ...] = ()  # the ids of the owner's models among them, for the instant preview


class JobControl:
    """A Ray actor: the dispatcher's flags for each running job (cancel, stop, waiting), read by the workers."""

    def __init__(self) -> None:
        self.flags: Dict[str, Dict[str, bool]] = {}

    def update(self, flags: Dict[str, Dict[str, bool]]) -> None:
        self.flags = flags

    def get(self, job_id: str) -> Dict[str, bool]:
        return self.flags.get(job_id, {})


def folder_files(folder: Path, skip: Sequence[str] = ()) -> Files:
    """Every file under `folder` (its sub-folders too), but those named in `skip` at its top."""
    out: Files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel not in skip:
            out[rel] = path.read_bytes()
    return out


def safe_path(folder: Path, rel: str) -> Path:
    """`folder / rel` for a relative path that stays inside `folder`; ValueError otherwise."""
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or ".." in parts:
        raise ValueError(f"file name {rel!r} leaves the job's folder")
    return folder.joinpath(*parts)


def write_files(files: Files, folder: Path) -> Dict[str, str]:
    """Write `files` into `folder`, each atomically (a temporary file, then a rename); their sha256 by name."""
    from ..images import write_bytes_atomic

    digests = {}
    for rel, data in files.items():
        path = safe_path(folder, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(data, path)
        digests[rel] = hashlib.sha256(data).hexdigest()
    return digests


def changed_files(folder: Path, sent: Dict[str, str]) -> Files:
    """The files under `folder` that are new or differ from those `sent` (name -> sha256)."""
    return {rel: data for rel, data in folder_files(folder).items()
            if sent.get(rel) != hashlib.sha256(data).hexdigest()}


def photos_here(digest: str, refs: List[Any]) -> Path:
    """The server's training photos on this node: fetched once through the object store, kept by digest."""
    import ray

    home = Path(tempfile.gettempdir()) / f"restyle-photos-{digest[:16]}"
    if not home.is_dir():
        staging = Path(tempfile.mkdtemp(prefix="restyle-photos-", dir=home.parent))
        write_files(ray.get(refs[0]), staging)
        try:
            os.rename(staging, home)
        except OSError:  # another job on this node was quicker
            shutil.rmtree(staging, ignore_errors=True)
    return home


class StreamSink:
    """A Ray worker's sink (worker.Sink): messages for the generator to yield, questions to the JobControl."""

    def __init__(self, pack: JobPack, folder: Path, models: Path, control: Any, interval: float,
                 sent: Dict[str, str]) -> None:
        self.messages: "queue.Queue[Tuple[Any, ...]]" = queue.Queue()
        self.pack, self.folder, self.models = pack, folder, models
        self.control, self.interval, self.sent = control, interval, sent
        self._flags: Dict[str, bool] = {}
        self._read = -1e9
        self.ended = False

    def flags(self) -> Dict[str, bool]:
        """The dispatcher's flags for this job, asked at most once per progress interval."""
        import ray

        if time.monotonic() - self._read >= self.interval:
            self._read = time.monotonic()
            try:
                self._flags = ray.get(self.control.get.remote(self.pack.job.id), timeout=CONTROL_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - the control actor restarting: keep the last flags
                pass
        return self._flags

    def progress(self, row: Dict[str, Any], preview: bool) -> None:
        image = self.folder / "preview.jpg"
        data = image.read_bytes() if preview and image.is_file() else None
        # A copy now: the job thread goes on changing its row while the message waits to be sent.
        self.messages.put(("progress", json.loads(json.dumps(row, default=str)), data))

    def cancel_requested(self) -> bool:
        return self.flags().get("cancel", False)

    def others_waiting(self) -> bool:
        return self.flags().get("waiting", False)

    def stopping(self) -> bool:
        return self.flags().get("stop", False)

    def keep(self, name: str) -> None:
        path = safe_path(self.folder, name)
        if path.is_file():
            self.messages.put(("file", name, path.read_bytes()))

    def model_file(self, key: str) -> Optional[Path]:
        """The copy of training `key`'s model, under its own file name (a model's name is its file's stem)."""
        names = [rel for rel in self.pack.models if rel.split("/")[0] == key]
        return safe_path(self.models, names[0]) if names else None

    def own_models(self) -> Sequence[Path]:
        return [path for path in map(self.model_file, self.pack.own) if path is not None]

    def end(self, state: str, *, error: Optional[str] = None, report: Any = None) -> None:
        try:
            files = changed_files(self.folder, self.sent)
        except OSError as e:  # the results cannot be read back: the job failed here
            state, error, report, files = FAILED, f"cannot read the job's results: {e.strerror or e}", None, {}
        self.ended = True
        self.messages.put(("end", state, error, report, files))


def run_job_remote(settings: Settings, pack: JobPack, photos: Optional[Tuple[str, List[Any]]], control: str,
                   cpus: int) -> Iterator[Tuple[Any, ...]]:
    """The Ray task (a generator): run the job in a temporary folder, yield its news, then its end and files."""
    import socket

    import ray
    import torch

    from ..device import worker_device
    from .worker import JobRun

    if cpus:
        torch.set_num_threads(cpus)  # Ray's share of cores; CPU results depend on the thread count
    device = worker_device(settings.devices[0], ray.get_gpu_ids())
    root = Path(tempfile.mkdtemp(prefix="restyle-web-job-"))
    try:
        folder, models = root / "job", root / "models"
        folder.mkdir()
        sent = write_files(pack.files, folder)
        write_files(pack.models, models)
        if photos is not None:
            settings = replace(settings, photos_dir=photos_here(*photos))
        sink = StreamSink(pack, folder, models, ray.get_actor(control), settings.progress_interval, sent)
        yield ("started", {"host": socket.gethostname(), "pid": os.getpid(),
                           "node": ray.get_runtime_context().get_node_id()})
        run = JobRun(settings, pack.job, folder, device, sink)
        thread = threading.Thread(target=_execute, args=(run, sink), name="restyle-web-job", daemon=True)
        thread.start()
        while True:
            message = sink.messages.get()
            yield message
            if message[0] == "end":
                break
        thread.join()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _execute(run: Any, sink: StreamSink) -> None:
    """worker.execute, and an end even if something escapes it (the generator waits for one)."""
    from .worker import execute

    try:
        execute(run)
    except BaseException as e:  # noqa: BLE001 - reported as the job's end, never lost
        if not sink.ended:
            sink.end(FAILED, error=f"internal error: {type(e).__name__}: {e}")
