"""Texture synthesis from noise with the style loss alone (Gatys, Ecker & Bethge, NIPS 2015).

    result = synthesize("starry_night.jpg", (512, 512), tile=True)
    result.image.save("texture.png")

It is style transfer without a content term: a seeded white-noise image is
pushed until its Gram matrices match the style image's, coarse to fine.

Tileable output (`tile=True`): the network sees the image as a torus. Every
convolution pads circularly (the right edge's neighbours are the left edge's
pixels), the TV term includes the wrap-around differences and upsampling
between scales wraps too, so the left/right and top/bottom edges continue
into each other. Sizes are rounded up to a multiple of 16 (the pooling
stride at relu5_1) while painting, so pooling never drops a row, and the
torus is resampled to the exact size at the end.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import StylizeConfig
from .engine import ImageSource, Painter, Result, noise_image, painter_for, run_report, style_side, upsample
from .errors import InputError
from .events import Callback
from .images import PathLike, check_size, fit_size, load_image, resize, to_pil, to_tensor
from .loop import OptimizerSettings, Progress, Step, paint
from .objective import Objective, Sources, build_terms
from .schedule import pyramid

TILE_MULTIPLE = 16  # four 2x2 poolings lie below relu5_1


def circular(net: nn.Module) -> nn.Module:
    """A copy of `net` whose convolutions pad circularly (the input is a torus)."""
    net = copy.deepcopy(net)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.padding_mode = "circular"
    return net


def wrap_resize(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Resample a periodic image (1, C, H, W) to (w, h), keeping it periodic."""
    w, h = size
    H, W = x.shape[-2:]
    if (H, W) == (h, w):
        return x
    p = 4  # bicubic needs 2 neighbours; a wider wrap border keeps the edges exact
    padded = F.pad(x, (p, p, p, p), mode="circular")
    sy, sx = h / H, w / W
    big = F.interpolate(padded, size=(round((H + 2 * p) * sy), round((W + 2 * p) * sx)),
                        mode="bicubic", align_corners=False)
    oy, ox = round(p * sy), round(p * sx)
    return big[..., oy:oy + h, ox:ox + w]


def _round_up(v: int, m: int) -> int:
    return max(2 * m, -(-v // m) * m)


def synthesize(
    style: ImageSource,
    size: Tuple[int, int] = (512, 512),
    config: Optional[StylizeConfig] = None,
    *,
    tile: bool = False,
    callback: Optional[Callback] = None,
    cancel: Any = None,
    snapshot_every: int = 0,
    weights: Optional[PathLike] = None,
) -> Result:
    """A (w, h) texture after `style`; content settings of `config` are ignored, the rest apply."""
    cfg = config or StylizeConfig()
    w_out, h_out = size
    for name, v in (("width", w_out), ("height", h_out)):
        if isinstance(v, bool) or not isinstance(v, int) or not 32 <= v <= 8192:
            raise InputError(f"texture {name} {v!r} is out of range; it must be an integer in [32, 8192]")
    t_start = time.perf_counter()
    style_img = load_image(style, max_pixels=cfg.max_input_pixels)
    stages = pyramid(max(w_out, h_out), cfg.iterations, cfg.scales)
    sizes = []
    for stage in stages:
        sw, sh = fit_size(w_out, h_out, stage.long_side)
        if tile:
            sw, sh = _round_up(sw, TILE_MULTIPLE), _round_up(sh, TILE_MULTIPLE)
        check_size("texture", sw, sh)
        sizes.append((sw, sh))
    # The texture's network reads the style layers only: no content term, no content layer.
    painter, wts = painter_for(cfg.replace(content_layers=cfg.style_layers[:1]), weights)
    if tile:
        painter = Painter(circular(painter.net), painter.device, painter.precision, key=(painter.key, "circular"))
    # From noise with the style loss alone, fixed unit steps overshoot by orders of
    # magnitude on the second step; a strong-Wolfe line search keeps every step
    # downhill. max_eval caps the evaluations, so `iterations` still counts them.
    opt = (OptimizerSettings("lbfgs", cfg.lr_or_default, 100, line_search="strong_wolfe")
           if cfg.optimizer == "lbfgs" else OptimizerSettings("adam", cfg.lr_or_default))
    steps = [Step(sz, stage.iterations, opt) for sz, stage in zip(sizes, stages)]
    progress = Progress(callback, steps, snapshot_every, to_pil, t_start)

    def objective_at(k: int, step: Step) -> Objective:
        style_long = style_side(cfg, stages[k])
        check_size(f"style image at style_scale {cfg.style_scale}", *fit_size(*style_img.size, style_long))
        src = Sources(styles=[to_tensor(resize(style_img, style_long), painter.device)], blend=[1.0], wrap=tile)
        return Objective(build_terms(cfg, src), painter).prepare(cache=painter.cache)

    def resample(x: torch.Tensor, step: Step) -> torch.Tensor:
        return wrap_resize(x, step.size).clamp(0, 255) if tile else upsample(x, step.size)

    x = paint(steps, objective_at, lambda step: noise_image(step.size, cfg.seed, painter.device), resample,
              progress, precision=painter.precision, cancel=cancel, seed=cfg.seed)
    if tuple(x.shape[-2:]) != (h_out, w_out):
        x = wrap_resize(x, (w_out, h_out)) if tile else F.interpolate(x, size=(h_out, w_out), mode="bicubic")
    image = to_pil(x)
    progress.done()
    report = run_report(cfg, painter, wts, progress,
                        [{"long_side": s.long_side, "iterations": s.iterations} for s in stages],
                        head={"mode": "texture", "tile": tile, "size": [w_out, h_out]})
    return Result(image, cfg, report)
