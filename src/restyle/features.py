"""VGG-19 as a fixed feature extractor with named layers.

Layers are named as in the paper (conv1_1 ... relu5_4, pool1 ... pool5). The
network is built only as deep as the deepest layer asked for, and its
parameters never require gradients: only the image is optimised.
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Tuple

import torch
from torch import nn

from .config import BLOCK_DEPTHS, VGG19_LAYERS
from .weights import Weights

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG19_WIDTHS = (64, 128, 256, 512, 512)


class VGG19Features(nn.Module):
    """VGG-19 up to `deepest`; `forward(x, layers)` returns the named activations.

    `x` is RGB in 0-255 (see images.py); preprocessing for the weights'
    training convention (Caffe BGR minus mean, or torchvision mean/std)
    happens here so that callers never think about it.
    """

    def __init__(
        self,
        deepest: str = "relu5_1",
        *,
        widths: Sequence[int] = VGG19_WIDTHS,
        pooling: str = "max",
        input_format: str = "caffe",
    ) -> None:
        super().__init__()
        self.names = VGG19_LAYERS[: VGG19_LAYERS.index(deepest) + 1]
        self.input_format = input_format
        layers = {}
        in_ch, convs = 3, iter([w for w, d in zip(widths, BLOCK_DEPTHS) for _ in range(d)])
        for name in self.names:
            if name.startswith("conv"):
                out_ch = next(convs)
                layers[name] = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
                in_ch = out_ch
            elif name.startswith("relu"):
                # Not in place: the pre-activation conv output may be a requested layer.
                layers[name] = nn.ReLU()
            else:
                layers[name] = nn.MaxPool2d(2, 2) if pooling == "max" else nn.AvgPool2d(2, 2)
        self.layers = nn.ModuleDict(layers)
        if input_format == "caffe":
            self.register_buffer("mean", torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1))
            self.register_buffer("std", torch.ones(1, 3, 1, 1))
        else:
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_weights(cls, weights: Weights, deepest: str = "relu5_1", pooling: str = "max") -> "VGG19Features":
        # Widths come from the weights, so a tiny test network loads the same way as VGG-19.
        widths = tuple(weights.convs[f"conv{b}_1"][0].shape[0] for b in range(1, 6))
        net = cls(deepest, widths=widths, pooling=pooling, input_format=weights.input_format)
        with torch.no_grad():
            for name, module in net.layers.items():
                if isinstance(module, nn.Conv2d):
                    w, b = weights.convs[name]
                    module.weight.copy_(w)
                    module.bias.copy_(b)
        return net

    def preprocess(self, rgb255: torch.Tensor) -> torch.Tensor:
        x = rgb255.flip(1) if self.input_format == "caffe" else rgb255
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor, layers: Iterable[str]) -> Dict[str, torch.Tensor]:
        wanted = set(layers)
        unknown = wanted - set(self.names)
        if unknown:
            raise KeyError(f"layers {sorted(unknown)} are not in this network (deepest is {self.names[-1]})")
        last = max(self.names.index(name) for name in wanted)
        out = {}
        x = self.preprocess(x)
        for name in self.names[: last + 1]:
            x = self.layers[name](x)
            if name in wanted:
                out[name] = x
        return out


def deepest_layer(*layer_lists: Iterable[str]) -> str:
    return max((name for layers in layer_lists for name in layers), key=VGG19_LAYERS.index)


def receptive_field(layer: str) -> Tuple[int, int]:
    """(size, stride) in input pixels of one unit of `layer` (3x3 convs, 2x2 pools)."""
    size, stride = 1, 1
    for name in VGG19_LAYERS[: VGG19_LAYERS.index(layer) + 1]:
        if name.startswith("conv"):
            size += 2 * stride
        elif name.startswith("pool"):
            size += stride
            stride *= 2
    return size, stride
