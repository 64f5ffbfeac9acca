"""Checking uploaded clips: container sniffed from the bytes, size, length and frame caps, a poster frame.

The server checks a clip with PyAV alone (no torch in the server process); the
worker reads it again with restyle.video. Like images, the stored file is named
by us (`clip.mp4`), its suffix from the sniffed container.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .uploads import UploadError, check_not_thin

# Containers the video pipeline reads (restyle.video.io.READ_SUFFIXES), by their first bytes.
# An animated GIF is an image here: it is sniffed as one before this is asked.
ACCEPTED_VIDEO = "MP4, MOV, WebM, MKV or AVI"
POSTER = "poster.jpg"  # a clip job's first frame, written as it is checked: its thumbnail
VIDEO_TYPES = {".mp4": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm", ".mkv": "video/x-matroska",
               ".avi": "video/x-msvideo"}


def sniff_video(data: bytes) -> str:
    """The suffix to store a clip under, or "" if its bytes are no container we read."""
    if data[4:8] == b"ftyp":
        return ".mov" if data[8:10] == b"qt" else ".mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska and WebM
        return ".webm" if b"webm" in data[:64] else ".mkv"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return ".avi"
    return ""


@dataclass(frozen=True)
class CheckedClip:
    width: int
    height: int
    fps: float
    seconds: float
    frames: int  # estimated from the rate and length


def check_clip(path: Path, what: str, *, max_seconds: float, max_frames: int, max_pixels: int, size: int,
               poster: Optional[Path] = None) -> CheckedClip:
    """Open the stored clip, check its limits, write its first frame to `poster`; UploadError otherwise.

    `size`: the long side it will be stylized at (never upscaled); its short side must then
    keep MIN_SIZE px, as restyle.video.io.even_size requires.
    """
    try:
        import av
    except ImportError:
        raise UploadError("this server cannot read videos (its `video` extra is not installed)", 501) from None
    try:
        with av.open(str(path)) as box:
            if not box.streams.video:
                raise UploadError(f"{what}: the file has no video in it", 415)
            v = box.streams.video[0]
            rate = v.average_rate or v.guessed_rate or v.base_rate
            seconds = float(box.duration / 1e6) if box.duration else 0.0
            if not seconds and v.duration and v.time_base:
                seconds = float(v.duration * v.time_base)
            first = next(box.decode(v), None)
            if first is None:
                raise UploadError(f"{what}: the video has no frames", 400)
            w, h = first.width, first.height
            if w * h > max_pixels:
                raise UploadError(f"{what}: {w}x{h} frames are over the limit of {max_pixels / 1e6:.0f} million "
                                  "pixels", 413)
            check_not_thin(w, h, size, what, "stylize", f"at {size} px on its long side",
                           enlarge=False)
            fps = float(rate) if rate else 0.0
            if not seconds and v.frames and fps:
                seconds = v.frames / fps
            if not seconds or not fps:
                raise UploadError(f"{what}: the video does not say how long it is or its frame rate; "
                                  "save it again as MP4", 400)
            if seconds > max_seconds + 0.05:  # a container's rounding
                raise UploadError(f"{what}: the clip is {seconds:.1f} s long; this server takes clips of at most "
                                  f"{max_seconds:g} s. Cut it shorter first", 400)
            frames = int(round(seconds * fps))
            if frames > max_frames:
                raise UploadError(f"{what}: the clip has about {frames} frames ({fps:.0f} per second); this server "
                                  f"takes at most {max_frames}", 400)
            if poster is not None:
                first.to_image().convert("RGB").save(poster, quality=85)
            return CheckedClip(w, h, fps, seconds, frames)
    except UploadError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError, OSError) as e:
        raise UploadError(f"{what}: not a video that can be read ({type(e).__name__}); use {ACCEPTED_VIDEO}",
                          415) from None
