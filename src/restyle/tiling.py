"""Tiled rendering: the loss and gradient of the whole image, computed one tile at a time.

The Gram-matrix style loss is not a sum over tiles: each tile's Gram differs
from the image's. So each evaluation makes two passes over overlapping tiles:

  1. without gradients, sum F F^T over every tile's core (the tiles' cores
     partition the image) into the *global* Gram matrix G of each style layer;
  2. with gradients, tile by tile, backpropagate the surrogate
         sum_l <dL/dG_l, F_core F_core^T / (C N_l)>  +  content loss on the core
     whose gradient with respect to the tile's features is exactly the full
     loss's gradient there (G is linear in the sum of F F^T); the tiles' input
     gradients are added into one image-sized gradient.

Each tile is its core plus TILE_MARGIN px of context on every side, and core
boundaries sit on multiples of the deepest layer's stride, so pooling windows
line up with the whole image's. Where the margin covers the deepest layer's
receptive field the result equals the untiled loss and gradient (up to float
summation order; tests/test_tiling.py checks this); with a smaller margin the
only difference is zero padding seen near tile edges. The grid is shifted by a
random multiple of the stride at every evaluation, so those small errors never
sit at the same place twice and leave no seams.

Cost: pass 1 adds a forward (about a third of a forward+backward) per tile,
plus the margins' overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .features import receptive_field
from .losses import style_layer_scales, tv_loss


@dataclass(frozen=True)
class Tile:
    """Input region [y0, y1) x [x0, x1) (core plus margin) and its core [cy0, cy1) x [cx0, cx1)."""

    y0: int
    y1: int
    x0: int
    x1: int
    cy0: int
    cy1: int
    cx0: int
    cx1: int


def boundaries(n: int, core: int, offset: int) -> List[int]:
    """Cut points of [0, n) into cores of `core` px, the first cut at `offset`; slivers are merged."""
    offset %= core
    cuts = [0] + list(range(offset or core, n, core)) + [n]
    if len(cuts) > 2 and cuts[1] - cuts[0] < core // 2:
        del cuts[1]
    if len(cuts) > 2 and cuts[-1] - cuts[-2] < core // 2:
        del cuts[-2]
    return cuts


def tile_grid(height: int, width: int, core: int, margin: int, offset: Tuple[int, int] = (0, 0)) -> List[Tile]:
    """Overlapping tiles covering the image; cores partition it exactly."""
    tiles = []
    ys, xs = boundaries(height, core, offset[0]), boundaries(width, core, offset[1])
    for cy0, cy1 in zip(ys, ys[1:]):
        for cx0, cx1 in zip(xs, xs[1:]):
            tiles.append(Tile(max(0, cy0 - margin), min(height, cy1 + margin), max(0, cx0 - margin),
                              min(width, cx1 + margin), cy0, cy1, cx0, cx1))
    return tiles


def layer_stride(layer: str) -> int:
    return receptive_field(layer)[1]


def _core(feat: torch.Tensor, t: Tile, stride: int, height: int, width: int) -> torch.Tensor:
    """The part of a tile's feature map that belongs to its core (whole-image pooling alignment)."""
    fy0, fx0 = (t.cy0 - t.y0) // stride, (t.cx0 - t.x0) // stride
    fy1 = feat.shape[2] if t.cy1 == height else (t.cy1 - t.y0) // stride
    fx1 = feat.shape[3] if t.cx1 == width else (t.cx1 - t.x0) // stride
    return feat[:, :, fy0:fy1, fx0:fx1]


def _global_offset(t: Tile, stride: int) -> Tuple[int, int]:
    return t.cy0 // stride, t.cx0 // stride


def _gram_sum(f: torch.Tensor) -> torch.Tensor:
    """Unnormalised F F^T in float32 of (1, C, h, w) activations."""
    c = f.shape[1]
    v = f.float().permute(0, 2, 3, 1).reshape(-1, c)
    return v.t() @ v


@torch.no_grad()
def tiled_grams(painter, image: torch.Tensor, layers: Sequence[str], tiles: Sequence[Tile],
                keep: Sequence[str] = ()) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Global Gram matrices (normalised as losses.gram) of `layers`, and full feature maps of `keep`."""
    _, _, height, width = image.shape
    sums: Dict[str, torch.Tensor] = {}
    counts: Dict[str, int] = {n: 0 for n in layers}
    maps: Dict[str, torch.Tensor] = {}
    wanted = tuple(dict.fromkeys(tuple(layers) + tuple(keep)))
    for t in tiles:
        feats = painter.features(image[:, :, t.y0:t.y1, t.x0:t.x1], wanted)
        for n in layers:
            f = _core(feats[n], t, layer_stride(n), height, width)
            s = _gram_sum(f)
            sums[n] = sums[n] + s if n in sums else s
            counts[n] += f.shape[2] * f.shape[3]
        for n in keep:
            s = layer_stride(n)
            f = _core(feats[n], t, s, height, width).float()
            if n not in maps:
                maps[n] = torch.zeros(1, f.shape[1], height // s, width // s, device=image.device)
            gy, gx = _global_offset(t, s)
            maps[n][:, :, gy:gy + f.shape[2], gx:gx + f.shape[3]] = f
    grams = {n: sums[n] / (sums[n].shape[0] * counts[n]) for n in layers}
    return grams, maps


def tiled_loss_and_grad(painter, x: torch.Tensor, targets, cfg, tiles: Sequence[Tile]) -> Tuple[torch.Tensor, Dict[str, float], torch.Tensor]:
    """The whole image's loss (a 0-d tensor), its weighted terms and d loss / d x, tile by tile."""
    _, _, height, width = x.shape
    x = x.detach()
    layer_w = dict(zip(cfg.style_layers, cfg.style_layer_weights or (1.0,) * len(cfg.style_layers)))
    scale = style_layer_scales(targets.grams, cfg.style_layers, cfg.style_norm)
    # Pass 1: the global Gram matrices, and from them dL/dG (the loss is the mean of (G - T)^2).
    grams, _ = tiled_grams(painter, x, cfg.style_layers, tiles)
    style = torch.zeros((), device=x.device)
    dgram = {}
    counts = {}
    for n in cfg.style_layers:
        diff = grams[n] - targets.grams[n]
        w = cfg.style_weight_effective * layer_w[n] * scale[n]
        style = style + w * diff.pow(2).mean()
        dgram[n] = (2 * w / diff.numel()) * diff
        s = layer_stride(n)
        counts[n] = (height // s) * (width // s)
    # Pass 2: backpropagate the surrogate tile by tile, adding the input gradients.
    grad = torch.zeros_like(x, memory_format=torch.contiguous_format)  # L-BFGS views it flat
    content = torch.zeros((), device=x.device)
    layers = tuple(dict.fromkeys(cfg.content_layers + cfg.style_layers))
    for t in tiles:
        xt = x[:, :, t.y0:t.y1, t.x0:t.x1].clone().requires_grad_(True)
        feats = painter.features(xt, layers)
        surrogate = torch.zeros((), device=x.device)
        for n in cfg.style_layers:
            f = _core(feats[n], t, layer_stride(n), height, width)
            c = f.shape[1]
            surrogate = surrogate + (dgram[n] * _gram_sum(f)).sum() / (c * counts[n])
        for n in cfg.content_layers:
            s = layer_stride(n)
            f = _core(feats[n], t, s, height, width).float()
            gy, gx = _global_offset(t, s)
            tgt = targets.content[n][:, :, gy:gy + f.shape[2], gx:gx + f.shape[3]]
            term = (f - tgt).pow(2).sum() * (cfg.content_weight / targets.content[n].numel())
            surrogate = surrogate + term
            content = content + term.detach()
        surrogate.backward()
        grad[:, :, t.y0:t.y1, t.x0:t.x1] += xt.grad
    xv = x.clone().requires_grad_(True)
    tv = tv_loss(xv) * cfg.tv_weight
    tv.backward()
    grad += xv.grad
    total = content + style + tv.detach()
    return total, {"content": content.item(), "style": style.item(), "tv": tv.item()}, grad


def random_offset(generator: torch.Generator, core: int, align: int) -> Tuple[int, int]:
    """A new grid shift, a multiple of `align` in [0, core), for every evaluation."""
    steps = max(1, core // align)
    oy, ox = torch.randint(0, steps, (2,), generator=generator).tolist()
    return oy * align, ox * align


def grid_align(deepest: str) -> int:
    """Tile cores start on multiples of the deepest layer's stride (16 for relu5_1)."""
    return layer_stride(deepest)


def margin_for(margin: int, align: int) -> int:
    return -(-margin // align) * align


def full_receptive_margin(deepest: str) -> int:
    """A margin that covers the deepest layer's receptive field: tiles then equal the whole image."""
    size, stride = receptive_field(deepest)
    return margin_for(size // 2 + stride, stride)
