"""Reading and writing clips with PyAV (the FFmpeg libraries in its wheel; no system ffmpeg).

Frames are streamed one at a time as RGB uint8 arrays (H, W, 3), so memory does
not grow with the clip's length. A folder of numbered images reads as a clip too.

    info = probe("in.mp4")
    for rgb in read_frames("in.mp4", info.out_size(512)):
        ...
    with VideoWriter("out.mp4", info.out_size(512), info.fps, audio_from=info) as w:
        w.write(rgb)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..config import MIN_SIZE
from ..errors import InputError
from ..images import IMAGE_SUFFIXES, PathLike, check_output_path, load_image

READ_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif")
# Output suffix -> (video encoder, audio encoder, audio codecs the container takes as they are).
WRITE_FORMATS = {
    ".mp4": ("libx264", "aac", ("aac", "mp3", "ac3", "alac")),
    ".webm": ("libvpx-vp9", "libopus", ("opus", "vorbis")),
}
FRAME_SUFFIXES = IMAGE_SUFFIXES  # images.py: the one list
MAX_INPUT_PIXELS = 7680 * 4320  # 8K UHD: larger frames are refused before decoding them all
MAX_SIZE = 4096  # long side of the output; style transfer at 4K per frame is already hours
# A container that does not say how many frames it holds (Matroska, WebM, AVI) has them counted
# from its packets (no decoding; a fraction of a second for this much) rather than estimated from
# its duration, which is the longest stream's: audio running past the last frame made 132 frames 133.
COUNT_PACKETS_BYTES = 256 * 2**20
DEFAULT_FOLDER_FPS = Fraction(25)
VFR_TIME_BASE = Fraction(1, 1000)  # timestamps of a variable-rate output, as MKV and WebM keep them
# x264's constant-quality mode: 18 is visually near-lossless; VP9's scale differs (0-63).
CRF = {".mp4": 18, ".webm": 30}


@dataclass(frozen=True)
class VideoInfo:
    """What probe() learned about a clip (or a folder of frames)."""

    path: Path
    width: int
    height: int
    fps: Fraction
    duration: float  # seconds, 0.0 when the container does not say
    frames: int  # the container's count, else its packets' (small files), else 0; an estimate either way
    audio: Optional[str]  # the audio codec's name, or None
    frame_files: Tuple[Path, ...] = ()  # a folder of frames: its images in order

    @property
    def is_folder(self) -> bool:
        return bool(self.frame_files)

    def out_size(self, size: Optional[int] = None) -> Tuple[int, int]:
        """Output (width, height): long side `size` (never upscaled), both even (H.264/VP9 4:2:0)."""
        return even_size(self.width, self.height, size)


def even_size(width: int, height: int, size: Optional[int] = None) -> Tuple[int, int]:
    long_side = max(width, height) if size is None else min(size, max(width, height))
    if size is not None and not MIN_SIZE <= size <= MAX_SIZE:
        raise InputError(f"size {size} is out of range; it must be in [{MIN_SIZE}, {MAX_SIZE}]")
    if width >= height:
        w, h = long_side, height * long_side / width
    else:
        w, h = width * long_side / height, long_side
    w, h = max(2, int(round(w)) // 2 * 2), max(2, int(round(h)) // 2 * 2)
    if min(w, h) < MIN_SIZE and long_side == max(width, height):  # kept at its size: --size cannot help
        raise InputError(f"frames of {width}x{height} px are too small; the short side must be at least "
                         f"{MIN_SIZE} px (frames are never enlarged)")
    if min(w, h) < MIN_SIZE:
        raise InputError(f"frames would be {w}x{h} px; the short side must be at least {MIN_SIZE} px (raise --size)")
    return w, h


def _numbered(folder: Path) -> Tuple[Path, ...]:
    """The folder's images sorted by the last number in their names (frame_2 before frame_10)."""
    found = []
    for p in folder.iterdir():
        m = re.search(r"(\d+)(?!.*\d)", p.stem)
        if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES and m:
            found.append((int(m.group(1)), p.name, p))
    return tuple(p for _, _, p in sorted(found))


def probe(path: PathLike, fps: Optional[Fraction] = None) -> VideoInfo:
    """Open a clip (or a folder of numbered frames, shown `fps` times a second) and check it;
    decodes the first frame only.

    Raises InputError for a missing file, an unknown suffix, a file FFmpeg cannot read,
    no video stream, no frames, frames over MAX_INPUT_PIXELS, or `fps` for a clip.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        files = _numbered(path)
        if not files:
            raise InputError(f"{path}: no numbered frames ({', '.join(FRAME_SUFFIXES)}) in this folder")
        first = load_image(files[0], max_pixels=MAX_INPUT_PIXELS)
        rate = Fraction(fps) if fps else DEFAULT_FOLDER_FPS
        return VideoInfo(path, first.width, first.height, rate, float(len(files) / rate), len(files), None, files)
    if path.suffix.lower() not in READ_SUFFIXES:
        raise InputError(f"{path}: suffix {path.suffix!r} is not a video this reads ({', '.join(READ_SUFFIXES)}) "
                         "nor a folder of frames")
    if fps is not None:  # re-timing a clip's frames would leave its audio behind
        raise InputError(f"fps {float(fps):g} is for a folder of frames; {path} is a clip, which keeps its own "
                         "frame times (drop --fps)")
    import av

    try:
        with av.open(str(path)) as box:
            if not box.streams.video:
                raise InputError(f"{path}: has no video stream")
            v = box.streams.video[0]
            w, h = v.codec_context.width, v.codec_context.height
            if w * h > MAX_INPUT_PIXELS:
                raise InputError(f"{path}: {w}x{h} frames exceed the limit of {MAX_INPUT_PIXELS} pixels (8K)")
            rate = fps or v.average_rate or v.guessed_rate or v.base_rate
            first = next(box.decode(v), None)
            if first is None:
                raise InputError(f"{path}: has no frames")
            audio = box.streams.audio[0].codec_context.name if box.streams.audio else None
            duration = float(box.duration / 1e6) if box.duration else 0.0
            frames = v.frames or _count_packets(box, v, path) or (round(duration * rate) if duration and rate else 0)
            return VideoInfo(path, first.width, first.height, Fraction(rate) if rate else DEFAULT_FOLDER_FPS,
                             duration, frames, audio)
    except InputError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, StopIteration) as e:
        raise InputError(f"{path}: not a video FFmpeg can read ({e})") from None


def _count_packets(box, stream, path: Path) -> int:
    """The video stream's frames, counted from its packets when the file is small enough; 0 otherwise."""
    if path.stat().st_size > COUNT_PACKETS_BYTES:
        return 0
    box.seek(0)
    return sum(1 for packet in box.demux(stream) if packet.size)


def read_frames(info: VideoInfo, size: Tuple[int, int], start: float = 0.0,
                duration: Optional[float] = None) -> Iterator[np.ndarray]:
    """Yield RGB uint8 (H, W, 3) frames at `size` (w, h) from `start` s for `duration` s (all by default)."""
    end = None if duration is None else start + duration
    if info.is_folder:
        for k, p in enumerate(info.frame_files):
            t = k / info.fps
            if t < start - 1e-9:
                continue
            if end is not None and t >= end - 1e-9:
                return
            img = load_image(p, max_pixels=MAX_INPUT_PIXELS)
            if img.size != (info.width, info.height):
                raise InputError(f"{p}: {img.width}x{img.height} differs from the first frame's "
                                 f"{info.width}x{info.height}; every frame must have one size")
            if img.size != size:
                img = img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
            yield np.asarray(img, dtype=np.uint8)
        return
    import av

    with av.open(str(info.path)) as box:
        v = box.streams.video[0]
        v.thread_type = "AUTO"
        if start > 0:
            box.seek(int(start / v.time_base), stream=v, backward=True)  # a keyframe at or before start
        for frame in box.decode(v):
            t = float(frame.pts * v.time_base) if frame.pts is not None else 0.0
            if t < start - 1e-6:
                continue
            if end is not None and t >= end - 1e-6:
                return
            yield frame.to_ndarray(width=size[0], height=size[1], format="rgb24", interpolation="AREA")


def frame_times(info: VideoInfo, start: float = 0.0, duration: Optional[float] = None) -> List[float]:
    """When each frame read_frames yields is shown, in seconds of the source (same window, same order).

    A clip's come from its packets' timestamps (demuxed, not decoded): a variable frame rate
    or a GIF's pauses are kept. A folder's frames are `info.fps` apart.
    """
    end = math.inf if duration is None else start + duration
    if info.is_folder:
        times = [float(k / info.fps) for k in range(len(info.frame_files))]
        return [t for t in times if start - 1e-9 <= t < end - 1e-9]
    import av

    with av.open(str(info.path)) as box:
        v = box.streams.video[0]
        times = sorted(float(p.pts * p.time_base) for p in box.demux(v) if p.pts is not None)
    return [t for t in times if start - 1e-6 <= t < end - 1e-6]


def regular(times: Sequence[float], fps: Fraction) -> bool:
    """Whether `times` are those of a constant rate `fps` (within a quarter of a frame)."""
    return all(abs(t - times[0] - k / fps) < 0.25 / fps for k, t in enumerate(times))


def count_frames(info: VideoInfo, start: float = 0.0, duration: Optional[float] = None) -> int:
    """Frames read_frames will yield (estimated from the rate; exact for folders)."""
    if info.is_folder:
        first = int(np.ceil(start * info.fps - 1e-9))
        last = len(info.frame_files) if duration is None else int(np.ceil((start + duration) * info.fps - 1e-9))
        return max(0, min(last, len(info.frame_files)) - first)
    total = info.frames
    whole = info.duration or (total / info.fps if total else 0.0)
    if total and start == 0 and (duration is None or duration >= whole):
        return total
    span = max(0.0, (whole if duration is None else min(whole, start + duration)) - start)
    return int(round(span * info.fps))


def check_output(output: PathLike, inputs: Tuple[PathLike, ...]) -> Path:
    """Refuse an output that is an input, has a suffix we cannot write, or sits in a missing folder."""
    return check_output_path(output, inputs, tuple(WRITE_FORMATS))


class VideoWriter:
    """Encode RGB frames to mp4 (H.264) or webm (VP9), with the source's audio: at a constant rate
    `fps`, or with `times` each frame's time in seconds from the output's start (a variable rate).

    The audio is copied packet by packet when the container takes its codec and the
    clip is not cut; otherwise it is decoded, trimmed to [start, start + duration) and
    re-encoded (AAC for mp4, Opus for webm). Audio and video are interleaved by time.
    """

    def __init__(self, output: PathLike, size: Tuple[int, int], fps: Fraction, *,
                 audio_from: Optional[VideoInfo] = None, start: float = 0.0, duration: Optional[float] = None,
                 crf: Optional[int] = None, times: Optional[Sequence[float]] = None) -> None:
        import av

        self.path = Path(output)
        suffix = self.path.suffix.lower()
        vcodec, acodec, copyable = WRITE_FORMATS[suffix]
        self.box = av.open(str(self.path), mode="w")
        self.stream = self.box.add_stream(vcodec, rate=fps)
        self.stream.width, self.stream.height = size
        self.stream.pix_fmt = "yuv420p"
        # Constant rate: a frame's pts is its number; with `times`, milliseconds.
        self.times = None if times is None else list(times)
        self.stream.codec_context.time_base = 1 / Fraction(fps) if times is None else VFR_TIME_BASE
        self._last_pts = -1
        q = str(CRF[suffix] if crf is None else crf)
        self.stream.options = ({"crf": q, "preset": "medium"} if vcodec == "libx264"
                               else {"crf": q, "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"})
        self.fps = Fraction(fps)
        self.count = 0
        self._audio = None
        if audio_from is not None and audio_from.audio and not audio_from.is_folder:
            cut = start > 0 or duration is not None
            self._audio = _AudioTrack(self.box, audio_from.path, acodec,
                                      copy=audio_from.audio in copyable and not cut, start=start, duration=duration)

    def write(self, rgb: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if self.times is None:
            frame.pts, t = self.count, self.count / self.fps
        else:  # past the list (a clip that decodes more frames than it has timestamps): a frame later
            t = self.times[self.count] if self.count < len(self.times) else (
                (self.times[-1] if self.times else 0.0) + (self.count - len(self.times) + 1) / self.fps)
            frame.pts = max(round(t / VFR_TIME_BASE), self._last_pts + 1)
            frame.time_base = VFR_TIME_BASE
        self._last_pts = frame.pts
        if self._audio is not None:
            self._audio.mux_until(t)
        self.box.mux(self.stream.encode(frame))
        self.count += 1

    def close(self) -> None:
        if self.box is None:
            return
        self.box.mux(self.stream.encode(None))
        if self._audio is not None:
            self._audio.mux_until(None)
        self.box.close()
        self.box = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _AudioTrack:
    """The source's first audio stream, fed into the output a little at a time."""

    def __init__(self, box, source: Path, codec: str, *, copy: bool, start: float, duration: Optional[float]) -> None:
        import av

        self.box = box
        self.src = av.open(str(source))
        self.inp = self.src.streams.audio[0]
        self.copy = copy
        self.start, self.end = start, None if duration is None else start + duration
        if copy:
            self.out = box.add_stream_from_template(self.inp)
            self.items = self._packets()
        else:
            rate = 48000 if codec == "libopus" else (self.inp.codec_context.sample_rate or 48000)
            self.out = box.add_stream(codec, rate=rate)
            layout = self.inp.codec_context.layout.name if self.inp.codec_context.layout else "stereo"
            self.out.layout = layout if self.inp.codec_context.channels <= 2 else "stereo"
            self.items = self._encoded()
        self.pending = None

    def _packets(self) -> Iterator[Tuple[float, object]]:
        for packet in self.src.demux(self.inp):
            if packet.dts is None:  # the demuxer's flush packet
                continue
            t = float(packet.pts * packet.time_base) if packet.pts is not None else 0.0
            packet.stream = self.out
            yield t, packet

    def _encoded(self) -> Iterator[Tuple[float, object]]:
        import av

        ctx = self.out.codec_context
        resampler = av.AudioResampler(format=ctx.format.name, layout=ctx.layout.name, rate=ctx.sample_rate)
        if self.start > 0:
            self.src.seek(int(self.start / self.inp.time_base), stream=self.inp, backward=True)
        written = 0
        for frame in self.src.decode(self.inp):
            t = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
            if t + frame.samples / frame.sample_rate <= self.start:
                continue
            if self.end is not None and t >= self.end:
                break
            for out in resampler.resample(frame):
                out.pts, written = written, written + out.samples
                out.time_base = Fraction(1, ctx.sample_rate)
                for packet in self.out.encode(out):
                    yield written / ctx.sample_rate, packet
        for out in resampler.resample(None):
            out.pts, written = written, written + out.samples
            out.time_base = Fraction(1, ctx.sample_rate)
            for packet in self.out.encode(out):
                yield written / ctx.sample_rate, packet
        for packet in self.out.encode(None):
            yield written / ctx.sample_rate, packet

    def mux_until(self, t: Optional[float]) -> None:
        """Mux audio packets that start before `t` seconds (all that are left for None)."""
        while True:
            if self.pending is None:
                self.pending = next(self.items, None)
                if self.pending is None:
                    self.src.close()
                    return
            ts, packet = self.pending
            if t is not None and ts - self.start > t:
                return
            self.box.mux(packet)
            self.pending = None

