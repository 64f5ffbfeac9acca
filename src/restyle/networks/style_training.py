"""Train a feed-forward style network for one painting (Johnson et al., ECCV 2016).

The network learns to do in one pass what the optimiser does in a hundred
iterations: it is trained on the same VGG-19 content and Gram-style terms (and
TV), batch-first, on random crops, flips and scales of the photos in a folder.

This module brings the style network's parts (its network, its batch maker,
its loss, its preview and its model file) to the one training loop,
training.fit, which makes the run reproducible and resumable (data by
(seed, step)), checkpoints it (every `checkpoint_every` steps and on Ctrl-C;
each checkpoint is itself a usable model file) and reports progress as
events (events.TrainStart, TrainStep, ...); the CLI draws a progress bar from
them and writes the preview grids.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from PIL import Image

from ..config.train import FROM_ARBITRARY, TRAIN_PRECISIONS, TrainConfig  # noqa: F401  (re-exported: restyle.networks.style_training.TrainConfig)
from ..device import autocast, network, network_layout, prefers_channels_last, resolve_device, resolve_precision
from ..errors import InputError
from ..events import TrainCheckpoint, TrainDone, TrainEvent, TrainPreview, TrainStart, TrainStep  # noqa: F401  (re-exported)
from ..hashing import sha256sum
from ..images import load_image, resize, to_tensor
from ..models.layers import deepest_layer
from ..models.modelfile import build_network, model_payload, read_model_file, save_model_file
from ..models.transformer import TransformerNet
from ..optimiser.engine import Painter
from ..optimiser.objective import ContentTerm, GramStyleTerm, Objective, TVTerm
from .training import (  # noqa: F401  (re-exported: the names this module had before the one loop)
    PHOTO_SUFFIXES, Recipe, TrainState, check_output, checkpoint_path, cosine_lr, data_fingerprint, fit, grid, list_photos,
    load_photo_u8, load_photos, seeded, split_photos, step_generator,
)
from ..models.weights import load_weights

HISTORY_EVERY = 10


# ---- data ---------------------------------------------------------------------------------------


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


# ---- the recipe ---------------------------------------------------------------------------------


def preview_grid(photos: torch.Tensor, outputs: torch.Tensor) -> Image.Image:
    """Two rows: the held-aside photos, then the network's pictures of them."""
    return grid([list(photos.split(1)), list(outputs.split(1))], gap=0)


class StyleRecipe(Recipe):
    """A TransformerNet trained on StyleObjective over random crops of the photos."""

    history_every = HISTORY_EVERY

    def __init__(self, cfg: TrainConfig, net: TransformerNet, objective: StyleObjective, device: torch.device,
                 precision: str, data: List[torch.Tensor], held: List[torch.Tensor], info: Dict[str, Any],
                 style_info: Dict[str, str]) -> None:
        self.cfg, self.objective, self.device, self.precision = cfg, objective, device, precision
        self.net = net.to(device).train()
        if prefers_channels_last(device):
            self.net = self.net.to(memory_format=torch.channels_last)  # oneDNN's AMX and cuDNN's tensor-core kernels
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        if cfg.lr_decay == "cosine":
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine_lr(cfg.steps))
        self.data, self.held, self.info, self.style_info = data, held, info, style_info
        self.photos, self.held_out = info["photos"], tuple(info["held_out"])

    def batch(self, step: int) -> torch.Tensor:
        x = sample_batch(self.data, self.cfg, step)  # on fit()'s batch thread, a step ahead
        if self.device.type == "cuda":  # from page-locked memory, without waiting for the copy
            x = x.pin_memory().to(self.device, non_blocking=True)
        return network_layout(x.to(self.device), self.device)

    def loss(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        with autocast(self.device, self.precision):
            y = self.net(x)
        terms = self.objective(y, x)
        return sum(terms.values()), terms

    def preview(self) -> Optional[Image.Image]:
        if not self.held:
            return None
        imgs = torch.cat([square(h, self.cfg.size * 2) for h in self.held])
        with autocast(self.device, self.precision):
            out = self.net(imgs.to(self.device)).float().cpu()
        return preview_grid(imgs, out)

    def history_row(self, step: int, loss: float, terms: Dict[str, float]) -> Tuple[float, ...]:
        return (step, *(round(terms[k], 1) for k in ("content", "style", "tv")))

    def save(self, kind: str, path: Path, state: TrainState) -> Path:
        info = dict(self.info, steps_done=state.step, wall_s=round(state.wall_s, 1),
                    history=[list(h) for h in state.history])
        extra = ({"optimizer": state.optimizer, "scheduler": state.scheduler, "step": state.step}
                 if kind == "checkpoint" else None)
        return save_model_file(model_payload(self.net, style=self.style_info, training=info, kind=kind, extra=extra),
                               path)

    def sidecar(self, path: Path, state: TrainState, steps_per_s: float) -> Dict[str, Any]:
        side = {k: v for k, v in read_model_file(path).items() if k != "state_dict"}
        side.update(model_file=path.name, model_sha256=sha256sum(path), session_steps_per_s=round(steps_per_s, 4))
        return side


def _resume_state(cfg: TrainConfig, ckpt: Path, style: Dict[str, str], fingerprint: str) -> Tuple[TransformerNet, TrainState]:
    """The network and loop state of checkpoint `ckpt`, whose settings, painting (`style`, by
    sha256) and training photos (`fingerprint`, training.data_fingerprint) must be this run's."""
    payload = read_model_file(ckpt)
    if payload["kind"] != "checkpoint":
        raise InputError(f"--resume: {ckpt} is not a checkpoint")
    was = payload["style"]
    if was.get("sha256") != style["sha256"]:
        raise InputError(f"--resume: checkpoint {ckpt} was trained on painting {was.get('file', was.get('name'))!s} "
                         f"(sha256 {str(was.get('sha256'))[:12]}), not {style['file']} (sha256 {style['sha256'][:12]}); "
                         "give that painting, or start afresh with another -o")
    if payload["training"].get("data_fingerprint") != fingerprint:
        raise InputError(f"--resume: checkpoint {ckpt} was trained on other photos than those in "
                         f"{payload['training'].get('photos_dir', '?')} now (their names or contents differ); "
                         "give the same photos, or start afresh with another -o")
    saved = {**TrainConfig().to_dict(), **payload["training"]["config"]}  # a field newer than the file: its default
    differ = [k for k, v in cfg.to_dict().items()
              if k not in ("steps", "preview_every", "checkpoint_every", "threads") and saved.get(k) != v]
    if differ:
        raise InputError(
            f"--resume: settings {', '.join(differ)} differ from checkpoint {ckpt} "
            f"({', '.join(f'{k}={saved.get(k)!r}' for k in differ)})"
        )
    t = payload["training"]
    return build_network(payload, ckpt), TrainState(int(payload["step"]), [tuple(h) for h in t.get("history", [])],
                                                    float(t.get("wall_s", 0.0)), payload["optimizer"],
                                                    payload.get("scheduler"))


@dataclass(frozen=True)
class Start:
    """A training's starting network, made by an any-painting model for one painting, and where it came from."""

    net: TransformerNet
    info: Dict[str, Any]


def start_network(start: Union[str, os.PathLike], style: Union[str, os.PathLike], config: Any = None,
                  device: Union[str, torch.device] = "cpu", weights: Optional[os.PathLike] = None) -> Start:
    """The any-painting model `start`'s network for painting `style`, shaped as `config` asks.

    InputError (saying why) where `start` is not an any-painting model or its network
    is not the one `config` trains. Give the result to `train(start=...)`: the painting
    is encoded once, whether the caller asks first (the web app) or not (the CLI).
    """
    from .feedforward import ArbitraryModel, load_model

    cfg = _train_config(config)
    model = load_model(start, device=resolve_device(str(device)), weights=weights)
    if not isinstance(model, ArbitraryModel):
        raise InputError(f"--from {start}: not an any-painting model (it paints only {model.style_name}); "
                         "give 'arbitrary' or a file written by train-arbitrary")
    net = model.net.specialise(model.encode_style(Path(style))).cpu()
    want = cfg.network_config()
    if net.config != want:
        raise InputError(f"--from {start}: its network is widths {list(net.config.widths)}, {net.config.res_blocks} "
                         f"residual blocks; the training asks for widths {list(want.widths)}, {want.res_blocks} blocks "
                         "(leave --widths and --res-blocks at their defaults)")
    return Start(net.train(), {"model": model.name, "sha256": model.sha256})


def _train_config(config: Any, fine_tune: bool = False) -> TrainConfig:
    """`config` of the API: a TrainConfig, None (the defaults) or a dict of its fields. For a `fine_tune`
    (train from an any-painting model) None and a dict take FROM_ARBITRARY's settings where they are silent."""
    defaults = FROM_ARBITRARY if fine_tune else {}
    if config is None:
        return TrainConfig(**defaults)
    if isinstance(config, dict):
        try:
            return TrainConfig(**{**defaults, **config})
        except TypeError as e:  # an unknown field
            raise InputError(f"config: {e}".replace("__init__() ", "")) from None
    if not isinstance(config, TrainConfig):
        raise InputError(f"config {config!r} must be a TrainConfig, a dict of its fields, or None")
    return config


def _network_to_train(cfg: TrainConfig, output: Path, style: Path, style_info: Dict[str, Any], fingerprint: str, *,
                      resume: bool, start: Optional[Union[str, os.PathLike, Start]], device: torch.device,
                      weights: Optional[os.PathLike],
                      ) -> Tuple[TransformerNet, Optional[TrainState], Optional[Dict[str, Any]]]:
    """(network, resume state or None, what it started from or None): the checkpoint's network (`resume`),
    the any-painting model's for `style` (`start`), or a fresh one."""
    if resume:
        net, state = _resume_state(cfg, checkpoint_path(output), style_info, fingerprint)
        saved = read_model_file(checkpoint_path(output))["training"].get("started_from") if state is not None else None
        return net, state, saved
    if start is not None:
        if not isinstance(start, Start):
            start = start_network(start, style, cfg, device, weights)
        return start.net, None, start.info
    with seeded(cfg.seed):
        return TransformerNet(cfg.network_config()), None, None


def train(
    style: Union[str, os.PathLike],
    photos: Union[str, os.PathLike],
    output: Union[str, os.PathLike],
    config: Optional[TrainConfig] = None,
    *,
    resume: bool = False,
    device: Union[str, torch.device] = "cpu",
    weights: Optional[os.PathLike] = None,
    callback: Optional[Callable[[TrainEvent], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    start: Optional[Union[str, os.PathLike, Start]] = None,
) -> Path:
    """Train a network for the painting `style` on the photos in folder `photos`.

    With `start` (an any-painting model: ``"arbitrary"`` or a file, or what
    `start_network` made of one), the network starts as that model's network for this
    painting (its predicted normalisation parameters baked in) and the training
    fine-tunes it: `config` None or a dict gets FROM_ARBITRARY's short run (100 steps,
    the rate falling to a tenth) where it says nothing else.

    Writes the model to `output` (and checkpoints beside it, see
    `checkpoint_path`); returns `output`. With `resume`, continues from the
    checkpoint at the same step with the same data order; its config must match.
    Ctrl-C (KeyboardInterrupt) or `should_stop()` saves a checkpoint, then
    raises Cancelled.
    """
    cfg = _train_config(config, fine_tune=start is not None)
    for name, value in (("style", style), ("photos", photos), ("output", output)):
        if isinstance(value, bool) or not isinstance(value, (str, os.PathLike)):
            raise InputError(f"{name} {value!r} must be a path (str or os.PathLike)")
    output = check_output(output)
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
    style_info = {"name": style.stem, "file": style.name, "sha256": sha256sum(style)}
    fingerprint = data_fingerprint(train_paths)

    net, state, started_from = _network_to_train(cfg, output, style, style_info, fingerprint, resume=resume,
                                                 start=start, device=device, weights=weights)
    vgg = network(load_weights(weights), deepest_layer(cfg.content_layers, cfg.style_layers), "max", device)
    painter = Painter(vgg, device, precision)  # channels_last and autocast for VGG-19, as the optimiser runs it
    objective = StyleObjective(painter, to_tensor(resize(style_img, cfg.style_size), device), cfg)
    info = {
        "config": cfg.to_dict(),
        "size": cfg.size,
        "photos_dir": str(Path(photos)),
        "photos": len(train_paths),
        "held_out": [p.name for p in held_paths],
        "data_fingerprint": fingerprint,
        "precision": precision,
        "device": device.type,
    }
    if started_from:
        info["started_from"] = started_from
    largest_crop = math.ceil(cfg.size * cfg.max_scale)  # the short side a crop at the largest scale uses
    recipe = StyleRecipe(cfg, net, objective, device, precision,
                         load_photos(train_paths, short_side=largest_crop), load_photos(held_paths), info,
                         style_info)
    fit(recipe, output, steps=cfg.steps, checkpoint_every=cfg.checkpoint_every, preview_every=cfg.preview_every,
        resume=state, callback=callback, should_stop=should_stop)
    return output
