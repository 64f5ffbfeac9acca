"""The feed-forward network's architecture arguments, without torch (the CLI builds flags from them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Tuple


@dataclass(frozen=True)
class TransformerConfig:
    """Architecture arguments; saved in every model file so it rebuilds itself."""

    # Channels after the stem and after each stride-2 downsampling (Johnson: 32, 64, 128).
    widths: Tuple[int, ...] = (16, 32, 64)
    res_blocks: int = 3  # Johnson: 5
    stem_kernel: int = 9  # the first and last convolutions (Johnson: 9x9)
    # Add the photo to the output (the network learns the change, starting near the
    # identity): a departure from Johnson et al. that lets a short training run keep the
    # content from its first steps instead of rebuilding it from the style's texture.
    residual: bool = False

    def __post_init__(self) -> None:
        if len(self.widths) < 1 or any(int(w) < 1 for w in self.widths):
            raise ValueError(f"widths must be one or more positive channel counts, got {self.widths}")
        if self.res_blocks < 0:
            raise ValueError(f"res_blocks must be >= 0, got {self.res_blocks}")
        if self.stem_kernel < 1 or self.stem_kernel % 2 == 0:
            raise ValueError(f"stem_kernel must be a positive odd number, got {self.stem_kernel}")
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))

    @property
    def stride(self) -> int:
        """Total downsampling factor; inputs are padded to a multiple of it."""
        return 2 ** (len(self.widths) - 1)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d


STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")  # what the any-painting network reads of a painting


@dataclass(frozen=True)
class ArbitraryConfig:
    """Architecture arguments; saved in every model file so the network rebuilds itself."""

    widths: Tuple[int, ...] = (12, 24, 48)
    res_blocks: int = 4
    code_dim: int = 100  # Ghiasi et al.'s bottleneck
    hidden: int = 256
    style_layers: Tuple[str, ...] = STYLE_LAYERS
    layer_channels: Tuple[int, ...] = (64, 128, 256, 512)  # of style_layers, in the VGG-19 the stats come from

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "style_layers", tuple(self.style_layers))
        object.__setattr__(self, "layer_channels", tuple(int(c) for c in self.layer_channels))
        if len(self.style_layers) != len(self.layer_channels) or not self.style_layers:
            raise ValueError(f"style_layers {self.style_layers} and layer_channels {self.layer_channels} "
                             "must name the same non-empty list of layers")
        for name in ("code_dim", "hidden"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.transformer()  # its own checks

    def transformer(self) -> TransformerConfig:
        return TransformerConfig(self.widths, self.res_blocks)

    @property
    def stats_dim(self) -> int:
        return 2 * sum(self.layer_channels)

    def to_dict(self) -> Dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
