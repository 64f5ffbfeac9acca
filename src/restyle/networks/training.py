"""The one training loop of restyle's trained networks, and what they share.

Two kinds of network are trained: feed-forward style networks (style_training.py)
and the super-resolution network (train_upscaler.py). Each brings a `Recipe`:
its network and optimiser, its batch maker, its loss, its preview and its
model-file format. `fit` does everything else, the same way for both:

- data by (seed, step): the batch of step k is drawn from `step_generator(seed, k)`
  alone, so a run resumed from its step-k checkpoint sees exactly the batches the
  uninterrupted run would have seen;
- checkpoints every `checkpoint_every` steps, at the end, and on Ctrl-C (or when
  `should_stop()`), written atomically: the optimiser (and scheduler) state, the
  step, the loss history and the wall time so far, so `--resume` is exact;
- preview grids at the start, every `preview_every` steps and at the end;
- progress as data: TrainStart, TrainStep, TrainPreview, TrainCheckpoint, TrainDone;
- the model file, and a JSON sidecar beside it describing the run.

Both write their model files and checkpoints in the one format of models/modelfile.py
(`family` "style" or "upscaler").
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from PIL import Image

from ..device import cuda_settings, synchronize
from ..errors import Cancelled, InputError, Interrupted
from ..events import TrainCheckpoint, TrainDone, TrainEvent, TrainPreview, TrainStart, TrainStep
from ..hashing import sha256sum
from ..images import IMAGE_SUFFIXES, PathLike, load_image, resize, save_atomic, to_tensor, write_text_atomic
from ..interrupts import stop_cleanly
from ..models.modelfile import sidecar_of

PHOTO_SUFFIXES = IMAGE_SUFFIXES  # images.py: the one list


# --- paths and photos -----------------------------------------------------------------------------


def checkpoint_path(out: PathLike) -> Path:
    """Where the training of model file `out` keeps its checkpoint: up4.pt -> up4.ckpt.pt."""
    out = Path(out)
    return out.with_name(out.stem + ".ckpt" + out.suffix)


def preview_path(out: PathLike) -> Path:
    """Where the training of model file `out` draws its preview grid: OUT.preview.png."""
    out = Path(out)
    return out.with_name(out.stem + ".preview.png")


def save_preview(image: Image.Image, folder: PathLike, step: int) -> Path:
    """Write a TrainPreview's grid as FOLDER/stepNNNNNN.png (the folder made if need be): a progress
    picture, so Pillow's fastest compression (a 4096 x 1024 grid: 0.6 s against the default's 1.4, 7 % larger)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return save_atomic(image, folder / f"step{step:06d}.png", compress_level=1)


def check_output(out: PathLike) -> Path:
    """A model file to write: it must end in .pt, in a folder that exists."""
    out = Path(out)
    if out.suffix != ".pt":
        raise InputError(f"output {out}: a model file must end in .pt")
    if not out.parent.is_dir():
        raise InputError(f"output {out}: folder {out.parent} does not exist")
    return out


def list_photos(folder: PathLike) -> List[Path]:
    """The pictures in `folder` (by suffix, see PHOTO_SUFFIXES), sorted by name."""
    d = Path(folder)
    if not d.is_dir():
        raise InputError(f"photos {d}: no such folder")
    return sorted(p for p in d.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())


def split_photos(photos: Sequence[Path], holdout: int) -> Tuple[List[Path], List[Path]]:
    """(training, held aside): every k-th photo by sorted name (k = n // holdout) is held aside,
    so the choice is deterministic and spread over the folder."""
    if holdout == 0:
        return list(photos), []
    k = max(len(photos) // holdout, 1)
    held = [p for i, p in enumerate(photos) if i % k == k - 1][:holdout]
    return [p for p in photos if p not in held], held


def load_photo_u8(path: PathLike, *, long_side: Optional[int] = None, short_side: Optional[int] = None) -> torch.Tensor:
    """A training photo as (3, H, W) uint8, made smaller once at load when a side is given and it is larger:
    `long_side` caps the long side, `short_side` the short side (the most a crop at the largest scale uses)."""
    img = load_image(path)
    if short_side and min(img.size) > short_side:
        img = resize(img, max(short_side, round(max(img.size) * short_side / min(img.size))))
    if long_side:
        img = resize(img, long_side)
    return to_tensor(img)[0].to(torch.uint8)


def load_photos(paths: Sequence[PathLike], *, long_side: Optional[int] = None,
                short_side: Optional[int] = None) -> List[torch.Tensor]:
    """load_photo_u8 of each path, in order, decoded on a few threads (Pillow lets go of the GIL while it
    decodes and resizes): a folder of 250 photos loads in about half the time on two cores."""
    with ThreadPoolExecutor(4, thread_name_prefix="restyle-photos") as pool:
        return list(pool.map(lambda p: load_photo_u8(p, long_side=long_side, short_side=short_side), paths))


def data_fingerprint(photos: Sequence[Path]) -> str:
    """sha256 over the names and contents of the training photos, in order."""
    h = hashlib.sha256()
    for p in photos:
        h.update(p.name.encode() + b"\0" + sha256sum(p).encode() + b"\n")
    return h.hexdigest()


def step_generator(seed: int, step: int) -> torch.Generator:
    """The data RNG of step `step` (0-based): depends on (seed, step) only, so resume is exact."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) & 0x7FFF_FFFF_FFFF_FFFF)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Torch's global RNG seeded with `seed` inside (a network's initialisation), restored after."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def cosine_lr(steps: int, floor: float = 0.1) -> Callable[[int], float]:
    """LR multiplier: cosine from 1 to `floor` over `steps` (a pure function of the step)."""
    return lambda step: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))


def grid(rows: Sequence[Sequence[torch.Tensor]], gap: int = 4) -> Image.Image:
    """Pictures (1, 3, H, W) in 0-255, laid out row by row on white with `gap` px between."""
    from ..images import to_pil

    cells = [[to_pil(t) for t in row] for row in rows]
    col_w = [max(r[c].width for r in cells) for c in range(len(cells[0]))]
    row_h = [max(im.height for im in r) for r in cells]
    sheet = Image.new("RGB", (sum(col_w) + gap * (len(col_w) + 1), sum(row_h) + gap * (len(row_h) + 1)), "white")
    y = gap
    for r, h in zip(cells, row_h):
        x = gap
        for im, w in zip(r, col_w):
            sheet.paste(im, (x, y))
            x += w + gap
        y += h + gap
    return sheet


# --- the loop -------------------------------------------------------------------------------------


@dataclass
class TrainState:
    """Where a run stands: what a checkpoint stores, and what --resume restores."""

    step: int = 0
    history: List[Tuple[float, ...]] = field(default_factory=list)  # Recipe.history_row per row
    wall_s: float = 0.0  # training seconds over all sessions
    optimizer: Optional[Dict[str, Any]] = None
    scheduler: Optional[Dict[str, Any]] = None


class Recipe:
    """What one kind of network brings to `fit`: set the attributes, implement the methods.

    `batch(step)` must draw its randomness from `step_generator(seed, step)` only.
    """

    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Optional[Any] = None  # stepped after every optimiser step
    history_every = 1  # a history row every N steps (and at step 1)
    photos = 0  # training photos (for TrainStart)
    held_out: Tuple[str, ...] = ()
    precision = "fp32"

    def batch(self, step: int) -> Any:
        """The data of step `step` (0-based)."""
        raise NotImplementedError

    def loss(self, batch: Any) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """(the loss to minimise, its named parts) on one batch."""
        raise NotImplementedError

    def preview(self) -> Optional[Image.Image]:
        """The preview grid (called in eval mode without gradients), or None."""
        return None

    def validate(self, state: TrainState) -> None:
        """Measure the network on held-aside data, after each preview (eval mode, no gradients)."""

    def history_row(self, step: int, loss: float, terms: Dict[str, float]) -> Tuple[float, ...]:
        return (step, loss)

    def save(self, kind: str, path: Path, state: TrainState) -> Path:
        """Write a "checkpoint" (with the optimiser state) or the "model" to `path`, atomically."""
        raise NotImplementedError

    def sidecar(self, path: Path, state: TrainState, steps_per_s: float) -> Dict[str, Any]:
        """The JSON written beside the model file `path` (and returned by `fit`)."""
        raise NotImplementedError


def _restore(recipe: Recipe, resume: TrainState, steps: int, ckpt: Path) -> TrainState:
    """Load checkpoint `ckpt`'s optimiser (and scheduler) state into `recipe`: the loop's state from there."""
    recipe.optimizer.load_state_dict(resume.optimizer)  # after the scheduler is built (it resets the rate): the saved rate wins
    if recipe.scheduler is not None and resume.scheduler is not None:
        recipe.scheduler.load_state_dict(resume.scheduler)
    if resume.step > steps:
        raise InputError(f"checkpoint {ckpt} is at step {resume.step}, past --steps {steps}")
    return TrainState(resume.step, [tuple(h) for h in resume.history if h[0] <= resume.step], resume.wall_s)


def _step(recipe: Recipe, batch: Any, device: torch.device, step: int) -> Tuple[float, Dict[str, float]]:
    """Take optimiser step number `step` on `batch`: (the loss, its named parts) as numbers."""
    with cuda_settings(device, recipe.precision, benchmark=True):  # fixed crop shapes
        loss, terms = recipe.loss(batch)
        values = torch.stack([loss.detach().float()] + [v.detach().float() for v in terms.values()])
        host = values.tolist()  # the step's one read from the device
        if not math.isfinite(host[0]):  # stop now rather than save a broken network
            raise RuntimeError(f"training diverged at step {step} (loss {host[0]}); lower --lr")
        recipe.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        recipe.optimizer.step()
    if recipe.scheduler is not None:
        recipe.scheduler.step()
    return host[0], dict(zip(terms, host[1:]))


def fit(
    recipe: Recipe,
    output: PathLike,
    *,
    steps: int,
    checkpoint_every: int = 0,
    preview_every: int = 0,
    resume: Optional[TrainState] = None,
    callback: Optional[Callable[[TrainEvent], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
) -> Dict[str, Any]:
    """Train `recipe` to step `steps`, from step 0 or from `resume`; write the model file `output`.

    Writes checkpoints to checkpoint_path(output) and the sidecar to sidecar_of(output);
    returns the sidecar. Ctrl-C (KeyboardInterrupt) or `should_stop()` writes a
    checkpoint of the last whole step, then raises Interrupted (for Ctrl-C) or Cancelled.
    """
    emit = callback or (lambda event: None)
    output, ckpt = Path(output), checkpoint_path(output)
    net, opt, sched = recipe.net, recipe.optimizer, recipe.scheduler
    state = TrainState() if resume is None else _restore(recipe, resume, steps, ckpt)
    start, prior_wall = state.step, state.wall_s
    t0 = time.perf_counter()
    paced_from: Optional[Tuple[int, float]] = None

    def now() -> TrainState:
        state.wall_s = prior_wall + time.perf_counter() - t0
        state.optimizer = opt.state_dict()
        state.scheduler = sched.state_dict() if sched is not None else None
        return state

    def checkpoint() -> Path:
        path = recipe.save("checkpoint", ckpt, now())
        emit(TrainCheckpoint(state.step, path))
        return path

    def preview() -> None:
        net.eval()
        with torch.no_grad():
            image = recipe.preview()
            recipe.validate(now())
        net.train()
        if image is not None:
            emit(TrainPreview(state.step, image))

    emit(TrainStart(start, steps, recipe.photos, tuple(recipe.held_out), recipe.precision))
    net.train()
    device = getattr(recipe, "device", None) or torch.device("cpu")
    # The next step's batch is made on a thread while this step runs (a batch is a function of
    # its step number alone, so the order and the numbers are those of a run without it).
    ahead = ThreadPoolExecutor(1, thread_name_prefix="restyle-batch")
    # In the `restyle` command Ctrl-C ends the process at once until work starts (interrupts.py);
    # from here it must be a KeyboardInterrupt, which the handler below turns into a checkpoint.
    with stop_cleanly():
        try:
            if start == 0 and preview_every:
                preview()
            coming = ahead.submit(recipe.batch, state.step) if state.step < steps else None
            while state.step < steps:
                if should_stop is not None and should_stop():
                    raise Cancelled
                assert coming is not None
                batch = coming.result()
                coming = ahead.submit(recipe.batch, state.step + 1) if state.step + 1 < steps else None
                value, parts = _step(recipe, batch, device, state.step + 1)
                state.step = step = state.step + 1
                if step % recipe.history_every == 0 or step == 1:
                    state.history.append(recipe.history_row(step, value, parts))
                elapsed = time.perf_counter() - t0
                if step == start + 1:  # the pace is measured from here: the warm-up and first preview left out
                    paced_from = (step, elapsed)
                emit(TrainStep(step, steps, value, parts, elapsed, start, paced_from))
                if checkpoint_every and step % checkpoint_every == 0 and step < steps:
                    checkpoint()
                if preview_every and (step % preview_every == 0 or step == steps):
                    preview()
        except (KeyboardInterrupt, Cancelled) as e:
            path = checkpoint()
            error = Interrupted if isinstance(e, KeyboardInterrupt) else Cancelled
            raise error(f"training stopped at step {state.step} of {steps}; checkpoint {path} "
                        "(continue with --resume)") from None
        finally:
            ahead.shutdown(wait=True, cancel_futures=True)
        checkpoint()  # the final state, so that a longer --steps can resume
        synchronize(device)
        elapsed = time.perf_counter() - t0
        rate = (state.step - start) / max(elapsed, 1e-9)
        net.eval()
        path = recipe.save("model", output, now())
        report = recipe.sidecar(path, state, rate)
        write_text_atomic(json.dumps(report, indent=1) + "\n", sidecar_of(path))
    emit(TrainDone(state.step, path, elapsed, rate))
    return report
