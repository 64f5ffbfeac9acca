"""Stylize a clip frame by frame: stream, keep frames in a work folder, assemble, keep the audio.

    stylizer = NetworkFrames(model.stylize_tensor, temporal_weight=4.0)
    stylize_video("in.mp4", "out.mp4", stylizer, VideoConfig(size=320))

Only the state the next frame needs is carried (the previous input in grey and the
previous result), so memory does not grow with the clip. Three threads share the work
(restyle.video.background): one decodes and computes the optical flow a few frames
ahead, the caller's runs the stylizer, one writes each result to the work folder as a
PNG and encodes it, in order. A run started again with the same settings skips the
frames already in the work folder (re-encoding them) and, because each frame depends
only on the input and the *saved* (8-bit) previous result, gives the same video.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Tuple, Union

import numpy as np
import torch
from PIL import Image

from .. import __version__
from ..errors import Cancelled, InputError
from ..images import PathLike, save_atomic, write_text_atomic
from .background import ReadAhead, WriteBehind, thread_share
from .flow import FLOW_PRESETS, FlowEstimator, gray, warp
from .io import VideoWriter, check_output, count_frames, frame_times, probe, read_frames, regular

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class VideoConfig:
    """Settings of a clip that do not belong to the stylization of one frame."""

    size: Optional[int] = 512  # long side of the output; never upscaled; rounded to even sides
    start: float = 0.0  # seconds into the clip
    duration: Optional[float] = None  # seconds from start; None: to the end
    fps: Optional[float] = None  # a folder of frames' rate (default 25); a clip keeps its own
    crf: Optional[int] = None  # encoder quality (default: 18 for H.264, 30 for VP9)
    flow: str = "medium"  # DIS preset
    keep_frames: bool = False  # keep the work folder after the video is written

    def __post_init__(self) -> None:
        if not (self.start >= 0 and math.isfinite(self.start)):
            raise InputError(f"start {self.start} must be a number of seconds >= 0")
        if self.duration is not None and not (self.duration > 0 and math.isfinite(self.duration)):
            raise InputError(f"duration {self.duration} must be a number of seconds > 0")
        if self.fps is not None and not (0 < self.fps <= 240):
            raise InputError(f"fps {self.fps} is out of range; it must be in (0, 240]")
        if self.crf is not None and not 0 <= self.crf <= 63:
            raise InputError(f"crf {self.crf} is out of range; it must be in [0, 63]")
        if self.flow not in FLOW_PRESETS:
            raise InputError(f"flow {self.flow!r} is not one of {', '.join(FLOW_PRESETS)}")


# --- events (progress is data; the CLI draws the bar) -----------------------


@dataclass(frozen=True)
class VideoStart:
    frames: int  # an estimate from the container (exact for folders)
    width: int
    height: int
    fps: float
    resumed: int  # frames already in the work folder


@dataclass(frozen=True)
class FrameDone:
    index: int  # 0-based
    frames: int  # the estimate, raised if the clip turns out longer
    seconds: float  # this frame's stylization (0 for a resumed one)
    elapsed: float  # since the run started
    resumed: bool
    # The stylized frame (H, W, 3) uint8, for a preview: its file in the work folder is written
    # behind, so it may not exist yet when this event arrives. None for a resumed frame (on disk).
    image: Optional[np.ndarray] = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class VideoDone:
    output: Path
    frames: int
    elapsed: float


VideoEvent = Union[VideoStart, FrameDone, VideoDone]


@dataclass
class Previous:
    """What a frame gets from the one before: its result warped into this frame, and where to trust it."""

    warped: torch.Tensor  # (1, 3, H, W) float 0-255
    mask: torch.Tensor  # (1, 1, H, W) 1 = reliable


class FrameStylizer(Protocol):
    temporal_weight: float

    def key(self) -> Dict[str, Any]:
        """Everything that shapes the frames (recorded in the work folder's manifest)."""

    def __call__(self, frame: torch.Tensor, prev: Optional[Previous]) -> torch.Tensor:
        """(1, 3, H, W) float 0-255 in, the same out."""


@dataclass
class VideoResult:
    output: Path
    frames: int
    resumed: int
    seconds_per_frame: float
    report: Dict[str, Any] = field(default_factory=dict)


def work_dir_for(output: PathLike) -> Path:
    out = Path(output)
    return out.with_name(out.name + ".frames")


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1).unsqueeze(0).float()


def to_rgb(t: torch.Tensor) -> np.ndarray:
    return t.detach()[0].float().clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def _holds_frames(work: Path) -> bool:
    return (work / frame_name(0)).exists()


def _open_work_dir(work: Path, manifest: Dict[str, Any]) -> Tuple[int, bool]:
    """Create the work folder or check that it belongs to this run.

    Returns how many frames it holds and whether this call created the folder. A folder
    with a manifest but no frame (a run that failed before its first) holds nothing to
    resume: it is taken over, whatever run it was for.
    """
    path = work / MANIFEST
    if work.exists() and not work.is_dir():
        raise InputError(f"work folder {work} exists and is not a folder")
    created = not work.exists()
    if path.exists() and not _holds_frames(work):
        write_text_atomic(json.dumps(manifest, indent=2) + "\n", path)
    elif path.exists():
        old = json.loads(path.read_text())
        if old != manifest:
            differ = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            raise InputError(f"work folder {work} holds frames of another run (differs in: {', '.join(differ)}); "
                             "delete it or pass another --work-dir")
    elif work.exists() and any(work.iterdir()):
        raise InputError(f"work folder {work} is not empty and has no {MANIFEST}; refusing to write into it")
    else:
        work.mkdir(parents=True, exist_ok=True)
        write_text_atomic(json.dumps(manifest, indent=2) + "\n", path)
    done = 0
    while (work / frame_name(done)).exists():
        done += 1
    return done, created


def _drop_empty_work_dir(work: Path, created: bool) -> None:
    """After a failed run: a work folder without a frame has nothing to resume, so it goes (its
    manifest would only refuse the corrected command); one this run did not create stays, emptied."""
    if _holds_frames(work):
        return
    (work / MANIFEST).unlink(missing_ok=True)
    if created:
        try:
            work.rmdir()
        except OSError:  # something else was put there meanwhile: leave it
            pass


@dataclass
class Made:
    """What a frame's result is made from besides the previous result: the network's output, the flow."""

    raw: Optional[torch.Tensor] = None  # a network's picture before the temporal blend; None: stylizer(frame, prev)
    flow: Optional[Any] = None  # (backward flow, reliability mask) from the frame before, when it has one


def frame_flows(frames: Iterator[Tuple[int, np.ndarray]], before: Optional[np.ndarray], use_flow: bool,
                preset: str, done: int = 0) -> Iterator[Tuple[int, np.ndarray, Optional[Any]]]:
    """(k, rgb, flow from frame k-1) for consecutive frames; `before`: the grey frame before the first, if any.

    Frames before `done` (resumed from the work folder) get no flow."""
    flows = FlowEstimator(preset) if use_flow else None
    prev_gray = before
    for k, rgb in frames:
        cur_gray = gray(rgb) if use_flow else None
        flow = None
        if use_flow and prev_gray is not None and k >= done:
            flow = flows.backward_and_mask(prev_gray, cur_gray)
        yield k, rgb, flow
        prev_gray = cur_gray


def frame_name(k: int) -> str:
    return f"{k:06d}.png"


class Stages:
    """Wall and CPU seconds spent in each stage of the pipeline, summed over frames.

    Each stage runs on one thread, so the thread's CPU time (time.thread_time) is the
    stage's: a figure the other jobs on a shared machine change little, unlike the wall
    time. (Threads that FFmpeg starts inside the decoder and encoder are not counted.)
    """

    def __init__(self) -> None:
        self._wall: Dict[str, float] = {}
        self._cpu: Dict[str, float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def mark() -> Tuple[float, float]:
        return time.perf_counter(), time.thread_time()

    def add(self, name: str, since: Tuple[float, float]) -> Tuple[float, float]:
        """Count the time from `since` (a mark() of this thread) to now towards `name`; return a new mark."""
        now = self.mark()
        with self._lock:
            self._wall[name] = self._wall.get(name, 0.0) + now[0] - since[0]
            self._cpu[name] = self._cpu.get(name, 0.0) + now[1] - since[1]
        return now

    def totals(self, cpu: bool = False) -> Dict[str, float]:
        with self._lock:
            return {k: round(v, 4) for k, v in (self._cpu if cpu else self._wall).items()}


Motion = Tuple[np.ndarray, np.ndarray]  # the backward flow and its reliability mask


def _prepared(frames: Iterator[Tuple[int, np.ndarray]], use_flow: bool, preset: str, done: int,
              stages: Stages) -> Iterator[Tuple[int, np.ndarray, Made]]:
    """Each frame with its flow from the one before (frame_flows), timed; run ahead on a thread."""
    read_done: List[Tuple[float, float]] = []  # the mark at the end of the latest read

    def timed_reads() -> Iterator[Tuple[int, np.ndarray]]:
        t = stages.mark()
        for item in frames:
            read_done[:] = [stages.add("read", t)]
            yield item
            t = stages.mark()

    for k, rgb, flow in frame_flows(timed_reads(), None, use_flow, preset, done):
        if use_flow:
            stages.add("flow", read_done[0])
        yield k, rgb, Made(flow=flow)


def _load_frame(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _save_and_encode(rgb: np.ndarray, path: Path, writer: VideoWriter, stages: Stages) -> None:
    t = stages.mark()
    save_atomic(Image.fromarray(rgb), path, compress_level=1)  # fast; the frames are temporary
    t = stages.add("save", t)
    writer.write(rgb)
    stages.add("encode", t)


def _encode_saved(path: Path, writer: VideoWriter, stages: Stages) -> None:
    t = stages.mark()
    rgb = _load_frame(path)
    t = stages.add("load", t)
    writer.write(rgb)
    stages.add("encode", t)


def stylize_video(
    source: PathLike,
    output: PathLike,
    stylizer: FrameStylizer,
    config: Optional[VideoConfig] = None,
    *,
    work_dir: Optional[PathLike] = None,
    callback: Optional[Callable[[VideoEvent], None]] = None,
    cancel: Any = None,
) -> VideoResult:
    cfg = config or VideoConfig()
    emit = callback or (lambda event: None)
    t0 = time.perf_counter()
    info = probe(source, Fraction(cfg.fps).limit_denominator(1001) if cfg.fps else None)
    out = check_output(output, (source,))
    size = info.out_size(cfg.size)
    if hasattr(stylizer, "check_size"):
        stylizer.check_size(*size)  # the network's size rule and memory estimate, before any frame
    if cfg.start and cfg.start >= (info.duration or math.inf):
        raise InputError(f"start {cfg.start} s is at or past the end of {info.path} ({info.duration:.2f} s)")
    work = Path(work_dir) if work_dir else work_dir_for(out)
    if work.resolve() == Path(source).resolve():
        raise InputError(f"work folder {work} is the input; choose another --work-dir")
    stat = Path(source).stat()
    manifest = {
        "restyle": __version__,
        "input": str(Path(source).resolve()), "input_bytes": stat.st_size if info.path.is_file() else None,
        "input_mtime": int(stat.st_mtime), "size": list(size), "start": cfg.start, "duration": cfg.duration,
        "fps": str(info.fps), "flow": cfg.flow, "stylizer": stylizer.key(),
    }
    done, created = _open_work_dir(work, manifest)
    estimate = count_frames(info, cfg.start, cfg.duration)
    emit(VideoStart(max(estimate, done), size[0], size[1], float(info.fps), done))

    if hasattr(stylizer, "cancel"):
        stylizer.cancel = cancel  # stops an optimiser frame at its next iteration
    use_flow = stylizer.temporal_weight > 0
    stages = Stages()
    n = made = 0
    spent = 0.0
    # Encoded as we go into a file beside the output, renamed at the end: a killed run
    # never leaves a half-written video under the output's name.
    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")
    # Each frame keeps its time (a variable rate, a GIF's pauses); a constant rate stays one.
    shown = frame_times(info, cfg.start, cfg.duration)
    times = None if not shown or regular(shown, info.fps) else [t - shown[0] for t in shown]
    try:
        # Exits run in reverse: the frames written behind are all encoded before the writer closes.
        frames = enumerate(read_frames(info, size, cfg.start, cfg.duration))
        # A stylizer that works ahead (Ray workers, distributed.py) hands each frame over with its network
        # output and flow made elsewhere, by the same functions; else the flow is made here, a few frames ahead.
        ahead = getattr(stylizer, "ahead", None)
        source = ahead(frames, done, cfg.flow) if ahead is not None else _prepared(frames, use_flow, cfg.flow, done, stages)
        with thread_share(getattr(stylizer, "threads", None)), ReadAhead(source) as frames, \
                VideoWriter(tmp, size, info.fps, audio_from=info, start=cfg.start, duration=cfg.duration,
                            crf=cfg.crf, times=times) as writer, \
                WriteBehind() as behind:
            prev_out: Optional[np.ndarray] = None
            for k, rgb, made_of in frames:
                n = k + 1
                path = work / frame_name(k)
                if k < done:
                    behind.submit(_encode_saved, path, writer, stages)
                    if k == done - 1 and use_flow:
                        prev_out = _load_frame(path)
                    emit(FrameDone(k, max(estimate, n), 0.0, time.perf_counter() - t0, True))
                    continue
                if cancel is not None and (cancel.is_set() if hasattr(cancel, "is_set") else cancel()):
                    raise Cancelled("cancelled")
                t_frame = time.perf_counter()
                t = stages.mark()
                prev = None
                if use_flow and prev_out is not None and made_of.flow is not None:
                    bwd, mask = made_of.flow
                    prev = Previous(to_tensor(warp(prev_out, bwd)),
                                    torch.from_numpy(np.require(mask, requirements="W"))[None, None])
                t = stages.add("warp", t)
                result = to_rgb(stylizer.blend(made_of.raw, prev) if made_of.raw is not None
                                else stylizer(to_tensor(rgb), prev))
                stages.add("stylize", t)
                # The 8-bit frame that is saved, not the float result, is what the next frame
                # builds on: a resumed run reads it back and must see exactly the same thing.
                prev_out = result
                behind.submit(_save_and_encode, result, path, writer, stages)
                made += 1
                spent += time.perf_counter() - t_frame
                emit(FrameDone(k, max(estimate, n), time.perf_counter() - t_frame, time.perf_counter() - t0, False, result))
            if n == 0:
                raise InputError(f"{info.path}: no frames between {cfg.start} s and "
                                 f"{'the end' if cfg.duration is None else f'{cfg.start + cfg.duration} s'}")
            behind.finish()
        os.replace(tmp, out)
    except BaseException:
        _drop_empty_work_dir(work, created)
        raise
    finally:
        tmp.unlink(missing_ok=True)
    if not cfg.keep_frames:
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - t0
    emit(VideoDone(out, n, elapsed))
    report = {"manifest": manifest, "config": asdict(cfg), "frames": n, "resumed": done,
              "seconds_per_frame": spent / made if made else 0.0, "elapsed_s": round(elapsed, 3),
              "stage_seconds": stages.totals(), "stage_cpu_seconds": stages.totals(cpu=True)}
    return VideoResult(out, n, done, spent / made if made else 0.0, report)
