"""The feed-forward style network (Johnson, Alahi & Fei-Fei, ECCV 2016), slimmed down.

One pass maps a photo to a painting. The shape follows Johnson et al.'s
supplementary material with the later fixes everyone adopted:

- instance normalisation instead of batch normalisation (Ulyanov, Vedaldi &
  Lempitsky 2016, "Instance Normalization: The Missing Ingredient"): the
  contrast of each picture is normalised away, which is most of the gain;
- reflection padding, so the borders carry no dark frame;
- upsampling by nearest-neighbour resize then a convolution instead of a
  transposed convolution (Odena, Dumoulin & Olah 2016, "Deconvolution and
  Checkerboard Artifacts"), so there is no checkerboard.

Width and depth are arguments (`TransformerConfig`); the bundled models use
a narrower, shallower network than Johnson's (32-64-128, five residual blocks),
chosen by measurement in benchmarks/feedforward.py: one pass at 512 px must
stay under 100 ms on a 2-core CPU.

Images go in and come out as RGB float 0-255, (N, 3, H, W), like everywhere
else in restyle. Any H and W work: the input is reflection-padded up to a
multiple of the total stride and the output cropped back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .transformer_config import TransformerConfig  # noqa: F401  (torch-free, so the CLI can build its flags)


class ConvLayer(nn.Sequential):
    """Reflection pad, convolution, then (optionally) instance norm and ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, *, norm: bool = True, relu: bool = True):
        layers = [nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride)]
        if norm:
            layers.append(nn.InstanceNorm2d(cout, affine=True))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a skip (He et al. 2016); no ReLU after the sum (Gross & Wilber)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(ConvLayer(channels, channels, 3), ConvLayer(channels, channels, 3, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpsampleConv(nn.Module):
    """Nearest-neighbour 2x resize, then a convolution: no checkerboard (Odena et al. 2016)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = ConvLayer(cin, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class TransformerNet(nn.Module):
    """Photo (N, 3, H, W) RGB 0-255 -> painting, same shape, RGB 0-255 (unclamped)."""

    def __init__(self, config: TransformerConfig = TransformerConfig()):
        super().__init__()
        self.config = config
        w, k = config.widths, config.stem_kernel
        down = [ConvLayer(3, w[0], k)]
        down += [ConvLayer(a, b, 3, stride=2) for a, b in zip(w, w[1:])]
        self.down = nn.Sequential(*down)
        self.res = nn.Sequential(*[ResidualBlock(w[-1]) for _ in range(config.res_blocks)])
        rev = w[::-1]
        self.up = nn.Sequential(*[UpsampleConv(a, b) for a, b in zip(rev, rev[1:])])
        self.head = ConvLayer(w[0], 3, k, norm=False, relu=False)
        if config.residual:
            with torch.no_grad():  # start close to the identity
                self.head[1].weight.mul_(0.1)
                self.head[1].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = self.config.stride
        ph, pw = (-h) % s, (-w) % s
        # Scale to about [-1, 1]; reflection padding to a multiple of the stride so
        # that the upsampled map lines up with the input, then crop back.
        y = x / 127.5 - 1.0
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            y = F.pad(y, (0, pw, 0, ph), mode="reflect")  # traced: the amounts stay symbolic
        elif ph or pw:
            y = F.pad(y, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        y = self.head(self.up(self.res(self.down(y))))
        if self.config.residual:
            return x + y[..., :h, :w] * 127.5
        return (y[..., :h, :w] + 1.0) * 127.5
