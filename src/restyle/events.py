"""Progress is data: typed events the engine hands to a callback.

The CLI turns them into a progress bar, the web app into a live stream and
the tests into assertions. The engine knows nothing of any of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Tuple, Union

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

# Time left is estimated from the pace of the first iterations or training steps: the first
# warms up (oneDNN/cuDNN pick their kernels, caches fill; a training also draws its first
# preview grid before it) and is left out, the next TIMED_STEPS set the pace.
TIMED_STEPS = 3


@dataclass(frozen=True)
class Planned:
    """Sent once before the first scale: the pyramid and the memory planner's estimate."""

    stages: Tuple[Tuple[int, int, int], ...]  # (width, height, iterations) of each scale
    work: Tuple[Tuple[int, int], ...]  # (pixels the network sees per iteration, iterations) of each scale
    peak_bytes: int  # memory planner's estimate of the run's peak
    budget_bytes: int  # the memory it had to fit in
    notes: Tuple[str, ...] = ()  # the planner's fallbacks (shorter L-BFGS history, tiles)


@dataclass(frozen=True)
class Estimate:
    """Sent once, when the first iterations have been timed: how long the whole run will take."""

    seconds: float  # the whole run, set-up included, from the pace per pixel-iteration
    peak_bytes: int
    budget_bytes: int
    timed_to: int  # the pace was measured over steps 2..timed_to
    long: bool  # over progress.LONG_RUN_S: front ends should warn


@dataclass(frozen=True)
class StageStart:
    """A new scale of the coarse-to-fine pyramid begins."""

    scale: int  # 0-based index of this scale
    scales: int  # number of scales in the pyramid
    width: int
    height: int
    iterations: int


@dataclass(frozen=True)
class Iterate:
    """One evaluation of the loss and its gradient (one forward+backward)."""

    scale: int
    scales: int
    width: int
    height: int
    i: int  # 1-based iteration within this scale
    i_max: int
    step: int  # 1-based iteration over the whole run
    steps: int  # total iterations over the whole run
    loss: float
    terms: Mapping[str, float]  # weighted loss terms: content, style, tv
    elapsed: float  # seconds since the run started

    @property
    def eta(self) -> float:
        """Seconds left at the mean pace per *step* so far: too hopeful once a finer scale starts.

        progress.eta_seconds counts pixel-iterations instead (the CLI bar and the web use it).
        """
        return self.elapsed / self.step * (self.steps - self.step) if self.step else 0.0


@dataclass(frozen=True)
class Snapshot:
    """An intermediate image, sent every `snapshot_every` iterations."""

    step: int
    steps: int
    image: "Image.Image" = field(repr=False)


@dataclass(frozen=True)
class Done:
    """The run finished; `timings` are seconds per stage."""

    elapsed: float
    terms: Mapping[str, float]
    timings: Mapping[str, float]


@dataclass(frozen=True)
class PairStarted:
    """A batch worker began painting one (content, style) pair."""

    index: int  # the pair's position in the batch
    total: int  # pairs in the batch
    label: str  # "CONTENT x STYLE"
    host: str  # the machine painting it
    pid: int  # the worker process painting it
    attempt: int  # 1, or more when an earlier worker was lost mid-task


@dataclass(frozen=True)
class BatchProgress:
    """The whole batch's progress: finished pairs plus the fractions of the running ones."""

    finished: int  # pairs done, skipped or failed
    total: int
    partial: float  # sum over running pairs of the share of their iterations done
    outcome: Any = None  # the batch.PairOutcome that just finished, if one did

    @property
    def done(self) -> float:
        return self.finished + self.partial


Event = Union[Planned, Estimate, StageStart, Iterate, Snapshot, Done]
Callback = Callable[[Event], None]


# --- training (trained networks: the one loop in training.py) ---------------


@dataclass(frozen=True)
class TrainStart:
    """Training begins (or resumes)."""

    start_step: int  # 0, or the step a resumed run continues from
    steps: int
    photos: int  # training photos (after the held-aside ones)
    held_out: Tuple[str, ...]
    precision: str


@dataclass(frozen=True)
class TrainStep:
    """One optimiser step of a network's training."""

    step: int  # 1-based, over the whole run (a resumed run continues the count)
    steps: int
    loss: float
    terms: Mapping[str, float]  # the loss's weighted parts
    elapsed: float  # seconds in this session
    start_step: int = 0  # where this session began
    # The (step, elapsed) the pace is measured from: the end of this session's first step
    # (fit sets it), so that the warm-up does not count. At step 1 of a 2000-step run the
    # mean pace from the start put a 3.5-minute run at 25 minutes.
    paced_from: Optional[Tuple[int, float]] = None

    @property
    def first(self) -> int:
        """The step this session started from (the older name of start_step)."""
        return self.start_step

    @property
    def eta(self) -> Optional[float]:
        """Seconds left at this session's pace since its first step; None until TIMED_STEPS more steps."""
        if self.paced_from is None:
            return None
        step0, elapsed0 = self.paced_from
        if self.step - step0 < TIMED_STEPS:
            return None
        return (self.elapsed - elapsed0) / (self.step - step0) * (self.steps - self.step)


@dataclass(frozen=True)
class TrainPreview:
    """The preview grid at this step (the CLI writes it)."""

    step: int
    image: "Image.Image" = field(repr=False)


@dataclass(frozen=True)
class TrainCheckpoint:
    """A checkpoint was written (training can --resume from it)."""

    step: int
    path: Path


@dataclass(frozen=True)
class TrainDone:
    """Training finished: the model file is written."""

    step: int
    path: Path
    elapsed: float  # seconds in this session
    steps_per_s: float


TrainEvent = Union[TrainStart, TrainStep, TrainPreview, TrainCheckpoint, TrainDone]
