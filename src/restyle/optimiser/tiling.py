"""Tiled rendering: the loss and gradient of the whole image, computed one tile at a time.

The Gram-matrix style loss is not a sum over tiles: each tile's Gram differs
from the image's. So each evaluation makes two passes over overlapping tiles:

  1. without gradients, every term that needs whole-image statistics gathers
     them from each tile's core (the tiles' cores partition the image): the
     Gram style term sums F F^T into the *global* Gram matrix G of each layer;
  2. with gradients, tile by tile, each term backpropagates a surrogate whose
     gradient with respect to the tile's features is exactly the full loss's
     gradient there (for the style term sum_l <dL/dG_l, F_core F_core^T / (C N_l)>,
     since G is linear in the sum of F F^T; for the content term its own squared
     error on the core); the tiles' input gradients are added into one image-sized
     gradient. Pixel terms (TV) are computed on the whole image, without the network.

How each term does this is the term's business (objective.py, `Term.tiled()`);
a term that cannot be tiled refuses with an error naming it.

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
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..models.layers import deepest_layer, in_network_order, layer_stride, receptive_field
from .losses import gram_product, positions
from .memory import TILE_MARGIN


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


@dataclass(frozen=True)
class TileSpec:
    """How a scale is tiled: core side and margin in px (part of every tiled target's cache key)."""

    core: int
    margin: int


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


class TileView:
    """One tile's feature maps, seen through its core (whole-image pooling alignment)."""

    def __init__(self, feats: Dict[str, torch.Tensor], tile: Tile, height: int, width: int) -> None:
        self.feats, self.tile, self.height, self.width = feats, tile, height, width

    def core(self, layer: str) -> torch.Tensor:
        """The part of the tile's `layer` map that belongs to its core."""
        t, s, feat = self.tile, layer_stride(layer), self.feats[layer]
        fy0, fx0 = (t.cy0 - t.y0) // s, (t.cx0 - t.x0) // s
        fy1 = feat.shape[2] if t.cy1 == self.height else (t.cy1 - t.y0) // s
        fx1 = feat.shape[3] if t.cx1 == self.width else (t.cx1 - t.x0) // s
        return feat[:, :, fy0:fy1, fx0:fx1]

    def offset(self, layer: str) -> Tuple[int, int]:
        """Where the core starts in the whole image's `layer` map."""
        s = layer_stride(layer)
        return self.tile.cy0 // s, self.tile.cx0 // s

    def region(self, full: torch.Tensor, layer: str) -> torch.Tensor:
        """The slice of a whole-image `layer` map (e.g. a content target) under this core."""
        core = self.core(layer)
        gy, gx = self.offset(layer)
        return full[:, :, gy:gy + core.shape[2], gx:gx + core.shape[3]]


def gram_sum(f: torch.Tensor) -> torch.Tensor:
    """Unnormalised F F^T in float32 of (N, C, h, w) activations -> (N, C, C)."""
    return gram_product(positions(f))


@torch.no_grad()
def tiled_grams(net: Any, image: torch.Tensor, layers: Sequence[str], tiles: Sequence[Tile],
                keep: Sequence[str] = (), masks: Optional[Dict[str, torch.Tensor]] = None,
                ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Global Gram matrices (N, C, C) (normalised as losses.gram) of `layers`, and full feature maps of `keep`.

    `masks`: for some layers' Gram matrices a weight per position at that layer's resolution
    (regions.layer_masks), as losses.gram's mask: sum_p m_p f_p f_p^T over the mass sum_p m_p
    (sqrt(m) on each factor).
    """
    n_img, _, height, width = image.shape
    sums: Dict[str, torch.Tensor] = {}
    counts: Dict[str, float] = {n: 0.0 for n in layers}
    maps: Dict[str, torch.Tensor] = {}
    weights = masks or {}
    for t in tiles:
        view = TileView(net.features(image[:, :, t.y0:t.y1, t.x0:t.x1], in_network_order(layers, keep)),
                        t, height, width)
        for n in layers:
            f = view.core(n)
            if n in weights:
                gy, gx = view.offset(n)
                m = weights[n][:, :, gy:gy + f.shape[2], gx:gx + f.shape[3]]
                s = gram_sum(f.float() * m.sqrt())
                counts[n] += float(m.sum())
            else:
                s = gram_sum(f)
                counts[n] += f.shape[2] * f.shape[3]
            sums[n] = sums[n] + s if n in sums else s
        for n in keep:
            f = view.core(n).float()
            if n not in maps:
                s = layer_stride(n)
                maps[n] = torch.zeros(n_img, f.shape[1], height // s, width // s, device=image.device)
            gy, gx = view.offset(n)
            maps[n][:, :, gy:gy + f.shape[2], gx:gx + f.shape[3]] = f
    grams = {n: sums[n] / (sums[n].shape[-1] * counts[n]) for n in layers}
    return grams, maps


def tiled_loss_and_grad(objective: Any, x: torch.Tensor, tiles: Sequence[Tile],
                        loss_scale: float = 1.0) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
    """The whole image's loss (a 0-d tensor), its terms (0-d tensors) and d loss / d x (fp32), tile by tile.

    Each term says how it is computed in tiles (`Term.tiled()`, which refuses for terms
    that cannot be); this function only walks the tiles and adds up. `loss_scale`
    multiplies each tile's surrogate before its backward pass and divides the network's
    gradient after (an fp16 network's gradients overflow otherwise: loop.LossScaler).
    """
    _, _, height, width = x.shape
    x = x.detach()
    net = objective.net
    plans = [(term.name, term.tiled()) for term in objective.terms]
    values: Dict[str, torch.Tensor] = {name: torch.zeros((), device=x.device) for name, _ in plans}
    # Pass 1: whole-image statistics (global Gram matrices), no gradients.
    gather = in_network_order(*(p.gather_layers for _, p in plans))
    if gather:
        with torch.no_grad():
            for t in tiles:
                view = TileView(net.features(x[:, :, t.y0:t.y1, t.x0:t.x1], gather), t, height, width)
                for _, p in plans:
                    p.gather(view)
    for name, p in plans:
        values[name] = values[name] + p.settle()
    # Pass 2: backpropagate each term's surrogate tile by tile, adding the input gradients.
    grad = torch.zeros_like(x, memory_format=torch.contiguous_format)  # L-BFGS views it flat
    layers = in_network_order(*(p.layers for _, p in plans))
    if layers:
        for t in tiles:
            xt = x[:, :, t.y0:t.y1, t.x0:t.x1].clone().requires_grad_(True)
            view = TileView(net.features(xt, layers), t, height, width)
            surrogate = torch.zeros((), device=x.device)
            for name, p in plans:
                s, v = p.surrogate(view)
                surrogate = surrogate + s
                values[name] = values[name] + v
            (surrogate * loss_scale if loss_scale != 1.0 else surrogate).backward()
            grad[:, :, t.y0:t.y1, t.x0:t.x1] += xt.grad
    if loss_scale != 1.0:
        grad /= loss_scale
    # Pixel terms on the whole image.
    xv = x.clone().requires_grad_(True)
    whole = [(name, p.whole(xv)) for name, p in plans]
    whole = [(name, v) for name, v in whole if v is not None]
    if whole:
        sum(v for _, v in whole).backward()
        grad += xv.grad
        for name, v in whole:
            values[name] = values[name] + v.detach()
    total = sum(values.values(), torch.zeros((), device=x.device))
    return total, {name: v.detach() for name, v in values.items()}, grad


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


def default_margin(layers: Sequence[str]) -> int:
    """TILE_MARGIN rounded up to the deepest layer's stride."""
    return margin_for(TILE_MARGIN, grid_align(deepest_layer(layers)))


def full_receptive_margin(deepest: str) -> int:
    """A margin that covers the deepest layer's receptive field: tiles then equal the whole image."""
    size, stride = receptive_field(deepest)
    return margin_for(size // 2 + stride, stride)


class TiledTerm:
    """How one term is computed tile by tile (objective.py's terms subclass it); the defaults do nothing.

    gather_layers / gather(view): pass 1, no gradients, whole-image statistics;
    settle(): after pass 1, the term's value from those statistics (0-d);
    layers / surrogate(view): pass 2, (surrogate to backpropagate, value to add), 0-d tensors;
    whole(x): a pixel term on the whole image, with gradients, or None.
    """

    gather_layers: Tuple[str, ...] = ()
    layers: Tuple[str, ...] = ()

    def gather(self, view: TileView) -> None:
        pass

    def settle(self) -> torch.Tensor:
        return torch.zeros(())

    def surrogate(self, view: TileView) -> Tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(()), torch.zeros(())

    def whole(self, x: torch.Tensor) -> Any:
        return None
