"""The feed-forward network's architecture arguments, without torch (the CLI builds flags from them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Tuple


MAX_WIDTH = 1024  # channels at any level (Johnson et al.: 128 at most; the bundled models: 48)
MAX_LEVELS = 6  # widths: the stem and up to five stride-2 levels
MAX_RES_BLOCKS = 64
MAX_STEM_KERNEL = 15


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
        # Checked as a model file is read too: a file that says widths (10**6,) or res_blocks -3
        # is refused before any weight is allocated. The bounds are far past any sensible network.
        if (not isinstance(self.widths, (tuple, list)) or not 1 <= len(self.widths) <= MAX_LEVELS
                or not all(_whole(w) and 1 <= w <= MAX_WIDTH for w in self.widths)):
            raise ValueError(f"widths must be 1 to {MAX_LEVELS} channel counts in [1, {MAX_WIDTH}], got {self.widths!r}")
        if not (_whole(self.res_blocks) and 0 <= self.res_blocks <= MAX_RES_BLOCKS):
            raise ValueError(f"res_blocks must be a whole number in [0, {MAX_RES_BLOCKS}], got {self.res_blocks!r}")
        if not (_whole(self.stem_kernel) and 1 <= self.stem_kernel <= MAX_STEM_KERNEL and self.stem_kernel % 2):
            raise ValueError(f"stem_kernel must be an odd number in [1, {MAX_STEM_KERNEL}], got {self.stem_kernel!r}")
        if not isinstance(self.residual, bool):
            raise ValueError(f"residual must be true or false, got {self.residual!r}")
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
MIN_STYLE_SIDE = 64  # px on each side: a painting smaller than this has no strokes to read (the web checks it too)
MAX_CODE_STRENGTH = 3.0  # the any-painting network's style strength: beyond it the code leaves what it was trained on


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
