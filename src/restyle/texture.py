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
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import StylizeConfig
from .engine import (
    ImageSource, Painter, Result, _is_cancelled, _network, device_name, resolve_device, resolve_precision, versions,
)
from .errors import Cancelled, InputError, RestyleError
from .events import Callback, Done, Iterate, Snapshot, StageStart
from .features import deepest_layer
from .images import PathLike, check_size, fit_size, load_image, resize, to_pil, to_tensor
from .schedule import pyramid
from .weights import load_weights
from . import __version__

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


def wrap_tv(x: torch.Tensor) -> torch.Tensor:
    """The TV differences across the seams (last column to first, last row to first)."""
    x = x.float()
    return 0.5 * ((x[..., :, :1] - x[..., :, -1:]).pow(2).sum() + (x[..., :1, :] - x[..., -1:, :]).pow(2).sum())


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
    emit = callback or (lambda event: None)
    t_start = time.perf_counter()
    style_img = load_image(style, max_pixels=cfg.max_input_pixels)
    stages = pyramid(max(w_out, h_out), cfg.iterations, cfg.scales)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    wts = load_weights(weights)
    net = _network(wts, deepest_layer(cfg.style_layers), cfg.pooling, device)
    painter = Painter(circular(net) if tile else net, device, precision)
    # Style only: no content layers are read (content_weight 0 is not enough, the layer would still run).
    cfg_style = cfg.replace(content_layers=cfg.style_layers[:1], content_weight=0.0)
    timings: Dict[str, float] = {"setup": time.perf_counter() - t_start}
    steps = sum(s.iterations for s in stages)
    step = 0
    x: Optional[torch.Tensor] = None
    terms: Dict[str, float] = {}
    for k, stage in enumerate(stages):
        t_stage = time.perf_counter()
        sw, sh = fit_size(w_out, h_out, stage.long_side)
        if tile:
            sw, sh = _round_up(sw, TILE_MULTIPLE), _round_up(sh, TILE_MULTIPLE)
        check_size("texture", sw, sh)
        style_long = max(1, round(stage.long_side * cfg.style_scale))
        check_size(f"style image at style_scale {cfg.style_scale}", *fit_size(*style_img.size, style_long))
        style_t = to_tensor(resize(style_img, style_long), device)
        gray = torch.full((1, 3, sh, sw), 127.5, device=device)
        targets = painter.targets(gray, [style_t], [1.0], cfg_style)
        del style_t
        if x is None:
            g = torch.Generator().manual_seed(cfg.seed)
            x = (127.5 + 32.0 * torch.randn(1, 3, sh, sw, generator=g)).clamp(0, 255).to(device)
        elif tile:
            x = wrap_resize(x, (sw, sh)).clamp(0, 255)
        else:
            x = F.interpolate(x, size=(sh, sw), mode="bicubic", align_corners=False).clamp(0, 255)
        x = x.detach().requires_grad_(True)
        emit(StageStart(k, len(stages), sw, sh, stage.iterations))
        i = 0

        def closure() -> torch.Tensor:
            nonlocal i, step, terms
            if _is_cancelled(cancel):
                raise Cancelled("cancelled")
            opt.zero_grad(set_to_none=True)
            loss, terms = painter.loss(x, targets, cfg_style)
            if tile:
                seam = wrap_tv(x) * cfg.tv_weight
                loss = loss + seam
                terms = dict(terms, tv=terms["tv"] + seam.item())
            loss.backward()
            x.grad = x.grad.contiguous()
            if not torch.isfinite(loss):
                raise RestyleError(f"the loss became {float(loss)} at iteration {i + 1}; try --precision fp32")
            i += 1
            step += 1
            emit(Iterate(k, len(stages), sw, sh, i, stage.iterations, step, steps,
                         loss.item(), dict(terms), time.perf_counter() - t_start))
            if snapshot_every and step % snapshot_every == 0:
                emit(Snapshot(step, steps, to_pil(x)))
            return loss

        if cfg.optimizer == "lbfgs":
            # From noise with the style loss alone, fixed unit steps overshoot by orders of
            # magnitude on the second step; a strong-Wolfe line search keeps every step
            # downhill. max_eval caps the evaluations, so `iterations` still counts them.
            opt = torch.optim.LBFGS([x], lr=cfg.lr_or_default, max_iter=stage.iterations,
                                    max_eval=stage.iterations, tolerance_grad=-1, tolerance_change=-1,
                                    history_size=100, line_search_fn="strong_wolfe")
            opt.step(closure)
        else:
            opt = torch.optim.Adam([x], lr=cfg.lr_or_default)
            for _ in range(stage.iterations):
                opt.step(closure)
                with torch.no_grad():
                    x.clamp_(0, 255)
        timings[f"scale{k}_{sw}x{sh}"] = time.perf_counter() - t_stage

    assert x is not None
    x = x.detach()
    if tuple(x.shape[-2:]) != (h_out, w_out):
        x = wrap_resize(x, (w_out, h_out)) if tile else F.interpolate(x, size=(h_out, w_out), mode="bicubic")
    image = to_pil(x)
    timings["total"] = time.perf_counter() - t_start
    emit(Done(timings["total"], dict(terms), dict(timings)))
    terms.pop("content", None)
    report = {
        "restyle": __version__,
        "mode": "texture",
        "tile": tile,
        "size": [w_out, h_out],
        "config": cfg.to_dict(),
        "stages": [{"long_side": s.long_side, "iterations": s.iterations} for s in stages],
        "device": device_name(device),
        "precision": precision,
        "weights": {"path": str(wts.path), "sha256": wts.sha256, "format": wts.input_format},
        "versions": versions(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "final_loss": terms,
        "iterations": steps,
    }
    return Result(image, cfg, report)
