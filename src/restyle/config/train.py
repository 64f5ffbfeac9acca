"""Every knob of `restyle train`, with its default, in one frozen dataclass (no torch: the CLI builds flags from it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Sequence, Tuple

from ..errors import InputError
from ..models.transformer_config import ArbitraryConfig, TransformerConfig
from .stylize import (FEATURE_LAYERS, MAX_SIZE, MIN_SIZE, STYLE_NORMS, VGG19_LAYERS, _choice, _help, _int_range,
                      _non_negative, coerce_fields)

TRAIN_PRECISIONS = ("auto", "fp32", "bf16")
LR_DECAYS = ("none", "cosine")


@dataclass(frozen=True)
class TrainBase:
    """The knobs every trained network shares: the one training loop (training.fit) reads them.

    The defaults are the style networks' (`restyle train`, train_config.TrainConfig: the
    bundled starry_night's recipe); UpscalerTrainConfig overrides those that differ.
    """

    steps: int = field(default=4000, metadata=_help("optimiser steps (batches)"))
    batch_size: int = field(default=2, metadata=_help("training crops per step"))
    lr: float = field(default=1e-3, metadata=_help("Adam learning rate"))
    preview_every: int = field(default=250, metadata=_help("steps between preview grids (0: never)"))
    checkpoint_every: int = field(
        default=250, metadata=_help("steps between checkpoints (0: only at the end and on Ctrl-C)")
    )
    # The data of step k is drawn from a generator seeded with (seed, k) alone, so a resumed
    # run sees exactly the batches the uninterrupted run would have seen.
    seed: int = field(default=0, metadata=_help("seed of the network's initialisation and the data order"))

    def __post_init__(self) -> None:
        coerce_fields(self)  # size=64.0, widths=[12, 24] from JSON: as StylizeConfig takes them
        self.validate()

    def validate(self) -> None:
        _int_range("steps", self.steps, 1, 10_000_000)
        _int_range("batch_size", self.batch_size, 1, 1024)
        _non_negative("lr", self.lr)
        for name in ("preview_every", "checkpoint_every"):
            _int_range(name, getattr(self, name), 0, 10_000_000)
        _int_range("seed", self.seed, 0, 2**63 - 1)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready (tuples as lists): stored in checkpoints and model files."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


# Super-resolution (upscaler) training. Johnson et al. (ECCV 2016, Sec. 4.2) compare
# features at relu2_2 for super-resolution; relu2_2 alone let the network draw a regular
# mesh over grass and bark (relu2_2 sits after a 2x2 max-pool, blind to a 2 px pattern).
# Adding relu1_2, before that pool, costs nothing (the same forward pass), made the mesh
# much fainter and the held-aside LPIPS 8.5% under bicubic's instead of 7.4%, at the same
# recipe otherwise. Deeper layers cost more than a one-hour CPU training run can give.
UPSCALE_FEATURE_LAYERS = ("relu1_2", "relu2_2")


@dataclass(frozen=True)
class UpscalerTrainConfig(TrainBase):
    """Settings of one upscaler training run (stored in its checkpoints and model file).

    The defaults are the bundled up4 model's recipe (plus --hold-out 16): 2000 steps of
    8 crops of 128 px, 20 min on our 2-core CPU (0.6 s a step). A first up4 of 100
    steps of 4 crops of 64 px (a step took 5-20 s on the then overloaded machine) beat
    bicubic's LPIPS by 1.3%; this one by 8.5% (benchmarks/UPSCALE.md).
    """

    steps: int = field(default=2000, metadata=_help("optimiser steps (batches)"))
    batch_size: int = field(default=8, metadata=_help("training crops per step"))
    lr: float = field(default=1e-3, metadata=_help("Adam learning rate (cosine decay to 1/10)"))
    preview_every: int = field(default=250, metadata=_help("write the preview grid every N steps (0: never)"))
    checkpoint_every: int = field(default=100, metadata=_help("write a checkpoint every N steps"))
    scale: int = field(default=4, metadata=_help("enlargement factor the network learns", choices=(2, 4)))
    channels: int = field(default=32, metadata=_help("feature width of the network"))
    blocks: int = field(default=6, metadata=_help("residual blocks of the network"))
    # 128 px crops are 32 px at 4x down, a crop's pixels see most of the network's reach
    # (21 low-res px each side) instead of the zero padding; 64 px crops learned much less
    # in the first up4. A step's cost grows with the crop's area.
    crop: int = field(default=128, metadata=_help("side of the high-resolution training crops in pixels"))
    feature_layers: Tuple[str, ...] = field(
        default=UPSCALE_FEATURE_LAYERS, metadata=_help("VGG-19 layers of the feature (perceptual) loss")
    )
    # The pixel term keeps colours and flat areas where VGG features are indifferent
    # (Johnson et al. use the feature loss alone); at 2 it is about a fifth of the loss.
    pixel_weight: float = field(default=2.0, metadata=_help("weight of the L1 pixel term beside the feature loss"))
    hold_out: int = field(default=0, metadata=_help("photos held aside for evaluation (every k-th by name)"))
    # fp32 unless asked: up4 was trained and benchmarked in fp32 (benchmarks/UPSCALE.md), and on the
    # tests' tiny run bf16 learned a little less (the loss at 71% of its start after 60 steps, fp32's at
    # 70%). bf16 (or auto, bf16 where the hardware has it) autocasts as `train` does: the network and
    # VGG-19 in bf16, the loss and the weights in float32.
    precision: str = field(default="fp32", metadata=_help("network precision; auto: bf16 where the hardware has it",
                                                          choices=TRAIN_PRECISIONS))

    def validate(self) -> None:
        super().validate()
        _choice("precision", self.precision, TRAIN_PRECISIONS)
        if self.scale not in (2, 4):
            raise InputError(f"scale {self.scale!r} is not one of 2, 4")
        _int_range("channels", self.channels, 1, 256)
        _int_range("blocks", self.blocks, 0, 64)
        _int_range("crop", self.crop, 16, 1024)
        if self.crop % self.scale:
            raise InputError(f"crop {self.crop} must be a multiple of scale {self.scale}")
        if not self.lr > 0:
            raise InputError(f"lr {self.lr!r} must be a finite number > 0")
        if not self.feature_layers:
            raise InputError("feature_layers must name at least one layer")
        for layer in self.feature_layers:
            _choice("feature layer", layer, FEATURE_LAYERS)
        _non_negative("pixel_weight", self.pixel_weight)
        _int_range("hold_out", self.hold_out, 0, 10_000_000)


@dataclass(frozen=True)
class TrainConfig(TrainBase):
    """Every knob of `restyle train`, with its default; the CLI flags are built from it.

    steps, batch_size, lr, preview_every, checkpoint_every and seed come from TrainBase.
    """

    # The defaults are the bundled starry_night's recipe, chosen by measurement (README,
    # "The bundled model"): 500-step probes at 128 px compared the Gram normalisation
    # (target >> none: with "none" relu4_1 drowns the rest and the photo vanishes), a
    # residual network (it keeps the photo but paints only a faint hatching) and the
    # style strength (100 x 0.4 keeps faces and cats readable); then 256 px crops, batch
    # 2, the painting at 512 px (the size the optimiser paints it at) for 4000 steps:
    # 24 min on our quiet 2-core CPU (40 min on a busy one). Steps, batch size, lr and
    # the preview and checkpoint intervals of that recipe are TrainBase's defaults.
    size: int = field(default=256, metadata=_help("side of the square training crops in pixels"))
    # Photos are resized so their short side is a random value in [size, size * max_scale]
    # before cropping: the network sees features at several scales.
    max_scale: float = field(default=1.6, metadata=_help("largest random rescale of a photo before cropping"))
    style_size: int = field(default=512, metadata=_help("long side the painting is resized to for its Gram targets"))
    # The optimiser's balance (losses.py normalisation) carried over, with content at
    # relu2_2 as Johnson et al. do: a shallow content layer keeps the photo's edges,
    # which a network (unlike the optimiser, which starts from the photo) must learn.
    # 10 rather than the first bundled model's 5: on tubingen, brad_pitt and the eight
    # held-aside photos the content distance fell by 0.025-0.06 on every one; the style
    # distance fell on seven and rose on three (+0.032 on brad_pitt, under 0.01 on two).
    content_weight: float = field(default=10.0, metadata=_help("weight of the content term"))
    style_weight: float = field(default=40.0, metadata=_help("weight of the Gram style term"))
    style_strength: float = field(default=1.0, metadata=_help("multiplies the style weight (2 = twice as painted)"))
    # TV as the optimiser has it (losses.tv_loss: summed over the picture, here averaged over the batch).
    tv_weight: float = field(default=1e-3, metadata=_help("weight of the total-variation smoothing term"))
    content_layers: Tuple[str, ...] = field(default=("relu2_2",), metadata=_help("content layers"))
    style_layers: Tuple[str, ...] = field(
        default=("relu1_1", "relu2_1", "relu3_1", "relu4_1"), metadata=_help("Gram style layers")
    )
    # "target" makes each layer's loss a relative error (losses.style_layer_scales), so relu1_1
    # (palette, fine strokes) counts as much as relu4_1 (the swirls); "none" is Johnson et al.'s balance.
    style_norm: str = field(default="target", metadata=_help(f"one of {', '.join(STYLE_NORMS)}: per-layer style loss normalisation"))
    widths: Tuple[int, ...] = field(default=(12, 24, 48), metadata=_help("network channel widths"))
    res_blocks: int = field(default=4, metadata=_help("network residual blocks"))
    residual: bool = field(default=False, metadata={"cli": False, "help": "the network adds its output to the photo"})
    holdout: int = field(default=8, metadata=_help("photos held aside from training for the preview grid"))
    precision: str = field(default="auto", metadata=_help(f"one of {', '.join(TRAIN_PRECISIONS)}; auto: bf16 where the hardware has it"))
    threads: int = field(default=0, metadata=_help("torch threads (0: torch's default)"))
    # A constant rate trained the bundled network; a short fine-tune (--from) ends better with
    # the rate falling to a tenth by its last step (benchmarks/FROM_ARBITRARY.md).
    lr_decay: str = field(default="none", metadata=_help("learning-rate schedule: none (constant) or cosine "
                                                         "(falls to a tenth by the last step)", choices=LR_DECAYS))

    def validate(self) -> None:
        super().validate()
        _choice("lr_decay", self.lr_decay, LR_DECAYS)
        # The optimiser's size rule: five poolings need MIN_SIZE px; MAX_SIZE bounds the memory.
        for name in ("size", "style_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not MIN_SIZE <= value <= MAX_SIZE:
                raise InputError(f"{name} {value!r} is out of range; it must be an integer in [{MIN_SIZE}, {MAX_SIZE}]")
        if self.max_scale < 1.0:
            raise InputError(f"max_scale must be >= 1, got {self.max_scale}")
        for name in ("content_weight", "style_weight", "style_strength", "tv_weight"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise InputError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        for name in ("holdout", "threads"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.style_norm not in STYLE_NORMS:
            raise InputError(f"style_norm {self.style_norm!r} is not one of {', '.join(STYLE_NORMS)}")
        if self.precision not in TRAIN_PRECISIONS:
            raise InputError(f"precision {self.precision!r} is not one of {', '.join(TRAIN_PRECISIONS)}")
        for name in ("content_layers", "style_layers"):
            bad = [x for x in getattr(self, name) if x not in VGG19_LAYERS]
            if bad or not getattr(self, name):
                raise InputError(f"{name} {bad or '()'}: each must be a VGG-19 layer such as relu2_2")
        try:
            TransformerConfig(tuple(self.widths), self.res_blocks, residual=self.residual)
        except ValueError as e:
            raise InputError(str(e)) from None

    def network_config(self) -> TransformerConfig:
        return TransformerConfig(tuple(self.widths), self.res_blocks, residual=self.residual)


# `restyle train --from arbitrary`: the network already paints the painting, so a short fine-tune with the
# rate falling to a tenth. benchmarks/FROM_ARBITRARY.md, Starry Night against the 4000-step network: 100
# such steps, content +1.9 % and style -2.8 % in 87 s; 170 at the constant rate, +2.7 % and -0.3 % in 142 s.
# A doubled rate (2e-3) lost the photo (content +7-8 %).
FROM_ARBITRARY: Dict[str, Any] = {"steps": 100, "lr_decay": "cosine"}


@dataclass(frozen=True)
class ArbitraryTrainConfig(TrainBase):
    """Every knob of `restyle train-arbitrary`; the per-painting recipe's weights, sizes and layers."""

    size: int = field(default=256, metadata=_help("side of the square training crops of the photos"))
    max_scale: float = field(default=1.6, metadata=_help("largest random rescale of a photo before cropping"))
    style_size: int = field(default=512, metadata=_help("long side of a painting for its Gram targets"))
    # Training reads the painting at 256 px (Ghiasi et al.'s size). A VGG pass to relu4_1 at
    # 256 px costs about what the transformer costs at 512; `restyle refit-encoder` then teaches
    # the trained network's predictor to read 128 px (the bundled network reads 128).
    encode_size: int = field(default=256, metadata=_help("long side of a painting for its style code"))
    content_weight: float = field(default=10.0, metadata=_help("weight of the content term"))
    style_weight: float = field(default=40.0, metadata=_help("weight of the Gram style term"))
    tv_weight: float = field(default=1e-3, metadata=_help("weight of the total-variation term"))
    content_layers: Tuple[str, ...] = field(default=("relu2_2",), metadata=_help("content layers"))
    paintings_per_step: int = field(default=2, metadata=_help("paintings drawn per step"))
    photos_per_painting: int = field(default=1, metadata=_help("photo crops painted in each painting per step"))
    crops_per_painting: int = field(default=4, metadata=_help("views of each painting (whole + random crops)"))
    holdout_every: int = field(default=10, metadata=_help("every k-th painting by name is held aside"))
    holdout: int = field(default=8, metadata=_help("photos held aside for the preview grid"))
    widths: Tuple[int, ...] = field(default=(12, 24, 48), metadata=_help("transformer channel widths"))
    res_blocks: int = field(default=4, metadata=_help("transformer residual blocks"))
    code_dim: int = field(default=100, metadata=_help("style code size"))
    # Start the transformer from a trained per-painting network of the same shape: it
    # already paints strokes, so the steps go to telling styles apart.
    init_from: str = field(default="starry_night", metadata=_help("model whose transformer starts the run ('' none)"))
    precision: str = field(default="auto", metadata=_help("auto, fp32 or bf16"))
    threads: int = field(default=0, metadata=_help("torch threads (0: torch's default)"))
    steps: int = field(default=40000, metadata=_help("optimiser steps"))
    preview_every: int = field(default=500, metadata=_help("steps between preview grids (0: never)"))
    checkpoint_every: int = field(default=250, metadata=_help("steps between checkpoints"))

    def validate(self) -> None:
        super().validate()
        for name in ("size", "style_size", "encode_size"):
            if not 32 <= int(getattr(self, name)) <= 4096:
                raise InputError(f"{name} must be in [32, 4096] px, got {getattr(self, name)}")
        for name in ("paintings_per_step", "photos_per_painting", "crops_per_painting", "holdout_every", "code_dim"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("content_weight", "style_weight", "tv_weight", "max_scale"):
            if not getattr(self, name) >= 0:
                raise InputError(f"{name} must be a number >= 0, got {getattr(self, name)}")
        bad = [x for x in self.content_layers if x not in VGG19_LAYERS]
        if bad or not self.content_layers:
            raise InputError(f"content_layers {bad or '()'}: each must be a VGG-19 layer such as relu2_2")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise InputError(f"precision {self.precision!r} is not one of auto, fp32, bf16")

    def network_config(self, layer_channels: Sequence[int] = ArbitraryConfig.layer_channels) -> ArbitraryConfig:
        """The network's arguments; `layer_channels` are those of the VGG-19 (or tiny test network) in use."""
        return ArbitraryConfig(tuple(self.widths), self.res_blocks, self.code_dim,
                               layer_channels=tuple(layer_channels))
