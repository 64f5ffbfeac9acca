"""VGG-19 as a fixed feature extractor with named layers.

Layers are named as in the paper (conv1_1 ... relu5_4, pool1 ... pool5; the table
is in layers.py and re-exported here). The network is built only as deep as
the deepest layer asked for, and its parameters never require gradients: only
the image is optimised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Iterable, Sequence

import torch
from torch import nn

from .layers import (  # noqa: F401  (re-exported: `from restyle.models.vgg import ...` is the public path)
    BLOCK_DEPTHS, CONV_LAYERS, FEATURE_LAYERS, LAYERS, VGG19, VGG19_LAYERS, VGG19_WIDTHS, Layer, deepest_layer,
    in_network_order, layer_shapes, layer_size, layer_stride, receptive_field,
)

if TYPE_CHECKING:
    from .weights import Weights

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """VGG-19 up to `deepest`; `forward(x, layers)` returns the named activations.

    `x` is RGB in 0-255 (see images.py), a batch (N, 3, H, W); preprocessing for
    the weights' training convention (Caffe BGR minus mean, or torchvision
    mean/std) happens here so that callers never think about it.
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
        self.names = VGG19_LAYERS[: LAYERS[deepest].index + 1]
        self.input_format = input_format
        layers = {}
        in_ch = 3
        for name in self.names:
            kind = LAYERS[name].kind
            if kind == "conv":
                out_ch = widths[LAYERS[name].block - 1]
                layers[name] = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)
                in_ch = out_ch
            elif kind == "relu":
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
    def from_weights(cls, weights: "Weights", deepest: str = "relu5_1", pooling: str = "max") -> "VGG19Features":
        # Widths come from the weights, so a tiny test network loads the same way as VGG-19.
        net = cls(deepest, widths=weights_widths(weights), pooling=pooling, input_format=weights.input_format)
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


def weights_widths(weights: "Weights") -> tuple:
    """Channels per block of a weights file (VGG-19's, or a tiny test network's)."""
    return tuple(weights.convs[f"conv{b}_1"][0].shape[0] for b in range(1, len(BLOCK_DEPTHS) + 1))
