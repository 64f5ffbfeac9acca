"""A small residual super-resolution network, and tiled inference for any size.

The network follows Johnson, Alahi & Fei-Fei (ECCV 2016, section 3 and the
supplement): residual blocks at the low resolution, then learned upsampling,
trained with a feature (perceptual) loss on VGG-19 (see upscaler_train.py).
Two departures, both for a network that must train in an hour on a CPU:

- it predicts a correction to the bicubic enlargement (a global skip, as in
  VDSR, Kim et al. 2016) and its last convolution starts at zero, so the
  untrained network *is* bicubic and training only has to add detail;
- each 2x step is a resize-convolution (Odena, Dumoulin & Olah 2016, "Deconvolution
  and Checkerboard Artifacts") with *bilinear* rather than nearest resizing. A first
  version used sub-pixel convolution (PixelShuffle, Shi et al. 2016, ICNR-initialised):
  early in training its correction was built from 4x4 blocks and drew a 4 px lattice
  over every photo (LPIPS 0.58 against bicubic's 0.39 after 50 steps). Bilinear
  features are smooth, so no lattice can form, at the same cost per pixel.

Pictures are tensors (N, 3, H, W) in 0-255, as everywhere in restyle.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

SCALES = (2, 4)


@dataclass(frozen=True)
class UpscalerConfig:
    """Everything needed to rebuild the network (stored in every model file)."""

    scale: int = 4
    channels: int = 32  # feature width at the low resolution
    blocks: int = 8  # residual blocks; each adds 2 px (low-res) of reach on each side

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise InputError(f"scale {self.scale} is not one of {', '.join(map(str, SCALES))}")
        if not 1 <= self.channels <= 256:
            raise InputError(f"channels {self.channels} must be in [1, 256]")
        if not 0 <= self.blocks <= 64:
            raise InputError(f"blocks {self.blocks} must be in [0, 64]")

    def to_dict(self) -> Dict[str, int]:
        return asdict(self)

    @property
    def reach(self) -> int:
        """Low-res pixels on each side that can change one output pixel (the tile halo must cover it).

        The head, 2 convs per block and the body's last conv are 3x3 at low resolution
        (1 px each); each bilinear resize and each conv after it, and the tail, add at
        most 1 low-res px; bicubic adds 2.
        """
        return 1 + 2 * self.blocks + 1 + 2 * int(math.log2(self.scale)) + 1 + 2


class ResBlock(nn.Module):
    """conv-ReLU-conv plus identity; no batch norm (it hurts super-resolution: Lim et al. 2017)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class Upscaler(nn.Module):
    """Low-res features -> one or two (bilinear 2x, conv, ReLU) steps -> RGB correction to bicubic."""

    def __init__(self, config: UpscalerConfig = UpscalerConfig()) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(c) for _ in range(config.blocks)], nn.Conv2d(c, c, 3, padding=1))
        ups = []
        for _ in range(int(math.log2(config.scale))):
            ups += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                    nn.Conv2d(c, c, 3, padding=1), nn.ReLU()]
        self.up = nn.Sequential(*ups)
        self.tail = nn.Conv2d(c, 3, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # the untrained network is exactly bicubic
        nn.init.zeros_(self.tail.bias)

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) in 0-255 -> (N, 3, h*scale, w*scale) in 0-255 (not clamped, for the loss)."""
        base = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        f = self.head(x / 127.5 - 1.0)
        f = f + self.body(f)
        return base + 127.5 * self.tail(self.up(f))


# --- tiled inference --------------------------------------------------------


def _spans(length: int, tile: int, overlap: int) -> Iterator[Tuple[int, int]]:
    """Start/end of tiles covering [0, length), each `tile` long, neighbours sharing `overlap`."""
    if length <= tile:
        yield 0, length
        return
    step = tile - overlap
    n = math.ceil((length - overlap) / step)
    for k in range(n):
        start = min(k * step, length - tile)
        yield start, start + tile


def _ramp(length: int, lead: int, trail: int) -> torch.Tensor:
    """Blending weights along one axis: rise over `lead` samples, flat, fall over `trail` samples."""
    w = torch.ones(length)
    if lead:
        w[:lead] = torch.linspace(0, 1, lead + 2)[1:-1]
    if trail:
        w[length - trail:] = torch.linspace(1, 0, trail + 2)[1:-1]
    return w


@torch.inference_mode()
def upscale_tensor(
    model: Upscaler, x: torch.Tensor, *, tile: int = 256, overlap: int = 16, halo: int | None = None
) -> torch.Tensor:
    """Upscale (1, 3, h, w) in 0-255 tile by tile; returns (1, 3, h*s, w*s) clamped to 0-255.

    Each tile is run with `halo` extra low-res pixels of context on every side
    (default: the network's reach, so a tile's centre equals the untiled result)
    and neighbouring tiles overlap by `overlap` pixels, cross-faded linearly, so
    that no seam shows even where the halo is cut short. Memory is bounded by
    the tile, not the picture.
    """
    if x.dim() != 4 or x.shape[:2] != (1, 3):
        raise InputError(f"expected a (1, 3, H, W) picture, got shape {tuple(x.shape)}")
    if tile < 16 or not 0 <= overlap < tile // 2:
        raise InputError(f"tile {tile} must be >= 16 and overlap {overlap} in [0, tile/2)")
    s = model.scale
    halo = model.config.reach if halo is None else halo
    _, _, h, w = x.shape
    out = torch.zeros(1, 3, h * s, w * s, device=x.device)
    weight = torch.zeros(1, 1, h * s, w * s, device=x.device)
    rows, cols = list(_spans(h, tile, overlap)), list(_spans(w, tile, overlap))
    for i, (y0, y1) in enumerate(rows):
        for j, (x0, x1) in enumerate(cols):
            py0, px0 = max(0, y0 - halo), max(0, x0 - halo)
            py1, px1 = min(h, y1 + halo), min(w, x1 + halo)
            y = model(x[:, :, py0:py1, px0:px1])
            y = y[:, :, (y0 - py0) * s:(y1 - py0) * s, (x0 - px0) * s:(x1 - px0) * s]
            # Fade in only where a neighbour overlaps, so the picture's own edges keep weight 1.
            wy = _ramp((y1 - y0) * s, overlap * s if i else 0, overlap * s if i < len(rows) - 1 else 0)
            wx = _ramp((x1 - x0) * s, overlap * s if j else 0, overlap * s if j < len(cols) - 1 else 0)
            wt = (wy[:, None] * wx[None, :]).to(x.device)
            out[:, :, y0 * s:y1 * s, x0 * s:x1 * s] += y.float() * wt
            weight[:, :, y0 * s:y1 * s, x0 * s:x1 * s] += wt
    return (out / weight).clamp_(0, 255)
