"""The losses of Gatys, Ecker & Bethge (CVPR 2016), as pure batch-first functions.

Every function takes a batch (N, C, H, W) and returns the mean over the batch,
so one image (N = 1) and a training mini-batch use the same code. All of them
compute in float32 whatever precision the network ran in, autocast or not: a
Gram matrix sums H*W products, which bf16's 8-bit mantissa cannot hold.

Normalisation (a departure from the paper's Eq. 4, which divides by
4 N^2 M^2): following jcjohnson/neural-style, a Gram matrix is divided by the
number of elements of the feature map (C*H*W) and the squared errors are
averaged (mean, not sum). The losses then no longer depend on the image size,
so one set of weights works at every scale of the pyramid, and the classic
tool's content 5 / style 100 weights keep their meaning.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..config import TARGET_DEEP_WEIGHTS
from ..models.layers import LAYERS

# Calibration of style_norm "target" (see style_layer_scales): the Gram mean square each
# layer's loss is brought to. With the default style weight 100 the unscaled loss weighs
# Starry Night's layers (relative error) 100 x mean(T^2) = 8e4 (relu1_1) ... 2e8 (relu4_1);
# 3e5 gives every layer 3e7, near their geometric mean. A first calibration, not yet
# measured at 512 px (benchmarks/quality.py --variants before,target,palette).
STYLE_NORM_REF = 3e5


def _fp32(t: torch.Tensor):
    """Autocast off for this device: matrix products stay float32 even inside a bf16 region."""
    return torch.autocast(device_type=t.device.type, enabled=False)


class _GramProduct(torch.autograd.Function):
    """F^T F in float32 for F (N, M, C) of any float dtype; its backward is one matrix product.

    Autograd of `f.float()` then `bmm(f^T, f)` keeps a float32 copy of F and computes
    dF = F dG^T + F dG as two products, a sum and a cast back to F's dtype. G is
    symmetric in F, so dF = F (dG + dG^T) is one product, done here in F's own dtype:
    under bf16 the gradient goes on into the network in bf16 anyway, and rounding the
    (C, C) dG to bf16 is below the network's own rounding (a 512 px bf16 image gradient
    moved by 0.2% of its norm). About 13% of a 512 px bf16 iteration saved on a CPU.
    """

    @staticmethod
    def forward(ctx: Any, f: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(f)
        f32 = f.float()
        return torch.bmm(f32.transpose(1, 2), f32)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (f,) = ctx.saved_tensors
        return torch.bmm(f, (grad + grad.transpose(1, 2)).to(f.dtype))


def gram_product(f: torch.Tensor) -> torch.Tensor:
    """Unnormalised F^T F (N, C, C) in float32 of F (N, M, C): M positions of C channels."""
    with _fp32(f):
        return _GramProduct.apply(f)


def positions(features: torch.Tensor) -> torch.Tensor:
    """Activations (N, C, H, W) as (N, H*W, C): the network's channels_last (NHWC) layout read as it
    lies, so no copy is made and a gradient reaches the ReLUs in their own layout (the (N, C, H*W)
    view made the backward ~0.2 s slower per 512 px iteration: mixed-layout sums in aten::add_)."""
    n, c, h, w = features.shape
    return features.permute(0, 2, 3, 1).reshape(n, h * w, c)


def gram(features: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Gram matrices G = F F^T / (C*H*W) of activations (N, C, H, W) -> (N, C, C), float32.

    G[n, i, j] is the mean over positions of the product of channels i and j in
    sample n: which features occur together, with the layout thrown away. With
    `mask` ((N or 1), 1, H, W) of weights in [0, 1], positions are weighted
    (guided Gram matrices, Gatys et al. 2017, Sec. 3) and the mean is over each
    sample's mask mass.
    """
    n, c, h, w = features.shape
    if mask is None:
        return gram_product(positions(features)) / (c * h * w)
    with _fp32(features):
        f = features.float().reshape(n, c, h * w)
        m = mask.float().reshape(mask.shape[0], 1, h * w)
        mass = m.sum(dim=2, keepdim=True).clamp_min(1e-8)
        return torch.bmm(f * m, f.transpose(1, 2)) / (c * mass)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between activations (Eq. 1, averaged instead of halved sum); batch mean.

    F.mse_loss: its backward is one fused kernel, where `(a - b).pow(2).mean()` takes four
    passes over the (large) feature map.
    """
    return _mse(features, target)


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mean((a - b)^2) in float32, `b` broadcast to `a`'s batch; F.mse_loss's backward is one fused pass."""
    a, b = torch.broadcast_tensors(a.float(), b.float())
    with _fp32(a):
        return F.mse_loss(a, b)


def style_loss(gram_matrix: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between Gram matrices (Eq. 4 with our normalisation); batch mean.

    `target` is (C, C), (1, C, C) or (N, C, C): one style for the batch, or one per sample.
    """
    return _mse(gram_matrix, target)




def default_layer_weights(layers: Sequence[str], norm: str) -> Tuple[float, ...]:
    """w_l when none are given: 1 per layer, except the deep blocks of TARGET_DEEP_WEIGHTS under "target".

    (config.TARGET_DEEP_WEIGHTS says why.)
    """
    if norm != "target":
        return (1.0,) * len(layers)
    return tuple(TARGET_DEEP_WEIGHTS.get(LAYERS[n].block, 1.0) for n in layers)


def effective_layer_shares(targets: Mapping[str, torch.Tensor], layers: Sequence[str],
                           weights: Sequence[float], norm: str) -> Dict[str, float]:
    """Each layer's share of the style loss's weight on a unit relative error: w_l k_l mean(T_l^2) / sum.

    With "target" k_l mean(T_l^2) is the same for every layer, so the shares are the w_l alone,
    whatever the painting's Gram magnitudes; with "none" they follow the magnitudes.
    """
    k = style_layer_scales(targets, layers, norm)
    raw = {n: w * k[n] * float(targets[n].float().pow(2).mean()) for n, w in zip(layers, weights)}
    total = sum(raw.values())
    return {n: v / total for n, v in raw.items()}


def style_layer_scales(targets: Mapping[str, torch.Tensor], layers: Sequence[str], norm: str) -> Dict[str, float]:
    """Per-layer multipliers of the style loss for `norm` ("target" or "none").

    A departure from Gatys et al. and jcjohnson: with "target" each layer's squared
    Gram error is divided by its target's mean square (times STYLE_NORM_REF), i.e. the
    loss is a *relative* error. Unscaled, a painting's Gram magnitudes span four orders
    across layers (relu4_1 ~1e6, relu1_1 ~1e2-1e3 for Starry Night) and differ ~8x
    between paintings, so relu1_1, which carries the palette, hardly counted and a
    painting with small Gram matrices (Seated Nude, The Scream) got a weaker push.
    """
    if norm == "none":
        return {n: 1.0 for n in layers}
    return {n: STYLE_NORM_REF / max(float(targets[n].float().pow(2).mean()), 1e-12) for n in layers}


class _TotalVariation(torch.autograd.Function):
    """0.5 * sum of squared neighbour differences / N, with its gradient written out.

    Autograd of the slices and squares takes ~15 passes over the image (zero-filled
    slice gradients, pow's backward); dTV/dx = (left difference - right difference)
    along each axis takes five.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        dx = x[..., :, 1:] - x[..., :, :-1]
        dy = x[..., 1:, :] - x[..., :-1, :]
        ctx.save_for_backward(dx, dy)
        return 0.5 * (torch.linalg.vecdot(dx.flatten(), dx.flatten()) + torch.linalg.vecdot(dy.flatten(), dy.flatten())) / x.shape[0]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        dx, dy = ctx.saved_tensors
        g = F.pad(dx, (1, 0)) - F.pad(dx, (0, 1))
        g += F.pad(dy, (0, 0, 1, 0)) - F.pad(dy, (0, 0, 0, 1))
        return g.mul_(grad / dx.shape[0])


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Total variation: half the sum of squared neighbour differences (jcjohnson's TVLoss), batch mean.

    Summed over each image rather than averaged, so its gradient per pixel (and so the
    meaning of --tv-weight) is the same at every image size.
    """
    x = image.float()
    with _fp32(x):
        return _TotalVariation.apply(x)


def wrap_tv_loss(image: torch.Tensor) -> torch.Tensor:
    """The TV differences across a torus's seams (last column to first, last row to first), batch mean."""
    x = image.float()
    return 0.5 * ((x[..., :, :1] - x[..., :, -1:]).pow(2).sum()
                  + (x[..., :1, :] - x[..., -1:, :]).pow(2).sum()) / x.shape[0]
