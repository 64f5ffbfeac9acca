"""The temporal term: hold a frame's reliable pixels to the previous result moved by the flow.

Ruder, Dosovitskiy & Brox (GCPR 2016), Eq. 7:
    L_temporal(x, w, c) = 1/D * sum_k c_k (x_k - w_k)^2
with w the previous stylized frame warped into this one, c the per-pixel reliability
(1 trusted, 0 occluded) and D = 3HW the number of values. Tensors are (N, 3, H, W)
in 0-255; c is (N, 1, H, W) and broadcast over the channels.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from ..optimiser.objective import Feats, Sources, Term, TiledPixels


def temporal_loss(x: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Ruder et al.'s Eq. 7, a batch mean, in float32 (or float64 for float64 inputs)."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    d = x.to(dtype) - warped.to(dtype)
    per_image = (mask.to(dtype) * d * d).flatten(1).sum(1) / x[0].numel()
    return per_image.mean()


def temporal_blend(out: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor, weight: float) -> torch.Tensor:
    """The network mode's frame: the minimiser of |y - out|^2 + weight * c * |y - warped|^2 per pixel.

    That is the temporal term of the optimiser mode solved in closed form, with the
    network's output standing in for the style objective: y = (out + W c w) / (1 + W c).
    weight 0 returns `out` (per-frame stylization).
    """
    wc = weight * mask
    return (out + wc * warped) / (1 + wc)


class TemporalTerm(Term):
    """weight * Eq. 7 on the pixels: one more term of the objective, reading no network layer.

    It is not built from a StylizeConfig (build() gives None): the video driver adds it
    for each frame after the first, with that frame's warped previous result and mask.
    """

    name = "temporal"
    option = "--temporal-weight"
    layers = ()

    def __init__(self, weight: float, warped: torch.Tensor, mask: torch.Tensor) -> None:
        super().__init__(weight)
        self.warped = warped
        self.mask = mask

    @classmethod
    def build(cls, cfg: Any, src: Sources) -> Optional[Term]:
        return None

    def loss(self, feats: Feats, x: torch.Tensor) -> torch.Tensor:
        return temporal_loss(x, self.warped, self.mask) * self.weight

    def tiled(self) -> TiledPixels:
        """A pixel term: a tiled frame (the memory planner's choice for a large one) computes it whole."""
        return TiledPixels(self)
