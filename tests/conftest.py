"""The shared fixtures: one name, one meaning, for every test module.

Plain helpers live beside this file and are imported by name: webutil (the web app's settings,
a live server, image bytes, waiting for a job), videoutil (tiny clips), tinynets (tiny trained
networks and their training data), browserutil (Chromium), synccount. No test module imports
another test module (tests/test_architecture.py checks it).
"""

import os
from dataclasses import replace
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


@pytest.fixture
def photos(tmp_path) -> Path:
    """A folder of five 60x48 photos cut from the example (training takes one aside)."""
    d = tmp_path / "photos"
    d.mkdir()
    src = Image.open(EXAMPLES / "tubingen.jpg").convert("RGB")
    for i in range(5):
        src.crop((i * 60, i * 20, i * 60 + 300, i * 20 + 240)).resize((60, 48)).save(d / f"p{i}.jpg")
    return d


@pytest.fixture
def painter(tiny_weights):
    """The optimiser's Painter on the tiny network (down to relu5_1, max pooling), CPU, fp32."""
    from restyle.config import StylizeConfig
    from restyle.optimiser.engine import make_painter

    return make_painter(StylizeConfig(precision="fp32", device="cpu"), tiny_weights)


@pytest.fixture
def corpus(tmp_path) -> Path:
    """For the any-painting network: four paintings with different palettes and five photos (one held aside each)."""
    from tinynets import make_corpus

    return make_corpus(tmp_path)


@pytest.fixture
def clip(tmp_path) -> Path:
    """A 10-frame, 10 fps 64x48 clip with an AAC tone (videoutil.make_clip); skips without PyAV or OpenCV."""
    pytest.importorskip("av")
    pytest.importorskip("cv2")
    from videoutil import make_clip

    return make_clip(tmp_path / "clip.mp4")


@pytest.fixture
def settings(tmp_path, tiny_weights):
    """The web app's settings on the tiny network, with its worker process: jobs really run."""
    from webutil import web_settings

    return web_settings(tmp_path / "data", tiny_weights)


@pytest.fixture
def idle_settings(settings):
    """`settings` without workers: jobs are accepted and wait (fast, for input checks)."""
    return replace(settings, start_workers=False)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium under Playwright, one per module (browserutil.chromium_path finds it or fails)."""
    from playwright.sync_api import sync_playwright

    from browserutil import CHROMIUM_ARGS, chromium_path

    exe = chromium_path()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()
