"""Every knob of restyle, with its default, in one frozen dataclass.

The CLI flags (and the web form) are built from `StylizeConfig`'s fields, so
defaults and help texts live here and nowhere else. Standard library only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Optional, Tuple

from .errors import InputError

# VGG-19 (Simonyan & Zisserman 2014, configuration E) layer names, in order.
BLOCK_DEPTHS = (2, 2, 4, 4, 4)
VGG19_LAYERS: Tuple[str, ...] = tuple(
    name
    for block, depth in enumerate(BLOCK_DEPTHS, start=1)
    for name in (
        [f"{kind}{block}_{i}" for i in range(1, depth + 1) for kind in ("conv", "relu")]
        + [f"pool{block}"]
    )
)

INIT_CHOICES = ("content", "noise", "blur")  # or a path to an image
OPTIMIZERS = ("lbfgs", "adam")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
POOLINGS = ("max", "avg")

MIN_SIZE = 32  # five 2x2 poolings need at least 32 px on the short side
MAX_SIZE = 8192
MIN_TILE_SIZE = 64  # a tile's core; smaller ones are nearly all margin
# Decoded-pixel cap for input images (decompression bombs): 24k x 24k is 576 MP.
MAX_INPUT_PIXELS = 24_000 * 24_000


def _help(text: str, **extra: Any) -> dict:
    return {"help": text, **extra}


@dataclass(frozen=True)
class StylizeConfig:
    """Settings of one style-transfer run. Validated on construction."""

    size: int = field(default=512, metadata=_help("long side of the output in pixels; aspect ratio kept"))
    # 150 at 256 px then 38 at 512 px: tuned by eye on tubingen x starry night (the
    # fine scale starts from an upsampled, already-styled image and needs few steps).
    iterations: int = field(
        default=150,
        metadata=_help("iterations at the first (coarsest) scale; each finer scale runs fewer"),
    )
    scales: Optional[Tuple[int, ...]] = field(
        default=None,
        metadata=_help(
            "long sides of the coarse-to-fine pyramid, e.g. 256,512; a single number N "
            "means N scales; default: halve from --size down to about 256 px"
        ),
    )
    content_layers: Tuple[str, ...] = field(
        default=("relu4_2",), metadata=_help("layers whose activations carry the content")
    )
    style_layers: Tuple[str, ...] = field(
        default=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        metadata=_help("layers whose Gram matrices carry the style"),
    )
    style_layer_weights: Optional[Tuple[float, ...]] = field(
        default=None, metadata=_help("one weight per style layer (default: all equal)")
    )
    # Loss weights are for the normalisation in losses.py (which follows
    # jcjohnson/neural-style, so its well-known 5/100 ratio carries over); they
    # were tuned by eye on tubingen x starry night at 512 px.
    content_weight: float = field(default=5.0, metadata=_help("alpha: weight of the content loss"))
    style_weight: float = field(default=100.0, metadata=_help("beta: weight of the style loss"))
    tv_weight: float = field(default=1e-3, metadata=_help("weight of the total-variation smoothing term"))
    style_blend_weights: Optional[Tuple[float, ...]] = field(
        default=None, metadata=_help("one weight per style image, normalised to sum 1 (default: equal)")
    )
    style_scale: float = field(
        default=1.0, metadata=_help("style image size relative to the output size")
    )
    init: str = field(
        default="content",
        metadata=_help("start image: content, noise, blur (Gaussian-blurred content) or a path"),
    )
    seed: int = field(default=0, metadata=_help("random seed; same seed and settings give the same image on CPU"))
    optimizer: str = field(default="lbfgs", metadata=_help("optimiser of the pixels", choices=OPTIMIZERS))
    lr: Optional[float] = field(
        default=None, metadata=_help("learning rate (default: 1 for lbfgs, 2.0 for adam on 0-255 pixels)")
    )
    pooling: str = field(default="max", metadata=_help("VGG-19 pooling (the paper prefers avg)", choices=POOLINGS))
    device: str = field(default="auto", metadata=_help("where to compute", choices=DEVICES))
    precision: str = field(
        default="auto",
        metadata=_help("network precision; auto = bf16 where the hardware has it, else fp32", choices=PRECISIONS),
    )
    # Speed and scale (issue 4): see memory.py and tiling.py.
    tile_size: Optional[int] = field(
        default=None,
        metadata=_help(
            "render in overlapping tiles of this many px (core side) at scales larger than it; "
            "0 never tiles; default: tile only where the memory planner says the whole image does not fit"
        ),
    )
    max_memory: Optional[float] = field(
        default=None,
        metadata=_help("memory budget in GB for the planner; default: 0.85 of the memory available at start"),
    )
    max_input_pixels: int = field(
        default=MAX_INPUT_PIXELS, metadata=_help("refuse input images with more decoded pixels", cli=False)
    )

    def __post_init__(self) -> None:
        self.validate()

    def replace(self, **changes: Any) -> "StylizeConfig":
        return replace(self, **changes)

    def validate(self) -> None:
        """Check every value once, here at the boundary; say the value and the rule."""
        _int_range("size", self.size, MIN_SIZE, MAX_SIZE)
        _int_range("iterations", self.iterations, 1, 100_000)
        if self.scales is not None:
            if not self.scales:
                raise InputError("scales must not be empty")
            for s in self.scales:
                _int_range("scales", s, 1, MAX_SIZE)
        for name in ("content_layers", "style_layers"):
            layers = getattr(self, name)
            if not layers:
                raise InputError(f"{name} must name at least one layer")
            for layer in layers:
                if layer not in VGG19_LAYERS:
                    raise InputError(
                        f"unknown layer {layer!r} in {name}; choose from {', '.join(VGG19_LAYERS)}"
                    )
        if self.style_layer_weights is not None and len(self.style_layer_weights) != len(self.style_layers):
            raise InputError(
                f"style_layer_weights has {len(self.style_layer_weights)} values but style_layers "
                f"has {len(self.style_layers)} layers; give one weight per layer"
            )
        for name in ("content_weight", "style_weight", "tv_weight"):
            _non_negative(name, getattr(self, name))
        for name in ("style_layer_weights", "style_blend_weights"):
            for w in getattr(self, name) or ():
                _non_negative(name, w)
        if self.style_blend_weights is not None and sum(self.style_blend_weights) <= 0:
            raise InputError(f"style_blend_weights {self.style_blend_weights} must not sum to 0")
        if not (0.05 <= self.style_scale <= 8) or not math.isfinite(self.style_scale):
            raise InputError(f"style_scale {self.style_scale} is out of range; it must be in [0.05, 8]")
        if self.init not in INIT_CHOICES and not Path(self.init).is_file():
            raise InputError(
                f"init {self.init!r} is neither one of {', '.join(INIT_CHOICES)} nor an existing image file"
            )
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("pooling", self.pooling, POOLINGS)
        _choice("device", self.device, DEVICES)
        _choice("precision", self.precision, PRECISIONS)
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"lr {self.lr} must be a positive number")
        _int_range("seed", self.seed, 0, 2**63 - 1)
        if self.tile_size is not None and self.tile_size != 0:
            _int_range("tile_size", self.tile_size, MIN_TILE_SIZE, MAX_SIZE)
        if self.max_memory is not None and not (self.max_memory > 0 and math.isfinite(self.max_memory)):
            raise InputError(f"max_memory {self.max_memory} must be a positive number of GB")

    @property
    def lr_or_default(self) -> float:
        return self.lr if self.lr is not None else (1.0 if self.optimizer == "lbfgs" else 2.0)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _int_range(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InputError(f"{name} {value!r} is out of range; it must be an integer in [{lo}, {hi}]")


def _non_negative(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise InputError(f"{name} {value!r} must be a finite number >= 0")


def _choice(name: str, value: str, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{name} {value!r} is not one of {', '.join(choices)}")
