"""How long a run has left, across the scales of its pyramid. Pure.

An iteration costs time roughly in proportion to its pixels (VGG-19's
convolutions dominate), so a 512 px step costs about four 256 px ones. The
mean pace per *iteration* (Iterate.eta) is therefore far too hopeful once a run
moves to a finer scale; the pace per *pixel-iteration* is not. The CLI's bar and
the web's job page both estimate with `eta_seconds`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from ..events import TIMED_STEPS, Estimate, Iterate, Planned

StagePixels = Tuple[int, int]  # (pixels per iteration, iterations) of one scale


def stage_pixels(stages: Sequence[Tuple[int, int, int]]) -> Tuple[StagePixels, ...]:
    """(width, height, iterations) per scale -> (pixels, iterations) per scale."""
    return tuple((w * h, n) for w, h, n in stages)


def work_done(stages: Sequence[StagePixels], step: int) -> int:
    """Pixel-iterations in the first `step` iterations of the run (1-based over all scales)."""
    done, left = 0, max(0, step)
    for pixels, n in stages:
        k = min(n, left)
        done += k * pixels
        left -= k
    return done


def eta_seconds(stages: Sequence[StagePixels], step: int, elapsed: float) -> Optional[float]:
    """Seconds left after `step` iterations that took `elapsed` seconds; None before the first.

    The pace is elapsed / pixel-iterations so far, applied to the pixel-iterations
    still to run. Example: 110 steps at 256x205 then 28 at 512x410, 11 s for the
    first 110: 28 x 4 = 112 units left at 0.1 s each, about 11 s (not 2.8 s).
    """
    if step <= 0 or elapsed <= 0:
        return None
    done = work_done(stages, step)
    total = work_done(stages, sum(n for _, n in stages))
    if done <= 0:
        return None
    return elapsed * (total - done) / done


# --- the whole run's time, estimated before most of it has run (issue 15, item 13) ---

# The whole run's time is estimated from the pace of the first iterations: iteration 1
# warms up (oneDNN/cuDNN pick their kernels, caches fill) and is left out, the next
# TIMED_STEPS (events.py: a training's time left is paced the same way) set the pace.
# At the coarsest scale that is a second or two on a CPU.
LONG_RUN_S = 600.0  # warn before a run longer than this (10 min)


def network_pixels(width: int, height: int, tile: Optional[int] = None, margin: int = 0) -> int:
    """Pixels VGG-19 processes per iteration: tiled rendering also pays for each tile's margins."""
    if not tile or tile >= max(width, height):
        return width * height
    cols, rows = -(-width // tile), -(-height // tile)
    return cols * rows * min(width, tile + 2 * margin) * min(height, tile + 2 * margin)


def estimate_total(stages: Sequence[StagePixels], start: Tuple[int, float], now: Tuple[int, float]) -> Optional[float]:
    """Seconds the whole run will take, from its pace between two moments (step, elapsed).

    The pace (seconds per pixel-iteration between `start` and `now`) is applied to
    the pixel-iterations left after `now`. None if no work lies between the two.
    """
    (s0, t0), (s1, t1) = start, now
    done0, done1 = work_done(stages, s0), work_done(stages, s1)
    if done1 <= done0 or t1 < t0:
        return None
    total = work_done(stages, sum(n for _, n in stages))
    return t1 + (t1 - t0) / (done1 - done0) * (total - done1)


def duration(seconds: float) -> str:
    """'45 s', '3 min', '1 h 05 min': how long, as a person says it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class RunEstimate:
    """Wraps an event callback: after TIMED_STEPS + 1 iterations it adds an Estimate event.

    Needs the Planned event (the engine sends it before the first scale); `summary()`
    is what the report and the sidecar record.
    """

    def __init__(self, callback: Callable[[Any], None]) -> None:
        self.callback = callback
        self.planned: Any = None
        self.start: Optional[Tuple[int, float]] = None
        self.estimate: Any = None

    def __call__(self, event: Any) -> None:
        self.callback(event)
        if isinstance(event, Planned):
            self.planned = event
        elif isinstance(event, Iterate) and self.planned is not None and self.estimate is None:
            if event.step == 1:
                self.start = (1, event.elapsed)
            elif self.start is not None and event.step == 1 + TIMED_STEPS:
                seconds = estimate_total(self.planned.work, self.start, (event.step, event.elapsed))
                if seconds is not None:
                    self.estimate = Estimate(seconds, self.planned.peak_bytes, self.planned.budget_bytes,
                                             event.step, seconds >= LONG_RUN_S)
                    self.callback(self.estimate)

    def summary(self) -> Dict[str, Any]:
        p, e = self.planned, self.estimate
        return {
            "total_s": None if e is None else round(e.seconds, 1),
            "timed_steps": None if e is None else [2, e.timed_to],
            "peak_memory_gb": None if p is None else round(p.peak_bytes / 2**30, 2),
            "budget_gb": None if p is None else round(p.budget_bytes / 2**30, 2),
        }
