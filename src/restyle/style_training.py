"""Train a feed-forward style network for one painting (Johnson et al., ECCV 2016).

The network learns to do in one pass what the optimiser does in a hundred
iterations: it is trained on the same VGG-19 content and Gram-style terms (and
TV), batch-first, on random crops, flips and scales of the photos in a folder.

Reproducible and resumable: the data for step k is drawn from a generator
seeded with (seed, k) alone, so a run resumed from its step-k checkpoint sees
exactly the batches the uninterrupted run would have seen. Checkpoints are
written atomically every `checkpoint_every` steps and on Ctrl-C, and each one
is itself a usable model file.

Progress is data: `train()` calls `callback` with the events below; the CLI
draws a progress bar from them and writes the preview grids.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from PIL import Image

from .config import VGG19_LAYERS
from .device import autocast, network, resolve_device, resolve_precision
from .engine import Painter
from .errors import Cancelled, InputError
from .images import load_image, resize, to_pil, to_tensor, write_text_atomic
from .modelfile import build_network, model_payload, read_model_file, save_model_file, sidecar_of
from .models.layers import deepest_layer
from .models.transformer import TransformerConfig, TransformerNet
from .objective import ContentTerm, GramStyleTerm, Objective, TVTerm
from .weights import load_weights, sha256sum
from .train_config import TRAIN_PRECISIONS, TrainConfig  # noqa: F401  (re-exported: restyle.style_training.TrainConfig)

HISTORY_EVERY = 10
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


# ---- events -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainStart:
    start_step: int  # 0, or the step a resumed run continues from
    steps: int
    photos: int  # training photos (after the held-aside ones)
    held_out: Tuple[str, ...]
    precision: str


@dataclass(frozen=True)
class TrainStep:
    step: int  # 1-based, over the whole run (a resumed run continues the count)
    steps: int
    loss: float
    terms: Dict[str, float]  # weighted: content, style, tv
    elapsed: float  # seconds in this session
    start_step: int = 0  # where this session began (a resumed run): the pace is (step - start_step) / elapsed

    @property
    def eta(self) -> float:
        """Seconds left at this session's mean pace."""
        return self.elapsed / max(self.step - self.start_step, 1) * (self.steps - self.step)


@dataclass(frozen=True)
class TrainPreview:
    step: int
    image: Image.Image = field(repr=False)  # top row: held-aside photos; bottom row: the network's pictures


@dataclass(frozen=True)
class TrainCheckpoint:
    step: int
    path: Path


@dataclass(frozen=True)
class TrainDone:
    step: int
    path: Path
    elapsed: float
    steps_per_s: float


TrainEvent = Union[TrainStart, TrainStep, TrainPreview, TrainCheckpoint, TrainDone]


# ---- data ---------------------------------------------------------------------------------------


def list_photos(folder: Union[str, os.PathLike]) -> List[Path]:
    d = Path(folder)
    if not d.is_dir():
        raise InputError(f"photos {d}: not a folder")
    photos = sorted(p for p in d.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    return photos


def split_photos(photos: Sequence[Path], holdout: int) -> Tuple[List[Path], List[Path]]:
    """(training, held aside): every k-th photo by sorted name is held aside, so the
    choice is deterministic and spread over the folder."""
    if holdout == 0:
        return list(photos), []
    k = max(len(photos) // holdout, 1)
    held = [p for i, p in enumerate(photos) if i % k == k - 1][:holdout]
    train = [p for p in photos if p not in held]
    return train, held


def data_fingerprint(photos: Sequence[Path]) -> str:
    """sha256 over the names and contents of the training photos, in order."""
    h = hashlib.sha256()
    for p in photos:
        h.update(p.name.encode() + b"\0" + sha256sum(p).encode() + b"\n")
    return h.hexdigest()


def step_generator(seed: int, step: int) -> torch.Generator:
    """The data RNG of step `step`: depends on (seed, step) only, so resume is exact."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) & 0x7FFF_FFFF_FFFF_FFFF)


def sample_batch(photos: Sequence[torch.Tensor], cfg: TrainConfig, step: int) -> torch.Tensor:
    """(batch, 3, size, size) float 0-255: random photo, scale, crop and flip per sample."""
    g = step_generator(cfg.seed, step)
    out = []
    for _ in range(cfg.batch_size):
        img = photos[int(torch.randint(len(photos), (1,), generator=g))]
        h, w = img.shape[-2:]
        short = cfg.size * (1.0 + (cfg.max_scale - 1.0) * float(torch.rand((), generator=g)))
        s = max(short / min(h, w), cfg.size / min(h, w))
        nh, nw = max(cfg.size, round(h * s)), max(cfg.size, round(w * s))
        x = F.interpolate(img[None].float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top = int(torch.randint(nh - cfg.size + 1, (1,), generator=g))
        left = int(torch.randint(nw - cfg.size + 1, (1,), generator=g))
        x = x[..., top : top + cfg.size, left : left + cfg.size]
        if float(torch.rand((), generator=g)) < 0.5:
            x = x.flip(-1)
        out.append(x)
    return torch.cat(out).clamp(0, 255)


def square(img: torch.Tensor, side: int) -> torch.Tensor:
    """(3, H, W) -> (1, 3, side, side): short side resized to `side`, centre crop."""
    h, w = img.shape[-2:]
    s = side / min(h, w)
    nh, nw = max(side, round(h * s)), max(side, round(w * s))
    x = F.interpolate(img[None].float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - side) // 2, (nw - side) // 2
    return x[..., top : top + side, left : left + side].clamp(0, 255)


def _load_u8(path: Path, long_side: Optional[int] = None) -> torch.Tensor:
    img = load_image(path)
    if long_side:
        img = resize(img, long_side)
    return to_tensor(img)[0].to(torch.uint8)


# ---- the objective ------------------------------------------------------------------------------


class StyleObjective:
    """The optimiser's terms (objective.py) on a batch: content, Gram style and TV, each a batch mean.

    The style target is prepared once; the content target is the batch of photos
    itself, so a fresh ContentTerm is prepared for every batch.
    """

    def __init__(self, painter: Painter, style: torch.Tensor, cfg: TrainConfig):
        self.painter, self.cfg = painter, cfg
        n = len(cfg.style_layers)
        # Layers weigh 1/n each, so --style-weight means the mean over the style layers.
        self.style = GramStyleTerm(cfg.style_weight * cfg.style_strength, cfg.style_layers, (1.0 / n,) * n,
                                   [style], [1.0], cfg.style_norm)
        self.style.prepare(painter)
        self.tv = TVTerm(cfg.tv_weight)

    def __call__(self, output: torch.Tensor, photos: torch.Tensor) -> Dict[str, torch.Tensor]:
        content = ContentTerm(self.cfg.content_weight, self.cfg.content_layers, photos)
        content.prepare(self.painter)
        return Objective([content, self.style, self.tv], self.painter).evaluate(output)


# ---- the loop -----------------------------------------------------------------------------------


def checkpoint_path(output: Path) -> Path:
    """starry.pt -> starry.ckpt.pt: the checkpoint beside the model."""
    return output.with_name(output.stem + ".ckpt" + output.suffix)


def preview_grid(photos: torch.Tensor, outputs: torch.Tensor) -> Image.Image:
    """Two rows: the held-aside photos, then the network's pictures of them."""
    n, _, h, w = photos.shape
    grid = Image.new("RGB", (n * w, 2 * h), "white")
    for i in range(n):
        grid.paste(to_pil(photos[i : i + 1]), (i * w, 0))
        grid.paste(to_pil(outputs[i : i + 1]), (i * w, h))
    return grid


def train(
    style: Union[str, os.PathLike],
    photos: Union[str, os.PathLike],
    output: Union[str, os.PathLike],
    config: TrainConfig = TrainConfig(),
    *,
    resume: bool = False,
    device: Union[str, torch.device] = "cpu",
    weights: Optional[os.PathLike] = None,
    callback: Optional[Callable[[TrainEvent], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
) -> Path:
    """Train a network for the painting `style` on the photos in folder `photos`.

    Writes the model to `output` (and checkpoints beside it, see
    `checkpoint_path`); returns `output`. With `resume`, continues from the
    checkpoint at the same step with the same data order; its config must match.
    Ctrl-C (KeyboardInterrupt) or `should_stop()` saves a checkpoint, then
    raises Cancelled.
    """
    cfg = config
    emit = callback or (lambda event: None)
    output = Path(output)
    if output.suffix != ".pt":
        raise InputError(f"output {output}: a model file must end in .pt")
    if not output.parent.is_dir():
        raise InputError(f"output {output}: folder {output.parent} does not exist")
    style = Path(style)
    all_photos = list_photos(photos)
    train_paths, held_paths = split_photos(all_photos, cfg.holdout)
    if len(train_paths) < 1:
        raise InputError(f"photos {photos}: found {len(all_photos)} photos ({', '.join(PHOTO_SUFFIXES)}); need at least {cfg.holdout + 1}")
    device = resolve_device(str(device))
    precision = resolve_precision(cfg.precision, device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    style_img = load_image(style)

    ckpt = checkpoint_path(output)
    net = TransformerNet(cfg.network_config())
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    start = 0
    if resume:
        payload = read_model_file(ckpt)
        if payload["kind"] != "checkpoint":
            raise InputError(f"--resume: {ckpt} is not a checkpoint")
        saved = payload["training"]["config"]
        differ = [k for k, v in cfg.to_dict().items() if k not in ("steps", "preview_every", "checkpoint_every", "threads") and saved.get(k) != v]
        if differ:
            raise InputError(
                f"--resume: settings {', '.join(differ)} differ from checkpoint {ckpt} "
                f"({', '.join(f'{k}={saved.get(k)!r}' for k in differ)})"
            )
        net = build_network(payload, ckpt)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        opt.load_state_dict(payload["optimizer"])
        start = int(payload["step"])
    else:
        torch.manual_seed(cfg.seed)
        net = TransformerNet(cfg.network_config())
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)

    vgg = network(load_weights(weights), deepest_layer(cfg.content_layers, cfg.style_layers), "max", device)
    painter = Painter(vgg, device, precision)  # channels_last and autocast for VGG-19, as the optimiser runs it
    net = net.to(device).train()
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)  # oneDNN's fast (AMX) kernels want NHWC
    objective = StyleObjective(painter, to_tensor(resize(style_img, cfg.style_size), device), cfg)

    data = [_load_u8(p) for p in train_paths]
    held = [_load_u8(p) for p in held_paths]
    training_info = {
        "config": cfg.to_dict(),
        "size": cfg.size,
        "photos_dir": str(Path(photos)),
        "photos": len(train_paths),
        "held_out": [p.name for p in held_paths],
        "data_fingerprint": data_fingerprint(train_paths),
        "precision": precision,
        "device": device.type,
    }
    style_info = {"name": style.stem, "file": style.name, "sha256": sha256sum(style)}
    emit(TrainStart(start, cfg.steps, len(train_paths), tuple(p.name for p in held_paths), precision))

    def save(kind: str, step: int, path: Path, wall: float) -> Path:
        info = dict(training_info, steps_done=step, wall_s=round(wall, 1), history=[list(h) for h in history])
        extra = {"optimizer": opt.state_dict(), "step": step} if kind == "checkpoint" else None
        return save_model_file(model_payload(net, style=style_info, training=info, kind=kind, extra=extra), path)

    def preview(step: int) -> None:
        if not held:
            return
        imgs = torch.cat([square(h, cfg.size * 2) for h in held])
        net.eval()
        with torch.no_grad(), autocast(device, precision):
            out = net(imgs.to(device)).float().cpu()
        net.train()
        emit(TrainPreview(step, preview_grid(imgs, out)))

    prior_wall = 0.0
    # (step, content, style, tv) every HISTORY_EVERY steps, carried across resumes.
    history: List[Tuple[float, ...]] = []
    if resume:
        prior_wall = float(payload["training"].get("wall_s", 0.0))
        history = [tuple(h) for h in payload["training"].get("history", []) if h[0] <= start]
    t0 = time.perf_counter()
    step = start
    try:
        if start == 0 and cfg.preview_every:
            preview(0)
        while step < cfg.steps:
            if should_stop is not None and should_stop():
                raise KeyboardInterrupt
            x = sample_batch(data, cfg, step).to(device)
            if device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                y = net(x)
            terms = objective(y, x)
            loss = sum(terms.values())
            if not torch.isfinite(loss):
                raise RuntimeError(f"training diverged at step {step + 1} (loss {float(loss)}); lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % HISTORY_EVERY == 0 or step == 1:
                history.append((step, *(round(float(terms[k].detach()), 1) for k in ("content", "style", "tv"))))
            emit(TrainStep(step, cfg.steps, float(loss.detach()), {k: float(v.detach()) for k, v in terms.items()},
                           time.perf_counter() - t0, start))
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                emit(TrainCheckpoint(step, save("checkpoint", step, ckpt, prior_wall + time.perf_counter() - t0)))
            if cfg.preview_every and step % cfg.preview_every == 0:
                preview(step)
    except KeyboardInterrupt:
        path = save("checkpoint", step, ckpt, prior_wall + time.perf_counter() - t0)
        emit(TrainCheckpoint(step, path))
        raise Cancelled(f"training stopped at step {step} of {cfg.steps}; checkpoint {path} (continue with --resume)") from None
    elapsed = time.perf_counter() - t0
    save("checkpoint", step, ckpt, prior_wall + elapsed)  # the final state, so a longer --steps can resume
    net.eval()
    path = save("model", step, output, prior_wall + elapsed)
    sidecar = {k: v for k, v in read_model_file(path).items() if k not in ("state_dict",)}
    sidecar.update(model_file=path.name, model_sha256=sha256sum(path), session_steps_per_s=round((step - start) / max(elapsed, 1e-9), 4))
    write_text_atomic(json.dumps(sidecar, indent=1) + "\n", sidecar_of(path))
    emit(TrainDone(step, path, elapsed, (step - start) / max(elapsed, 1e-9)))
    return path
