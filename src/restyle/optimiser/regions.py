"""Region masks: which style paints which part of the content (Gatys et al. 2017, Sec. 3).

Two ways to say it (`--mask`):

- one grayscale image per style, in the order of the styles: white = this
  style, black = not; gray blends (soft edges);
- one label image for N >= 2 styles: its N most frequent colours, sorted by
  (R, G, B) so that darker/black comes first, stand for the styles in order;
  other colours (anti-aliased or blurred edges) are shared between the
  nearest ones, so soft edges blend. (With two styles and a black-and-white
  label image: black = first style, white = second, gray = both.)

Masks are resized to the content (their aspect ratio must match it), then to
each scale of the pyramid, and for each style layer averaged down to that
layer's resolution (area pooling), so edges stay soft where the features are
coarse. The style loss of region k compares the output's Gram matrix weighted
by mask k with the Gram matrix of the whole style image k (guided Gram
matrices, Sec. 3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import InputError
from ..images import PathLike, load_image
from ..models.layers import layer_size

ASPECT_TOLERANCE = 0.03  # a mask may differ from the content's aspect ratio by 3% (rounding of sizes)


def load_masks(paths: Sequence[PathLike], n_styles: int, content_size: Tuple[int, int]) -> List[Image.Image]:
    """One 'L' image per style at the content's size, 255 = that style."""
    paths = list(paths)
    for p in paths:  # checked here, where they are opened (a config may come from another machine)
        if not Path(p).is_file():
            raise InputError(f"mask {str(p)!r} is not an existing image file")
    if len(paths) == n_styles:
        masks = [load_image(p).convert("L") for p in paths]
    elif len(paths) == 1 and n_styles >= 2:
        masks = split_labels(load_image(paths[0]), n_styles, str(paths[0]))
    else:
        raise InputError(
            f"{len(paths)} mask(s) for {n_styles} style image(s); give one mask per style, "
            "or one label image for two or more styles"
        )
    cw, ch = content_size
    names = paths if len(paths) == len(masks) else paths[:1] * len(masks)
    for p, m in zip(names, masks):
        if abs(m.width / m.height - cw / ch) > ASPECT_TOLERANCE * cw / ch:
            raise InputError(
                f"mask {p} is {m.width}x{m.height} but the content is {cw}x{ch}; "
                "a mask must have the content's aspect ratio"
            )
    return [m.resize(content_size, Image.Resampling.BILINEAR) if m.size != content_size else m for m in masks]


def split_labels(img: Image.Image, n: int, name: str = "label image") -> List[Image.Image]:
    """A label image -> n 'L' masks, one per palette colour (see the module doc)."""
    rgb = np.asarray(img.convert("RGB"), dtype=np.int64)
    flat = rgb.reshape(-1, 3)
    colours, counts = np.unique(flat, axis=0, return_counts=True)
    if len(colours) < n:
        raise InputError(f"{name} has {len(colours)} distinct colour(s) but there are {n} styles; it needs {n}")
    palette = colours[np.argsort(-counts, kind="stable")[:n]]
    palette = palette[np.lexsort(palette.T[::-1])]  # sort by R, then G, then B
    dist = ((flat[:, None, :] - palette[None, :, :]) ** 2).sum(-1).astype(np.float64)
    # Soft assignment, so that an anti-aliased or blurred edge blends the styles: weights
    # softmax(-d^2 / tau) with tau = (closest palette pair's squared distance) / 8, which
    # gives a palette colour 99.97% to its own style and a half-way colour 50/50.
    pair = ((palette[:, None, :] - palette[None, :, :]) ** 2).sum(-1)
    tau = pair[~np.eye(n, dtype=bool)].min() / 8.0
    logits = -(dist - dist.min(1, keepdims=True)) / tau
    weights = np.exp(logits)
    weights /= weights.sum(1, keepdims=True)
    return [Image.fromarray(np.round(weights[:, k] * 255).astype(np.uint8).reshape(rgb.shape[:2]), "L")
            for k in range(n)]


def mask_tensor(mask: Image.Image, size: Tuple[int, int], device: torch.device) -> torch.Tensor:
    """'L' mask -> (1, 1, H, W) weights in [0, 1] at `size` (w, h), area-averaged when shrinking."""
    t = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None, None]
    return F.interpolate(t, size=(size[1], size[0]), mode="area" if size[0] <= mask.width else "bilinear").to(device)


def layer_masks(mask: torch.Tensor, layers: Sequence[str]) -> Dict[str, torch.Tensor]:
    """A (1, 1, H, W) mask averaged down to each layer's resolution."""
    h, w = mask.shape[-2:]
    return {name: F.adaptive_avg_pool2d(mask, layer_size(name, h, w)) for name in layers}
