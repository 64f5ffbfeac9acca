"""How long a run has left, across the scales of its pyramid. Pure.

An iteration costs time roughly in proportion to its pixels (VGG-19's
convolutions dominate), so a 512 px step costs about four 256 px ones. The
mean pace per *iteration* (Iterate.eta) is therefore far too hopeful once a run
moves to a finer scale; the pace per *pixel-iteration* is not. The CLI's bar and
the web's job page both estimate with `eta_seconds`.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

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
