"""VGG-19's layer table: the one home of layer names, widths, strides and receptive fields.

Pure Python (no torch), so config.py can validate layer names and memory.py can
size activations without building a network. VGG-19 is Simonyan & Zisserman
(2014), configuration E: five blocks of 3x3 convolutions (padding 1), each
followed by a ReLU, the blocks separated by 2x2 poolings of stride 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Sequence, Tuple

BLOCK_DEPTHS = (2, 2, 4, 4, 4)  # convolutions per block
VGG19_WIDTHS = (64, 128, 256, 512, 512)  # channels per block


@dataclass(frozen=True)
class Layer:
    """One named layer: its kind, block, channels (VGG-19's widths), stride and receptive field in input px."""

    name: str
    kind: str  # "conv", "relu" or "pool"
    block: int  # 1..5
    index: int  # position in the network
    channels: int
    stride: int  # input px per unit (2 ** poolings up to here)
    receptive_field: int  # side in input px of what one unit sees


def _table() -> Tuple[Layer, ...]:
    rows: List[Layer] = []
    size, stride = 1, 1
    for block, depth in enumerate(BLOCK_DEPTHS, start=1):
        width = VGG19_WIDTHS[block - 1]
        for i in range(1, depth + 1):
            size += 2 * stride  # a 3x3 convolution widens the field by one unit on each side
            for kind in ("conv", "relu"):
                rows.append(Layer(f"{kind}{block}_{i}", kind, block, len(rows), width, stride, size))
        size += stride  # a 2x2 pooling adds one unit, then the stride doubles
        stride *= 2
        rows.append(Layer(f"pool{block}", "pool", block, len(rows), width, stride, size))
    return tuple(rows)


VGG19: Tuple[Layer, ...] = _table()
LAYERS: Dict[str, Layer] = {layer.name: layer for layer in VGG19}
VGG19_LAYERS: Tuple[str, ...] = tuple(layer.name for layer in VGG19)
CONV_LAYERS: Tuple[str, ...] = tuple(layer.name for layer in VGG19 if layer.kind == "conv")
# Layers with feature channels of their own (pooling outputs repeat the block's last ReLU).
FEATURE_LAYERS: Tuple[str, ...] = tuple(layer.name for layer in VGG19 if layer.kind != "pool")


def deepest_layer(*layer_lists: Iterable[str]) -> str:
    """The deepest of the named layers (the network is built up to it)."""
    return max((name for layers in layer_lists for name in layers), key=lambda n: LAYERS[n].index)


def in_network_order(*layer_lists: Iterable[str]) -> Tuple[str, ...]:
    """The union of layer lists, each name once, shallowest first."""
    return tuple(sorted({n for layers in layer_lists for n in layers}, key=lambda n: LAYERS[n].index))


def receptive_field(layer: str) -> Tuple[int, int]:
    """(size, stride) in input pixels of one unit of `layer`."""
    info = LAYERS[layer]
    return info.receptive_field, info.stride


def layer_stride(layer: str) -> int:
    return LAYERS[layer].stride


def layer_size(layer: str, height: int, width: int) -> Tuple[int, int]:
    """(H, W) of `layer`'s activations for an input of height x width (each 2x2 pool floors)."""
    info = LAYERS[layer]
    pools = sum(1 for layer in VGG19[: info.index + 1] if layer.kind == "pool")
    return height >> pools, width >> pools


def layer_shapes(width: int, height: int, deepest: str,
                 widths: Sequence[int] = VGG19_WIDTHS) -> List[Tuple[str, int, int, int]]:
    """(name, channels, h, w) of every layer up to `deepest`, with `widths` channels per block."""
    out = []
    for layer in VGG19[: LAYERS[deepest].index + 1]:
        h, w = layer_size(layer.name, height, width)
        out.append((layer.name, widths[layer.block - 1], h, w))
    return out
