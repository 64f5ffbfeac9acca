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
