"""Every knob of `restyle train`, with its default, in one frozen dataclass (no torch: the CLI builds flags from it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Tuple

from .config import STYLE_NORMS, VGG19_LAYERS, TrainBase
from .errors import InputError
from .models.transformer_config import TransformerConfig

TRAIN_PRECISIONS = ("auto", "fp32", "bf16")


def _help(text: str) -> dict:
    return {"help": text}


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

    def validate(self) -> None:
        super().validate()
        for name in ("size", "style_size"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.size < 32:
            raise InputError(f"size must be >= 32 px (VGG-19's poolings), got {self.size}")
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

