"""The losses of Gatys, Ecker & Bethge (CVPR 2016), as pure functions.

All of them compute in float32 whatever precision the network ran in: a
Gram matrix sums H*W products, which bf16's 8-bit mantissa cannot hold.

Normalisation (a departure from the paper's Eq. 4, which divides by
4 N^2 M^2): following jcjohnson/neural-style, a Gram matrix is divided by the
number of elements of the feature map (C*H*W) and the squared errors are
averaged (mean, not sum). The losses then no longer depend on the image size,
so one set of weights works at every scale of the pyramid, and the classic
tool's content 5 / style 100 weights keep their meaning.
"""

from __future__ import annotations

from typing import Optional

import torch


def gram(features: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Gram matrix G = F F^T / (C*H*W) of activations (1, C, H, W) -> (C, C), float32.

    G[i, j] is the mean over positions of the product of channels i and j:
    which features occur together, with the layout thrown away. With `mask`
    (1, 1, H, W) of weights in [0, 1], positions are weighted (guided Gram
    matrices, Gatys et al. 2017, Sec. 3) and the mean is over the mask's mass.
    """
    _, c, h, w = features.shape
    f = features.float().reshape(c, h * w)
    if mask is None:
        return (f @ f.t()) / (c * h * w)
    m = mask.float().reshape(1, h * w)
    mass = m.sum().clamp_min(1e-8)
    return ((f * m) @ f.t()) / (c * mass)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between activations (Eq. 1, averaged instead of halved sum)."""
    return (features.float() - target.float()).pow(2).mean()


def style_loss(gram_matrix: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between Gram matrices (Eq. 4 with our normalisation)."""
    return (gram_matrix - target).pow(2).mean()


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Total variation: half the sum of squared neighbour differences (jcjohnson's TVLoss).

    Summed rather than averaged, so its gradient per pixel (and so the meaning of
    --tv-weight) is the same at every image size.
    """
    x = image.float()
    dx = x[..., :, 1:] - x[..., :, :-1]
    dy = x[..., 1:, :] - x[..., :-1, :]
    return 0.5 * (dx.pow(2).sum() + dy.pow(2).sum())
