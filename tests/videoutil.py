"""Tiny clips made with PyAV for the video tests: a pattern panning right, with a sine tone."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def pan_frames(width: int = 64, height: int = 48, frames: int = 10, step: int = 2, seed: int = 0):
    """`frames` RGB frames cut from one random-blob picture, moving `step` px right per frame."""
    rng = np.random.default_rng(seed)
    big_w = width + step * frames + 8
    base = rng.integers(0, 256, (height // 4 + 1, big_w // 4 + 1, 3)).astype(np.uint8)
    base = np.kron(base, np.ones((4, 4, 1), np.uint8))[:height, :big_w]
    return [np.ascontiguousarray(base[:, k * step:k * step + width]) for k in range(frames)]


def make_clip(path: Path, frames=None, fps: int = 10, audio: bool = True, codec: str = "libx264",
              audio_codec: str = "aac") -> Path:
    import av

    frames = pan_frames() if frames is None else frames
    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as box:
        v = box.add_stream(codec, rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            v.options = {"crf": "10"}
        a = None
        if audio:
            rate = 48000 if audio_codec == "libopus" else 44100
            a = box.add_stream(audio_codec, rate=rate)
            a.layout = "mono"
        for k, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = k
            box.mux(v.encode(f))
        box.mux(v.encode(None))
        if a is not None:
            rate = a.codec_context.sample_rate
            n = int(rate * len(frames) / fps)
            t = np.arange(n) / rate
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            chunk = a.codec_context.frame_size or 1024
            for s in range(0, n, chunk):
                af = av.AudioFrame.from_ndarray(tone[None, s:s + chunk].copy(), format="fltp", layout="mono")
                af.sample_rate = rate
                af.pts = s
                af.time_base = Fraction(1, rate)
                box.mux(a.encode(af))
            box.mux(a.encode(None))
    return path


def clip_stats(path: Path):
    """(frames decoded, fps, duration s, audio codec or None, audio seconds) of a clip."""
    import av

    with av.open(str(path)) as box:
        v = box.streams.video[0]
        n = sum(1 for _ in box.decode(v))
        fps = v.average_rate
        dur = box.duration / 1e6 if box.duration else 0.0
        audio = box.streams.audio[0].codec_context.name if box.streams.audio else None
    secs = 0.0
    if audio:
        with av.open(str(path)) as box:
            a = box.streams.audio[0]
            secs = sum(f.samples for f in box.decode(a)) / a.codec_context.sample_rate
    return n, fps, dur, audio, secs
