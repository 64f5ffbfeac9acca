"""Colour control (Gatys, Ecker, Bethge, Hertzmann & Shechtman, CVPR 2017, Sec. 5).

Two ways to keep the content photo's colours while taking the painting's strokes:

- ``luminance`` (Sec. 5.1, "luminance-only transfer"): the optimisation runs on
  luminance alone. The content and style images become gray (their Y channel,
  replicated to RGB for VGG), the style's luminance is matched in mean and
  standard deviation to the content's (Eq. 6), the optimised variable is a
  single Y channel, and the picture shown or saved is that Y combined with the
  content's chroma (I and Q of YIQ).
- ``histogram`` (Sec. 5.2, "colour histogram matching"): before its features are
  taken, the style image is recoloured so that its pixels' mean and 3x3
  covariance equal the content's: x' = A (x - mu_s) + mu_c with
  A = Sigma_c^(1/2) Sigma_s^(-1/2), the symmetric matrix square roots from an
  eigendecomposition (torch.linalg.eigh). The paper names this variant and a
  Cholesky one; the symmetric one does not depend on the order of the RGB axes
  and rotates colours least.

``ColorPlan`` wraps these as the transformations around the engine's loop.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from ..images import to_pil, to_tensor

# RGB -> YIQ (NTSC 1953), the colour space of Gatys et al. 2017, Sec. 5.1.
RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]],
    dtype=torch.float64,
)
YIQ_TO_RGB = torch.linalg.inv(RGB_TO_YIQ)
STATS_SIDE = 256  # colour statistics are taken on a copy this large (long side): plenty for a 3x3 covariance


def rgb_to_yiq(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> YIQ, same scale (Y in 0-255 for 0-255 input)."""
    m = RGB_TO_YIQ.to(device=x.device, dtype=torch.float32)
    return torch.einsum("ij,njhw->nihw", m, x.float())


def yiq_to_rgb(x: torch.Tensor) -> torch.Tensor:
    m = YIQ_TO_RGB.to(device=x.device, dtype=torch.float32)
    return torch.einsum("ij,njhw->nihw", m, x.float())


def luminance(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> (N, 1, H, W) Y."""
    return rgb_to_yiq(x)[:, :1]


def gray_rgb(y: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luminance -> (N, 3, H, W) RGB with R = G = B = Y (what VGG sees)."""
    return y.expand(-1, 3, -1, -1)


def with_chroma(y: torch.Tensor, chroma_from: torch.Tensor) -> torch.Tensor:
    """RGB image with luminance `y` (N, 1, H, W) and the I, Q of RGB image `chroma_from`."""
    iq = rgb_to_yiq(chroma_from)[:, 1:]
    if iq.shape[-2:] != y.shape[-2:]:
        iq = F.interpolate(iq, size=y.shape[-2:], mode="bilinear", align_corners=False)
    return yiq_to_rgb(torch.cat([y.float(), iq], dim=1)).clamp(0, 255)


def _stats_tensor(img: Image.Image) -> torch.Tensor:
    small = img.copy()
    small.thumbnail((STATS_SIDE, STATS_SIDE), Image.Resampling.BILINEAR)
    return to_tensor(small).double()


def match_luminance(style: Image.Image, content: Image.Image) -> Image.Image:
    """The style's luminance, shifted and scaled to the content's mean and std (Eq. 6), as gray RGB."""
    ys, yc = luminance(_stats_tensor(style)), luminance(_stats_tensor(content))
    scale = (yc.std() / ys.std().clamp_min(1e-6)).item()
    y = luminance(to_tensor(style))
    y = (y - ys.mean().item()) * scale + yc.mean().item()
    return to_pil(gray_rgb(y.clamp(0, 255)))


def gray_of(img: Image.Image) -> Image.Image:
    return to_pil(gray_rgb(luminance(to_tensor(img))))


def color_transfer_matrix(style_pixels: torch.Tensor, content_pixels: torch.Tensor, eps: float = 1e-3):
    """(A, b) with A x + b mapping the style's pixel mean/covariance onto the content's.

    Pixels are (3, N) float64; A = Sigma_c^(1/2) Sigma_s^(-1/2) (symmetric square
    roots by eigendecomposition), b = mu_c - A mu_s. `eps` (in 0-255 units squared)
    regularises a nearly flat style (e.g. a gray drawing) so its inverse root exists.
    """
    def mean_cov(p: torch.Tensor):
        mu = p.mean(dim=1, keepdim=True)
        d = p - mu
        return mu, d @ d.t() / p.shape[1] + eps * torch.eye(3, dtype=p.dtype, device=p.device)

    def sym_power(cov: torch.Tensor, power: float) -> torch.Tensor:
        vals, vecs = torch.linalg.eigh(cov)
        return vecs @ torch.diag(vals.clamp_min(eps) ** power) @ vecs.t()

    mu_s, cov_s = mean_cov(style_pixels)
    mu_c, cov_c = mean_cov(content_pixels)
    a = sym_power(cov_c, 0.5) @ sym_power(cov_s, -0.5)
    return a, mu_c - a @ mu_s


def recolour(img: Image.Image, palette: Sequence[Image.Image]) -> Image.Image:
    """`img` recoloured to the colour mean and covariance of the `palette` images' pixels together."""
    target = torch.cat([_stats_tensor(p)[0].reshape(3, -1) for p in palette], dim=1)
    a, b = color_transfer_matrix(_stats_tensor(img)[0].reshape(3, -1), target)
    x = to_tensor(img)[0].double().reshape(3, -1)
    return to_pil((a @ x + b).reshape(1, 3, img.height, img.width).float())


def match_histogram(style: Image.Image, content: Image.Image) -> Image.Image:
    """The style image recoloured to the content's colour mean and covariance (Sec. 5.2)."""
    return recolour(style, [content])


class ColorPlan:
    """What the engine's loop sees and optimises, for one `preserve_colors` mode.

    - content()/style(): the images whose features are the targets.
    - variable(x): the optimised tensor made from a 3-channel start image.
    - network_input(x): what goes into VGG (3 channels).
    - image(x): the picture the user gets (snapshots and the result).
    """

    def __init__(self, mode: str, content: Image.Image) -> None:
        self.mode = mode
        self.content_img = content
        self._chroma: Optional[torch.Tensor] = None

    def content(self, img: Image.Image) -> Image.Image:
        return gray_of(img) if self.mode == "luminance" else img

    def styles(self, imgs: Sequence[Image.Image]) -> List[Image.Image]:
        if self.mode == "luminance":
            return [match_luminance(s, self.content_img) for s in imgs]
        if self.mode == "histogram":
            return [match_histogram(s, self.content_img) for s in imgs]
        return list(imgs)

    def variable(self, x: torch.Tensor) -> torch.Tensor:
        return luminance(x) if self.mode == "luminance" else x

    def network_input(self, x: torch.Tensor) -> torch.Tensor:
        return gray_rgb(x) if self.mode == "luminance" else x

    def image(self, x: torch.Tensor) -> Image.Image:
        if self.mode != "luminance":
            return to_pil(x)
        h, w = x.shape[-2:]
        if self._chroma is None or self._chroma.shape[-2:] != (h, w):
            self._chroma = to_tensor(self.content_img.resize((w, h), Image.Resampling.LANCZOS), x.device)
        return to_pil(with_chroma(x.detach(), self._chroma))
