"""Settings of `restyle explain`'s report, with their defaults (standard library only)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Tuple

from ..errors import InputError
from .stylize import (
    FEATURE_LAYERS, POOLINGS, PRECISIONS, _choice, _help, _int_range, _non_negative, coerce_fields, valid_device,
)


@dataclass(frozen=True)
class ExplainConfig:
    """Settings of one report. `ExplainConfig.quick()` is the small, fast preset."""

    size: int = field(default=256, metadata=_help("long side of every synthesised image in pixels"))
    content_layers: Tuple[str, ...] = field(
        default=("relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2"),
        metadata=_help("layers to reconstruct the content image from, one at a time (paper: conv1_2 ... conv5_2)"),
    )
    style_layers: Tuple[str, ...] = field(
        default=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        metadata=_help("style layers; texture k uses the first k of them (paper: conv1_1 ... conv5_1)"),
    )
    # Deep layers need many iterations from noise before their reconstruction
    # shows anything; the coarse-to-fine pyramid (half size first) makes them affordable.
    content_iterations: int = field(
        default=200, metadata=_help("iterations of each content reconstruction at the coarse scale")
    )
    style_iterations: int = field(
        default=150, metadata=_help("iterations of each style reconstruction at the coarse scale")
    )
    tradeoff_iterations: int = field(
        default=100, metadata=_help("iterations of each result of the trade-off grid at the coarse scale")
    )
    scales: int = field(default=2, metadata=_help("scales of the coarse-to-fine pyramid (1: full size only)"))
    # alpha/beta with restyle's loss normalisation (losses.py), not the paper's:
    # the classic unscaled-loss settings (5/100, the gatys2016 preset) sit at 5e-2.
    ratios: Tuple[float, ...] = field(
        default=(5.0, 5e-1, 5e-2, 5e-3),
        metadata=_help("content/style weight ratios alpha/beta of the trade-off grid"),
    )
    tradeoff_layers: Tuple[str, ...] = field(
        default=("relu2_2", "relu4_2"),
        metadata=_help("content layers compared in the trade-off grid (paper Fig. 3: conv2_2, conv4_2)"),
    )
    unit_layers: Tuple[str, ...] = field(
        default=("relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2"),
        metadata=_help("one layer per block whose units are shown"),
    )
    units: int = field(default=4, metadata=_help("units shown per layer"))
    patch_size: int = field(
        default=384, metadata=_help("long side at which images are searched for the patches that excite a unit")
    )
    max_images: int = field(default=40, metadata=_help("use at most this many images from --images DIR"))
    # Content reconstructions divide the content loss by the target's mean square (a
    # relative error), so this one weight holds at every depth; 1e5 keeps conv1_2 photographic.
    content_weight: float = field(
        default=1e5, metadata=_help("weight of the relative content loss of the content reconstructions")
    )
    style_weight: float = field(default=100.0, metadata=_help("beta: weight of the style loss"))
    # Content reconstructions multiply it by the layer's stride (1 to 16): a deep unit does
    # not constrain detail finer than its stride, and a little smoothing fills that in
    # with flat colour instead of noise.
    tv_weight: float = field(default=1e-4, metadata=_help("total-variation smoothing of every synthesis"))
    # The paper synthesises with average pooling ("improves the gradient flow").
    pooling: str = field(default="avg", metadata=_help("VGG-19 pooling for syntheses", choices=POOLINGS))
    seed: int = field(default=0, metadata=_help("seed of the noise every synthesis starts from"))
    device: str = field(default="auto", metadata=_help("where to compute: auto, cpu, cuda, cuda:N or mps"))
    # fp32, not auto: syntheses from noise need exact gradients, and on our bf16-capable
    # CPU fp32 also ran faster and steadier for these small images.
    precision: str = field(default="fp32", metadata=_help("network precision", choices=PRECISIONS))

    def __post_init__(self) -> None:
        coerce_fields(self)
        self.validate()

    @classmethod
    def quick(cls, **changes: Any) -> "ExplainConfig":
        """Small and fast (under a minute on two CPU cores): 128 px, fewer iterations and units."""
        base = dict(
            # 65 s with 100/100/60 iterations on a quiet 2-core CPU; these counts bring it under a minute.
            size=128, content_iterations=80, style_iterations=80, tradeoff_iterations=40, scales=2,
            ratios=(5e-1, 5e-2, 5e-3), units=3, patch_size=256,
        )
        return cls(**{**base, **changes})

    def replace(self, **changes: Any) -> "ExplainConfig":
        return replace(self, **changes)

    def validate(self) -> None:
        _int_range("size", self.size, 64, 1024)
        for name in ("content_iterations", "style_iterations", "tradeoff_iterations"):
            _int_range(name, getattr(self, name), 1, 10_000)
        _int_range("scales", self.scales, 1, 4)
        _int_range("units", self.units, 1, 16)
        _int_range("patch_size", self.patch_size, 64, 2048)
        _int_range("max_images", self.max_images, 0, 1000)
        _int_range("seed", self.seed, 0, 2**63 - 1)
        for name in ("content_layers", "style_layers", "tradeoff_layers", "unit_layers"):
            layers = getattr(self, name)
            if not layers:
                raise InputError(f"{name} must name at least one layer")
            for layer in layers:
                if layer not in FEATURE_LAYERS:
                    raise InputError(f"unknown layer {layer!r} in {name}; choose from {', '.join(FEATURE_LAYERS)}")
        if not self.ratios:
            raise InputError("ratios must name at least one alpha/beta ratio")
        for r in self.ratios:
            if not (isinstance(r, (int, float)) and math.isfinite(r) and r > 0):
                raise InputError(f"ratio {r!r} must be a finite number > 0")
        for name in ("content_weight", "style_weight", "tv_weight"):
            _non_negative(name, getattr(self, name))
        _choice("pooling", self.pooling, POOLINGS)
        valid_device(self.device)
        _choice("precision", self.precision, PRECISIONS)
        if self.size // 2 ** (self.scales - 1) < 64:
            raise InputError(
                f"scales {self.scales} at size {self.size}: the coarsest scale would be "
                f"{self.size // 2 ** (self.scales - 1)} px; it must be at least 64 px"
            )

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
