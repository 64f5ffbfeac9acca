"""Enlarge pictures with a trained upscaler, and paint-then-upscale for large prints.

    img = upscale(load_image("photo.jpg"), scale=4)           # the bundled 4x model
    result = paint_and_upscale(paint, StylizeConfig(size=4096))  # paint 1024 px, enlarge 4x

A 2x enlargement with a 4x model runs the network and then shrinks its output
by 2 (Lanczos): the network's detail survives the shrink, bicubic's blur would not.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from PIL import Image

from ..config import PAINT_LIMIT, StylizeConfig
from ..errors import InputError
from ..images import fit_size, to_pil, to_tensor
from ..models.modelfile import bundled_models as _bundled, load_network, resolve_model
from ..models.upscaler import SCALES, Upscaler, upscale_tensor
from ..optimiser.memory import check_fits, upscale_estimate

DEFAULT_MODEL = "up4"
KIND = "upscaler"  # the family in models/modelfile.FAMILIES
# The enlargement is accumulated in float32 with a blending weight (16 bytes a pixel):
# 16384 x 16384 output pixels need about 4.3 GB.
MAX_OUTPUT_PIXELS = 16384 * 16384
MIN_TILE = 16  # low-resolution pixels of a tile's core (models.upscaler.upscale_tensor's rule)


def bundled_models() -> Tuple[str, ...]:
    """The bundled upscalers' names (models/registry.py)."""
    return tuple(_bundled(KIND))


def model_path(name: str) -> Path:
    """A bundled upscaler's name (up4) or a path to a model file."""
    return resolve_model(name, KIND)


@lru_cache(maxsize=4)
def load_upscaler(name: str = DEFAULT_MODEL) -> Upscaler:
    """The upscaler in a model file (loaded with weights_only=True) or bundled under `name`."""
    return load_network(name, KIND)[0]


def upscale(
    img: Image.Image, scale: int = 4, model: str = DEFAULT_MODEL, *, tile: int = 256,
    device: str = "auto", precision: str = "auto",
) -> Image.Image:
    """Enlarge `img` by `scale` (2 or 4) with the upscaler `model`, tile by tile, on `device` at `precision`."""
    if scale not in SCALES:
        raise InputError(f"scale {scale!r} is not one of {', '.join(map(str, SCALES))}")
    net = load_upscaler(model)
    if scale > net.scale:
        raise InputError(f"model {model} enlarges {net.scale}x; it cannot give --scale {scale}")
    return upscale_to(img, (img.width * scale, img.height * scale), model, tile=tile, device=device,
                      precision=precision)


def upscale_to(
    img: Image.Image, size: Tuple[int, int], model: str = DEFAULT_MODEL, *, tile: int = 256, device: str = "auto",
    precision: str = "auto",
) -> Image.Image:
    """Enlarge `img` with the network, then resize (Lanczos) to exactly `size` if the factor differs.

    `device` and `precision` as the other networks take them (device.resolve_device, resolve_precision):
    under bf16 or fp16 autocast the convolutions run in half precision; the tiles blend in float32.
    """
    from ..device import autocast, resolve_device, resolve_precision

    device = resolve_device(device)
    precision = resolve_precision(precision, device)
    net = load_upscaler(model).to(device)
    pixels = img.width * img.height * net.scale**2
    if pixels > MAX_OUTPUT_PIXELS:
        raise InputError(
            f"{img.width}x{img.height} enlarged {net.scale}x is {pixels} pixels, over the limit of "
            f"{MAX_OUTPUT_PIXELS} ({MAX_OUTPUT_PIXELS // 2**20} MP); use a smaller picture"
        )
    if tile < MIN_TILE:
        raise InputError(f"tile {tile} is too small; it must be at least {MIN_TILE} px")
    piece = (tile + 2 * net.config.reach) ** 2
    check_fits(upscale_estimate(img.width, img.height, net.scale, net.config.channels, piece),
               f"{img.width}x{img.height} enlarged {net.scale}x", str(device), hint="use a smaller picture")
    # Neighbouring tiles cross-fade over 16 px, or a quarter of a small tile.
    with autocast(device, precision):
        big = upscale_tensor(net, to_tensor(img, device), tile=tile, overlap=min(16, tile // 4))
    out = to_pil(big)
    if out.size != tuple(size):
        out = out.resize(tuple(size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return out


def paint_and_upscale(
    paint: Callable[..., Any], config: StylizeConfig, *, model: str = DEFAULT_MODEL,
    paint_limit: int = PAINT_LIMIT, **kw: Any,
) -> Any:
    """Paint at min(size, paint_limit) with `paint(config, **kw)`, then enlarge to `size` with the upscaler.

    The result's report gains an "upscale" section: the painted size, the final
    size, the model and its seconds; the config it records is the painted one.
    """
    painted = min(config.size, paint_limit)
    if painted == config.size:
        result = paint(config, **kw)
        result.report["upscale"] = {"painted": list(result.image.size), "upscaled": None,
                                    "note": f"painted at full size (<= {paint_limit} px)"}
        return result
    net = load_upscaler(model)  # a bad model is refused before the painting, not after
    factor = config.size / painted
    if factor > net.scale:
        raise InputError(
            f"size {config.size} is {factor:.2f}x the paint limit {paint_limit} px; model {model} enlarges "
            f"at most {net.scale}x (lower --size to {paint_limit * net.scale} or less)"
        )
    result = paint(config.replace(size=painted), **kw)
    t0 = time.perf_counter()
    painted_size = list(result.image.size)
    final = fit_size(*result.image.size, config.size)
    result.image = upscale_to(result.image, final, model, device=config.device,  # where it painted, as it painted
                              precision=config.precision)
    seconds = time.perf_counter() - t0
    report: Dict[str, Any] = result.report
    report["upscale"] = {
        "painted": painted_size, "upscaled": list(final), "model": model,
        "model_scale": net.scale, "seconds": round(seconds, 2),
        "note": f"painted at {painted} px (the paint limit), enlarged {factor:g}x by the upscaler",
    }
    timings = report.setdefault("timings_s", {})
    timings["upscale"] = seconds
    timings["total"] = timings.get("total", 0.0) + seconds
    return result
