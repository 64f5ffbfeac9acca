"""Every knob of restyle, with its default, in one frozen dataclass.

The CLI flags (and the web form) are built from `StylizeConfig`'s fields, so
defaults and help texts live here and nowhere else. Standard library only (plus the
pure layer table, models/layers.py).
"""

from __future__ import annotations

import math
import numbers
import os
import re
import typing
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..errors import InputError

from ..models.layers import BLOCK_DEPTHS, FEATURE_LAYERS, VGG19_LAYERS  # noqa: F401  (re-exported)

INIT_CHOICES = ("content", "noise", "blur", "palette")  # or a path to an image
OPTIMIZERS = ("lbfgs", "adam")
DEVICES = ("auto", "cpu", "cuda", "mps")  # and "cuda:N", one GPU of several (see valid_device)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
POOLINGS = ("max", "avg")
# How each style layer's loss is scaled (losses.py, style_layer_scales): "target" divides it
# by its target Gram matrix's mean square, so one weight means the same push on every
# painting and every layer; "none" is jcjohnson/neural-style's unscaled loss.
STYLE_NORMS = ("target", "none")
# What the painting's faces are to the style (optimiser/faces.py): "mask" keeps them out of the
# deep layers' Gram matrices (blocks 4-5), "keep" counts the whole painting at every layer.
STYLE_FACES = ("mask", "keep")
# Issue 25: the default weight w_l of each style layer under style_norm "target", by VGG block
# (blocks not named weigh 1; losses.default_layer_weights). relu5_1's Gram matrices are the
# smallest of all (mean square ~20-270 against ~2e5-2e6 at relu4_1: its activations are sparse),
# so the relative error multiplies its error the most: weighted 1 like the others, it pushed the
# pixels 3-8x harder than relu4_1 at the start of a run (four public pairs, two portraits, 256 px).
# Its units see ~200 px and answer to object parts, and that push synthesised the painting's
# objects: Lady in Blue's face in Tübingen's sky at 1, on the church tower still at 0.3 and 0.1;
# none at 0.03 (512 px, looked at). At 0.03 a face was left in 2 of 16 portraits (from 15 of 16 at
# 1; dark self-portraits; 0.01 cleared one of them) and the large structures relu5_1 painted (The
# Starry Night's swirls) are gone: closer to the photo, further from the painting on the four
# public pairs (benchmarks/QUALITY.md, PORTRAITS.md). The classic unscaled loss ("none", the
# paper's) keeps equal weights: there relu5_1's tiny Gram matrices weigh ~1e-4 of relu4_1's.
# The faces left at 0.03 (Rembrandt's and Delacroix's) are gone with the sitter's head kept out
# of blocks 4-5 (style_faces "mask"); with that mask but relu5_1 back at 1, a face came back
# from Raphael's unicorn lady (the rest of the painting still holds face parts): both stay.
TARGET_DEEP_WEIGHTS = {5: 0.03}
# Colour control (Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style
# Transfer", Sec. 5): keep the style's colours, optimise luminance only, or recolour
# the style image to the content's colour statistics first. See color.py.
PRESERVE_COLORS = ("none", "luminance", "histogram")

# Named sets of config values; `--preset NAME` (or StylizeConfig.from_preset) applies
# one and explicit values override it. This dict is their only home.
PRESETS: Dict[str, Dict[str, Any]] = {
    # Gatys, Ecker & Bethge (CVPR 2016), Sec. 2-3: content at conv4_2, style at
    # conv1_1, conv2_1, conv3_1, conv4_1, conv5_1 with equal weights w_l = 1/5,
    # average pooling ("improves the gradient flow and gives slightly more
    # appealing results"), white-noise start, L-BFGS, one scale, no TV term.
    # The paper's "convX_Y" responses are the rectified ones (Caffe's ReLU runs in
    # place on the conv blob), which we call reluX_Y. Its alpha/beta ratios
    # (1e-3 .. 1e-4) belong to its un-normalised loss (Eq. 4 divides by 4N^2M^2,
    # Eq. 1 sums); ours is normalised (losses.py), where 5/100 plays that role.
    # 500 iterations because a noise start needs many (no number is given in the paper).
    "gatys2016": {
        "content_layers": ("relu4_2",),
        "style_layers": ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        "style_layer_weights": (0.2, 0.2, 0.2, 0.2, 0.2),
        "pooling": "avg",
        "init": "noise",
        "optimizer": "lbfgs",
        "scales": (1,),
        "iterations": 500,
        "content_weight": 5.0,
        "style_weight": 100.0,
        "style_norm": "none",  # the paper's loss (whatever the default becomes): layers weighted as they come
        "style_faces": "keep",  # the paper's statistics: the whole painting at every layer
        "tv_weight": 0.0,
    },
    # A quick look (a few seconds on a laptop CPU): small and few iterations.
    "fast": {"size": 256, "iterations": 60},
    # Large and slow: a 256 -> 512 -> 1024 pyramid with twice the default iterations
    # (300, 75, 20), fp32 all the way.
    "hq": {"size": 1024, "iterations": 300, "precision": "fp32"},
}
PRESET_HELP = {
    "gatys2016": "the paper's layers, weights, avg pooling, noise start, one scale (slow)",
    "fast": "quick preview: 256 px, 60 iterations",
    "hq": "high quality: 1024 px pyramid, 300 iterations at the coarsest scale, fp32",
}
PRESET_NAMES = tuple(PRESETS)

MIN_SIZE = 32  # five 2x2 poolings need at least 32 px on the short side
MAX_SIZE = 8192
MAX_STRENGTH = 1000.0  # --style-strength beyond this only stalls the optimiser
MIN_TILE_SIZE = 64  # a tile's core; smaller ones are nearly all margin
# Decoded-pixel cap for input images (decompression bombs): 24k x 24k is 576 MP.
MAX_INPUT_PIXELS = 24_000 * 24_000


def _help(text: str, **extra: Any) -> dict:
    return {"help": text, **extra}


@dataclass(frozen=True)
class StylizeConfig:
    """Settings of one style-transfer run. Validated on construction."""

    size: int = field(default=512, metadata=_help("long side of the output in pixels; aspect ratio kept"))
    # 110 at 256 px then 28 at 512 px: tuned by eye on tubingen x starry night (the
    # fine scale starts from an upsampled, already-styled image and needs few steps).
    # Against 150 + 38 the picture looks the same side by side (final loss +9%) and the
    # run takes 53 s instead of 71 s on our 2-core CPU. A 128 px first scale (300 + 75 +
    # 20 iterations, the same time) turned The Scream's whole sky orange but scored worse
    # on both axes on the other paintings (issue 11, benchmarks/QUALITY.md).
    iterations: int = field(
        default=110,
        metadata=_help("iterations at the first (coarsest) scale; each finer scale runs fewer"),
    )
    scales: Optional[Tuple[int, ...]] = field(
        default=None,
        metadata=_help(
            "long sides of the coarse-to-fine pyramid, e.g. 256,512; a single number N "
            "means N scales; default: halve from --size down to about 256 px"
        ),
    )
    # relu4_2 is the paper's content layer; relu2_2 beside it holds the photo's edges at the
    # fine scales (measured: closer on both axes at once, not a trade-off, QUALITY.md).
    content_layers: Tuple[str, ...] = field(
        default=("relu2_2", "relu4_2"), metadata=_help("layers whose activations carry the content")
    )
    style_layers: Tuple[str, ...] = field(
        default=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        metadata=_help("layers whose Gram matrices carry the style"),
    )
    # Issue 25: under --style-norm target, relu5_1 at the default weight 1 pasted a portrait's face
    # into the photo; the default weighs block 5 down (TARGET_DEEP_WEIGHTS above says why and how much).
    style_layer_weights: Optional[Tuple[float, ...]] = field(
        default=None,
        metadata=_help(
            "one weight per style layer (default: 1 each, except relu5_x at "
            f"{TARGET_DEEP_WEIGHTS[5]:g} under --style-norm target, so that the painting's objects, "
            "a portrait's face, are not pasted into the photo)"
        ),
    )
    # Loss weights are for the normalisation in losses.py. With the classic unscaled style
    # loss (--style-norm none) jcjohnson/neural-style's 5/100 carries over (the gatys2016
    # preset); with the default --style-norm target each style layer counts as a relative
    # error, and content 40 (at relu2_2 and relu4_2) / style 100 / TV 0.01 is the balance
    # measured in benchmarks/QUALITY.md against the classic tool on the four public pairs.
    content_weight: float = field(default=40.0, metadata=_help("alpha: weight of the content loss"))
    style_weight: float = field(default=100.0, metadata=_help("beta: weight of the style loss"))
    # "target" calibrates the push per painting: a painting with small Gram matrices
    # (Seated Nude, The Scream) gets as strong a style as one with large ones.
    style_norm: str = field(
        default="target",
        metadata=_help(
            "style loss scaling per layer: target (divided by the painting's own Gram magnitude, so a "
            "weight means the same strength on every painting) or none (the classic unscaled loss)",
            choices=STYLE_NORMS,
        ),
    )
    # Issue 25: a portrait's face, kept out of the deep layers' statistics (optimiser/faces.py).
    style_faces: str = field(
        default="mask",
        metadata=_help(
            "faces in the painting: mask (found and kept out of the deep style layers, blocks 4-5, so "
            "the sitter's face is not painted into the photo) or keep (the whole painting, as before)",
            choices=STYLE_FACES,
        ),
    )
    style_strength: float = field(
        default=1.0,
        metadata=_help("multiplier on the (calibrated) style weight: 2 paints the style twice as strongly"),
    )
    # 1e-2 (jcjohnson: 1e-3): smoother strokes, and measured closer in style (QUALITY.md).
    tv_weight: float = field(default=1e-2, metadata=_help("weight of the total-variation smoothing term"))
    style_blend_weights: Optional[Tuple[float, ...]] = field(
        default=None, metadata=_help("one weight per style image, normalised to sum 1 (default: equal)")
    )
    style_scale: float = field(
        default=1.0, metadata=_help("style image size relative to the output size")
    )
    # "palette": the photo in the painting's colours (the reverse of --preserve-colors
    # histogram); from the photo itself the optimiser kept The Scream's sky pale blue.
    init: str = field(
        default="palette",
        metadata=_help(
            "start image: content, noise, blur (Gaussian-blurred content), palette (the content "
            "recoloured to the style's colour mean and covariance) or a path"
        ),
    )
    seed: int = field(default=0, metadata=_help("random seed; same seed and settings give the same image on CPU"))
    optimizer: str = field(default="lbfgs", metadata=_help("optimiser of the pixels", choices=OPTIMIZERS))
    lr: Optional[float] = field(
        default=None, metadata=_help("learning rate (default: 1 for lbfgs, 2.0 for adam on 0-255 pixels)")
    )
    pooling: str = field(default="max", metadata=_help("VGG-19 pooling (the paper prefers avg)", choices=POOLINGS))
    device: str = field(default="auto", metadata=_help("where to compute: auto, cpu, cuda, cuda:N or mps"))
    precision: str = field(
        default="auto",
        metadata=_help("network precision; auto = bf16 where the hardware has it, else fp32", choices=PRECISIONS),
    )
    preserve_colors: str = field(
        default="none",
        metadata=_help(
            "keep the content's colours: luminance (style transfer on luminance only, Gatys 2017), "
            "histogram (recolour the style to the content's colour statistics first), or none",
            choices=PRESERVE_COLORS,
        ),
    )
    mask: Optional[Tuple[str, ...]] = field(
        default=None,
        metadata=_help(
            "region masks: one grayscale image per style (white = that style), comma-separated, "
            "or one label image whose N most frequent colours, darkest (lowest R,G,B) first, "
            "map to the N styles in order"
        ),
    )
    preset: Optional[str] = field(
        default=None,
        metadata=_help(
            "named settings (restyle presets lists them); explicit flags override the preset's values",
            choices=PRESET_NAMES,
        ),
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
        coerce_fields(self)
        if self.preset is not None:
            # StylizeConfig(preset="hq", iterations=50): the preset's values where no value was
            # given. A frozen dataclass cannot tell a value given as the default from no value,
            # so a field left at its default takes the preset's value.
            _choice("preset", self.preset, PRESET_NAMES)
            defaults = {f.name: f.default for f in fields(self)}
            for name, value in PRESETS[self.preset].items():
                if getattr(self, name) == defaults[name]:
                    object.__setattr__(self, name, value)
        self.validate()

    def replace(self, **changes: Any) -> "StylizeConfig":
        """A copy with `changes`; a `preset` among them is applied first, the other changes on top.

        Without a new preset the changes apply as given, even where they set a value back to
        its default (the current preset is kept as a record but not applied again).
        """
        name = changes.pop("preset", self.preset)
        if name is not None and name != self.preset:
            _choice("preset", name, PRESET_NAMES)
            changes = {**PRESETS[name], **changes}
        new = replace(self, preset=None, **changes)
        object.__setattr__(new, "preset", name)
        return new

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "StylizeConfig":
        """The defaults, then preset `name`, then `overrides`."""
        return cls().replace(preset=name, **overrides)

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
        _choice("style_norm", self.style_norm, STYLE_NORMS)
        _choice("style_faces", self.style_faces, STYLE_FACES)
        if not (isinstance(self.style_strength, (int, float)) and 0 <= self.style_strength <= MAX_STRENGTH):
            raise InputError(f"style_strength {self.style_strength!r} is out of range; it must be in [0, {MAX_STRENGTH:g}]")
        for name in ("style_layer_weights", "style_blend_weights"):
            for w in getattr(self, name) or ():
                _non_negative(name, w)
        if self.style_blend_weights is not None and sum(self.style_blend_weights) <= 0:
            raise InputError(f"style_blend_weights {self.style_blend_weights} must not sum to 0")
        if not (0.05 <= self.style_scale <= 8) or not math.isfinite(self.style_scale):
            raise InputError(f"style_scale {self.style_scale} is out of range; it must be in [0.05, 8]")
        # Files (an init image, masks) are checked where they are opened, not here: a config
        # may be built on one machine and run on another.
        if not isinstance(self.init, str) or not self.init:
            raise InputError(f"init {self.init!r} must be one of {', '.join(INIT_CHOICES)} or a path to an image")
        _choice("preserve_colors", self.preserve_colors, PRESERVE_COLORS)
        if self.mask is not None and not self.mask:
            raise InputError("mask must name at least one image")
        if self.preset is not None:
            _choice("preset", self.preset, PRESET_NAMES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("pooling", self.pooling, POOLINGS)
        valid_device(self.device)
        _choice("precision", self.precision, PRECISIONS)
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"lr {self.lr} must be a positive number")
        _int_range("seed", self.seed, 0, 2**63 - 1)
        if self.tile_size is not None and self.tile_size != 0:
            _int_range("tile_size", self.tile_size, MIN_TILE_SIZE, MAX_SIZE)
        if self.max_memory is not None and not (self.max_memory > 0 and math.isfinite(self.max_memory)):
            raise InputError(f"max_memory {self.max_memory} must be a positive number of GB")

    @property
    def style_weight_effective(self) -> float:
        """beta times --style-strength: the weight the style loss is multiplied by."""
        return self.style_weight * self.style_strength

    @property
    def lr_or_default(self) -> float:
        return self.lr if self.lr is not None else (1.0 if self.optimizer == "lbfgs" else 2.0)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def valid_device(name: str) -> str:
    """One of DEVICES or "cuda:N" (whether it exists here is device.resolve_device's question)."""
    if name not in DEVICES and not re.fullmatch(r"cuda:[0-9]+", str(name)):
        raise InputError(f"device {name!r} is not one of {', '.join(DEVICES)} or cuda:N")
    return name


def _int_range(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name} {value!r} must be an integer in [{lo}, {hi}]")
    if not lo <= value <= hi:
        raise InputError(f"{name} {value!r} is out of range; it must be an integer in [{lo}, {hi}]")


def _non_negative(name: str, value: float) -> None:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise InputError(f"{name} {value!r} must be a finite number >= 0")


# --- coercion of Python API values (the CLI's parsers already give these types) ---


@lru_cache(maxsize=None)
def _field_kinds(cls: type) -> Dict[str, Tuple[Any, bool]]:
    """Field name -> (scalar type, is a tuple of them) from the dataclass's annotations."""
    kinds = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) is typing.Union and len(args) == 1:  # Optional[X]
            hint = args[0]
        if typing.get_origin(hint) is tuple:
            kinds[name] = (typing.get_args(hint)[0], True)
        else:
            kinds[name] = (hint, False)
    return kinds


def _coerce_scalar(kind: Any, value: Any) -> Any:
    """int 64.0 -> 64, numpy numbers -> Python's, Path -> str; anything else is left for validate()."""
    if isinstance(value, bool):
        return value
    if kind is int and isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return int(value) if math.isfinite(value) and float(value).is_integer() else value
    if kind is int and isinstance(value, numbers.Integral):
        return int(value)
    if kind is float and isinstance(value, numbers.Real):
        return float(value)
    if kind is str and isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _coerce(name: str, kind: Any, many: bool, value: Any) -> Any:
    if value is None or not many:
        return value if value is None else _coerce_scalar(kind, value)
    if isinstance(value, (str, os.PathLike, numbers.Real)) and not isinstance(value, bool):
        value = (value,)  # a single name or number where a tuple of them is expected
    elif isinstance(value, (list, tuple)):
        value = tuple(value)
    else:
        what = {str: "a name", int: "an integer", float: "a number"}.get(kind, "a value")
        raise InputError(f"{name} {value!r} must be {what} or a list or tuple of them")
    return tuple(_coerce_scalar(kind, v) for v in value)


def coerce_fields(config: Any) -> None:
    """Bring API values to the declared types before validation, in place on a frozen dataclass.

    Accepted: a single string (or number) where a tuple of them is expected
    (content_layers="relu4_2"), lists for tuples, integral floats for integers
    (size=64.0), numpy scalars, Path objects for file names. Everything else is
    left as given, and validate() refuses it naming the value and the rule.
    """
    for name, (kind, many) in _field_kinds(type(config)).items():
        value = getattr(config, name)
        new = _coerce(name, kind, many, value)
        if new is not value:
            object.__setattr__(config, name, new)


def _choice(name: str, value: str, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{name} {value!r} is not one of {', '.join(choices)}")


# `stylize --upscale` paints at most this long side, then enlarges with the upscaler:
# 1024 px took 2:38 with the default settings on our 2-core CPU (2048 px: 10:36), and
# the 4x network then fills a 4096 px print in about a minute.
PAINT_LIMIT = 1024
