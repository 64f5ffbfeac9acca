"""Colour control: luminance-only transfer and colour-statistics matching (Gatys et al. 2017, Sec. 5)."""

import pytest
import torch
from PIL import Image

import restyle
from restyle.optimiser.color import (
    color_transfer_matrix, match_histogram, match_luminance, recolour, rgb_to_yiq, with_chroma, yiq_to_rgb,
)
from restyle.config import StylizeConfig
from restyle.images import to_tensor


def chroma(img: Image.Image, size=None) -> torch.Tensor:
    """I and Q of YIQ, (1, 2, H, W)."""
    return rgb_to_yiq(to_tensor(img.resize(size) if size else img))[:, 1:]


def chroma_errors(out: Image.Image, content: Image.Image):
    """(per-pixel, global-mean) absolute chroma difference from the content."""
    a, b = chroma(out), chroma(content.convert("RGB"), out.size)
    return (a - b).abs().mean().item(), (a.mean((2, 3)) - b.mean((2, 3))).abs().mean().item()


def test_yiq_round_trip_and_luminance_of_gray():
    x = torch.rand(1, 3, 5, 7) * 255
    assert torch.allclose(yiq_to_rgb(rgb_to_yiq(x)), x, atol=1e-3)
    gray = torch.full((1, 3, 2, 2), 100.0)
    assert torch.allclose(rgb_to_yiq(gray), torch.tensor([100.0, 0, 0]).view(1, 3, 1, 1).expand(1, 3, 2, 2), atol=1e-3)


def test_with_chroma_keeps_y_and_takes_the_other_chroma():
    g = torch.Generator().manual_seed(0)
    y = torch.rand(1, 1, 6, 6, generator=g) * 100 + 80
    src = torch.rand(1, 3, 6, 6, generator=g) * 40 + 100  # chroma small enough to stay inside 0-255
    out = with_chroma(y, src)
    yiq = rgb_to_yiq(out)
    assert torch.allclose(yiq[:, :1], y, atol=1e-2)
    assert torch.allclose(yiq[:, 1:], rgb_to_yiq(src)[:, 1:], atol=1e-2)


def test_color_transfer_matrix_matches_mean_and_covariance():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 5000, generator=g, dtype=torch.float64) * torch.tensor([[30.0], [10.0], [5.0]]) + 100
    mix = torch.tensor([[1.0, 0.5, 0.2], [0.0, 1.0, 0.3], [0.4, 0.0, 1.0]], dtype=torch.float64)
    c = mix @ torch.randn(3, 5000, generator=g, dtype=torch.float64) * 20 + torch.tensor([[50.0], [120.0], [200.0]])
    a, b = color_transfer_matrix(s, c, eps=0.0)
    out = a @ s + b
    assert torch.allclose(out.mean(1), c.mean(1), atol=1e-6)
    assert torch.allclose(torch.cov(out, correction=0), torch.cov(c, correction=0), rtol=1e-6, atol=1e-6)


def test_match_histogram_and_luminance_on_images(small_images):
    c, s = (Image.open(p).convert("RGB") for p in small_images)
    h = to_tensor(match_histogram(s, c))[0].reshape(3, -1)
    ref = to_tensor(c)[0].reshape(3, -1)
    assert (h.mean(1) - ref.mean(1)).abs().max() < 3  # 8-bit rounding and clipping
    assert (to_tensor(s)[0].reshape(3, -1).mean(1) - ref.mean(1)).abs().max() > 10  # it had to move
    gray = to_tensor(match_luminance(s, c))
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    yc = rgb_to_yiq(to_tensor(c))[:, 0]
    assert abs(gray.mean() - yc.mean()) < 2 and abs(gray.std() - yc.std()) < 2


def test_palette_start_has_the_paintings_colour_mean(small_images):
    from restyle.optimiser.engine import initial_image

    c, s = (Image.open(p).convert("RGB") for p in small_images)
    x = initial_image("palette", c, c.size, 0, torch.device("cpu"), palette=[s])
    assert x.shape == (1, 3, c.height, c.width)
    mean_s = to_tensor(s)[0].reshape(3, -1).mean(1)
    assert (x[0].reshape(3, -1).mean(1) - mean_s).abs().max() < 3  # the painting's colours
    assert (to_tensor(c)[0].reshape(3, -1).mean(1) - mean_s).abs().max() > 10  # the photo's were not
    assert (to_tensor(recolour(c, [c])) - to_tensor(c)).abs().max() <= 2  # its own palette: unchanged


def test_luminance_keeps_the_content_chroma_on_the_tiny_network(small_images, tiny_weights):
    c, s = small_images
    cfg = StylizeConfig(size=64, iterations=8, init="noise", content_weight=0)
    content = Image.open(c)
    lum = restyle.run(c, s, cfg.replace(preserve_colors="luminance"), weights=tiny_weights)
    none = restyle.run(c, s, cfg, weights=tiny_weights)
    assert lum.image.size == none.image.size == (64, 51)
    assert chroma_errors(lum.image, content)[0] < 1.5  # only 8-bit rounding
    assert chroma_errors(none.image, content)[0] > 5 * chroma_errors(lum.image, content)[0]


@pytest.mark.weights
def test_each_colour_mode_on_the_real_network(small_images):
    """none repaints in the style's colours; luminance keeps the content's chroma per pixel,
    histogram keeps its overall colour statistics."""
    c, s = small_images
    content = Image.open(c)
    cfg = StylizeConfig(size=64, iterations=15, scales=(1,), precision="fp32")
    err = {m: chroma_errors(restyle.stylize(c, s, cfg.replace(preserve_colors=m)), content)
           for m in ("none", "luminance", "histogram")}
    assert err["luminance"][0] < 1.5 < 4 < err["none"][0], err
    assert err["histogram"][1] < 0.5 * err["none"][1], err
