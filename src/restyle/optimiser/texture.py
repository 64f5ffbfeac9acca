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
from typing import Any, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import StylizeConfig
from ..errors import InputError
from ..events import Callback
from ..images import PathLike, check_size, fit_size, load_image, resize, to_pil, to_tensor
from .engine import (
    ImageSource, Painter, Result, noise_image, paint_pyramid, painter_for, plan_report, run_report, style_side,
    upsample,
)
from .loop import Step
from .objective import Sources, Term, build_terms
from .schedule import Stage, pyramid

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
    """A (w, h) texture after `style`; content settings of `config` do not apply, the rest do.

    The memory planner, tiled rendering (--tile-size, --max-memory) and fp16's loss
    scaling work as in style transfer; a tileable texture (`tile=True`) cannot also be
    rendered in tiles, and blend weights need several styles: both are refused.
    """
    cfg = config or StylizeConfig()
    check_texture_settings(size, cfg, tile)
    w_out, h_out = size
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

    def terms_at(k: int, stage: Stage, step: Step) -> List[Term]:
        style_long = style_side(cfg, stage)
        check_size(f"style image at style_scale {cfg.style_scale}", *fit_size(*style_img.size, style_long))
        style_t = to_tensor(resize(style_img, style_long), painter.device)
        return build_terms(cfg, Sources(styles=[style_t], blend=[1.0], wrap=tile))

    def resample(x: torch.Tensor, step: Step) -> torch.Tensor:
        return wrap_resize(x, step.size).clamp(0, 255) if tile else upsample(x, step.size)

    # From noise with the style loss alone, fixed unit steps overshoot by orders of
    # magnitude on the second step; a strong-Wolfe line search keeps every step
    # downhill. max_eval caps the evaluations, so `iterations` still counts them.
    # A torus is painted whole: tiles would not wrap around its edges.
    done = paint_pyramid(cfg.replace(tile_size=0) if tile else cfg, painter, stages, sizes, terms_at,
                         lambda step: noise_image(step.size, cfg.seed, painter.device),
                         style_layers=cfg.style_layers, content_layers=(), weights=wts, resample=resample,
                         line_search="strong_wolfe", callback=callback, cancel=cancel,
                         snapshot_every=snapshot_every, t_start=t_start)
    x = done.x
    if tuple(x.shape[-2:]) != (h_out, w_out):
        x = wrap_resize(x, (w_out, h_out)) if tile else F.interpolate(x, size=(h_out, w_out), mode="bicubic")
    image = to_pil(x)
    done.progress.done()
    report = run_report(cfg, painter, wts, done.progress,
                        [{"long_side": s.long_side, "iterations": s.iterations} for s in stages],
                        head={"mode": "texture", "tile": tile, "size": [w_out, h_out]},
                        tail={"memory_plan": plan_report(done.plan)})
    return Result(image, cfg, report)


def check_texture_settings(size: Tuple[int, int], cfg: StylizeConfig, tile: bool) -> None:
    """Refuse, naming the value and the rule, what a texture cannot honour."""
    for name, v in zip(("width", "height"), size):
        if isinstance(v, bool) or not isinstance(v, int) or not 32 <= v <= 8192:
            raise InputError(f"texture {name} {v!r} is out of range; it must be an integer in [32, 8192]")
    if cfg.style_blend_weights is not None:
        raise InputError(f"style_blend_weights {cfg.style_blend_weights} has no meaning for a texture, "
                         "which has one style image; drop it")
    if tile and cfg.tile_size:
        raise InputError(f"tile_size {cfg.tile_size} cannot be combined with a tileable texture (--tile): "
                         "tiled rendering does not wrap around the edges; use --tile-size 0 or drop --tile")
