"""Training machinery shared by restyle's trained networks: model files, checkpoints, the loop.

A model file is self-describing (nanoGPT's habit): beside the weights it stores
its kind and the arguments that rebuild the network, and it loads with
`torch.load(..., weights_only=True)`, so a file cannot run code. A checkpoint is
a model file plus the optimiser, scheduler and data-sampler states and the step,
so that `--resume` continues exactly where the run stopped.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from PIL import Image

from .errors import Cancelled, InputError
from .events import Callback, TrainCheckpoint, TrainPreview, TrainStep
from .images import PathLike

FORMAT = "restyle-model"
FORMAT_VERSION = 1


def checkpoint_path(out: PathLike) -> Path:
    """Where the training of model file `out` keeps its checkpoint: up4.pt -> up4.ckpt.pt."""
    out = Path(out)
    return out.with_name(out.stem + ".ckpt" + out.suffix)


def preview_path(out: PathLike) -> Path:
    """Where the training of model file `out` draws its preview grid: OUT.preview.png."""
    out = Path(out)
    return out.with_name(out.stem + ".preview.png")


def save_record(record: Dict[str, Any], path: PathLike) -> Path:
    """torch.save to a temporary file, then rename: a killed run never leaves half a checkpoint."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save({"format": FORMAT, "version": FORMAT_VERSION, **record}, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make a shared model file private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_record(path: PathLike, kind: str) -> Dict[str, Any]:
    """Load a model file or checkpoint of `kind`; InputError (one line) for anything else."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a file that is not its own
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: not a restyle model file ({reason})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise InputError(f"{path}: not a restyle model file (no {FORMAT!r} header)")
    if record.get("version") != FORMAT_VERSION:
        raise InputError(f"{path}: model file version {record.get('version')!r}; this restyle reads {FORMAT_VERSION}")
    if record.get("kind") != kind:
        raise InputError(f"{path}: a {record.get('kind')!r} model, not the {kind!r} model asked for")
    return record


def cosine_lr(steps: int, floor: float = 0.1) -> Callable[[int], float]:
    """LR multiplier: cosine from 1 to `floor` over `steps` (a pure function of the step)."""
    import math

    return lambda step: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))


def fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step_fn: Callable[[int], Tuple[torch.Tensor, Dict[str, float]]],
    *,
    steps: int,
    start: int = 0,
    scheduler: Optional[Any] = None,
    checkpoint: Optional[Callable[[int], Path]] = None,
    checkpoint_every: int = 0,
    preview: Optional[Callable[[int], Image.Image]] = None,
    preview_every: int = 0,
    callback: Optional[Callback] = None,
) -> List[Tuple[int, float]]:
    """Run steps start+1 .. steps of `step_fn` (returns the loss and its named terms).

    Emits TrainStep after every step, TrainCheckpoint after `checkpoint(step)`
    (every `checkpoint_every` steps and at the end) and TrainPreview with
    `preview(step)` every `preview_every` steps and at the end. Returns
    (step, loss) pairs.
    """
    emit = callback or (lambda event: None)
    t0 = time.perf_counter()
    history: List[Tuple[int, float]] = []
    model.train()
    done = start
    try:
        for step in range(start + 1, steps + 1):
            loss, terms = step_fn(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            value = float(loss.detach())
            if value != value:  # NaN: stop now rather than save a broken network
                raise RuntimeError(f"training diverged at step {step} (loss is NaN); lower the learning rate")
            history.append((step, value))
            done = step
            emit(TrainStep(step, steps, value, terms, time.perf_counter() - t0, first=start))
            last = step == steps
            if preview is not None and (last or (preview_every and step % preview_every == 0)):
                model.eval()
                emit(TrainPreview(step, preview(step)))
                model.train()
            if checkpoint is not None and (last or (checkpoint_every and step % checkpoint_every == 0)):
                emit(TrainCheckpoint(step, str(checkpoint(step))))
    except KeyboardInterrupt:
        if checkpoint is None:
            raise
        path = checkpoint(done)  # Ctrl-C keeps the progress: --resume continues from here
        emit(TrainCheckpoint(done, str(path)))
        raise Cancelled(f"training stopped at step {done} of {steps}; checkpoint {path} (continue with --resume)") from None
    model.eval()
    return history


def grid(rows: Sequence[Sequence[torch.Tensor]], gap: int = 4) -> Image.Image:
    """Pictures (1, 3, H, W) in 0-255, laid out row by row on white with `gap` px between."""
    from .images import to_pil

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
