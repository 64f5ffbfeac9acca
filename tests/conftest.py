import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from restyle.models.weights import CONV_LAYERS, _TORCHVISION_INDEX

TINY = (4, 8, 8, 8, 8)
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def content_path() -> Path:
    return EXAMPLES / "tubingen.jpg"


@pytest.fixture(scope="session")
def style_path() -> Path:
    return EXAMPLES / "starry_night.jpg"


@pytest.fixture
def small_images(tmp_path):
    """A 80x64 content and a 64x64 style made from the real examples (fast to stylise)."""
    c = Image.open(EXAMPLES / "tubingen.jpg").convert("RGB").resize((80, 64))
    s = Image.open(EXAMPLES / "starry_night.jpg").convert("RGB").resize((64, 64))
    cp, sp = tmp_path / "c.png", tmp_path / "s.png"
    c.save(cp)
    s.save(sp)
    return cp, sp


def tiny_torchvision_state(widths=TINY, seed=0):
    """A torchvision-layout state dict with tiny widths (same keys as vgg19-dcbb9e9d.pth)."""
    g = torch.Generator().manual_seed(seed)
    state, in_ch = {}, 3
    outs = [w for w, d in zip(widths, (2, 2, 4, 4, 4)) for _ in range(d)]
    for layer, out_ch in zip(CONV_LAYERS, outs):
        idx = _TORCHVISION_INDEX[layer]
        state[f"features.{idx}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=g) * (2 / (9 * in_ch)) ** 0.5
        state[f"features.{idx}.bias"] = torch.zeros(out_ch)
        in_ch = out_ch
    return state



@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A tiny random network in torchvision's layout: the engine runs it in milliseconds."""
    p = tmp_path_factory.mktemp("weights") / "tiny_vgg.pth"
    torch.save(tiny_torchvision_state(), p)
    return p
