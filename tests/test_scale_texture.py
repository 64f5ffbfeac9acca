"""Coarse-to-fine with --style-scale, and texture synthesis (tileable on request)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import restyle
from restyle.cli.main import main
from restyle.config import StylizeConfig
from restyle.events import Iterate
from restyle.models.vgg import VGG19Features
from restyle.images import to_tensor
from restyle.optimiser.schedule import pyramid
from restyle.optimiser.texture import circular, synthesize, wrap_resize
from restyle.models.weights import load_weights


@pytest.mark.parametrize(
    "size, scales, sides, iters",
    [
        (512, None, (256, 512), (150, 38)),
        (1024, None, (256, 512, 1024), (150, 38, 20)),
        (2048, None, (256, 512, 1024, 2048), (150, 38, 20, 20)),
        (2048, (1,), (2048,), (150,)),
        (1500, (400, 800), (400, 800, 1500), (150, 38, 20)),
    ],
)
def test_large_outputs_go_coarse_to_fine_with_fewer_iterations(size, scales, sides, iters):
    stages = pyramid(size, 150, scales)
    assert tuple(s.long_side for s in stages) == sides
    assert tuple(s.iterations for s in stages) == iters


def test_style_size_follows_each_scale(small_images, tiny_weights):
    c, s = small_images
    r = restyle.run(c, s, StylizeConfig(size=128, iterations=2, scales=(64, 128), style_scale=0.5), weights=tiny_weights)
    assert [(st["long_side"], st["style_long_side"]) for st in r.report["stages"]] == [(64, 32), (128, 64)]
    assert r.image.size == (128, 102)
    single = restyle.run(c, s, StylizeConfig(size=96, iterations=2, scales=(1,)), weights=tiny_weights)
    assert [(st["long_side"], st["style_long_side"]) for st in single.report["stages"]] == [(96, 96)]


def test_circular_network_sees_a_torus(tiny_weights):
    net = circular(VGG19Features.from_weights(load_weights(tiny_weights), "relu3_1"))
    x = torch.rand(1, 3, 32, 48) * 255
    a = net(x, ["relu3_1"])["relu3_1"]
    b = net(torch.roll(x, shifts=(8, 12), dims=(2, 3)), ["relu3_1"])["relu3_1"]
    # shifting by a multiple of the stride (4 at relu3_1) shifts the features: no edges anywhere
    assert torch.allclose(torch.roll(a, shifts=(2, 3), dims=(2, 3)), b, atol=1e-3)


def test_wrap_resize_keeps_a_periodic_image_periodic():
    t = torch.linspace(0, 2 * np.pi, 33)[:-1]
    x = (torch.sin(t)[None, :] + torch.cos(2 * t)[:, None]).expand(1, 3, 32, 32) * 50 + 128
    y = wrap_resize(x, (40, 24))
    assert y.shape[-2:] == (24, 40)
    seam = (y[..., :, 0] - y[..., :, -1]).abs().mean()
    step = (y[..., :, 1:] - y[..., :, :-1]).abs().mean()
    assert seam < 1.5 * step


def test_texture_command_writes_the_size_asked_for(small_images, tiny_weights, tmp_path, capsys):
    out = tmp_path / "t.png"
    code = main(["texture", str(small_images[1]), "-o", str(out), "--size", "72x40", "--tile", "--iterations", "3",
                 "--weights", str(tiny_weights), "--quiet", "--seed", "2"])
    assert code == 0, capsys.readouterr().err
    assert Image.open(out).size == (72, 40)
    report = json.loads(out.with_name(out.name + ".json").read_text())
    assert report["tile"] is True and report["size"] == [72, 40] and report["config"]["seed"] == 2


def test_texture_size_is_checked(small_images, tiny_weights):
    with pytest.raises(restyle.InputError, match="texture width 10 is out of range"):
        synthesize(small_images[1], (10, 64), weights=tiny_weights)


def seam_ratio(img: Image.Image) -> float:
    """Mean jump across the wrap-around seams over the mean jump between neighbours inside."""
    x = to_tensor(img)[0]
    seam = (x[:, :, 0] - x[:, :, -1]).abs().mean() + (x[:, 0] - x[:, -1]).abs().mean()
    inner = (x[:, :, 1:] - x[:, :, :-1]).abs().mean() + (x[:, 1:] - x[:, :-1]).abs().mean()
    return (seam / inner).item()


@pytest.mark.weights
def test_texture_matches_the_style_and_tiles_seamlessly(small_images):
    s = small_images[1]
    losses = []
    # The classic loss (unscaled Gram, TV 1e-3), so "moved far" has the meaning it was written with.
    cfg = StylizeConfig(iterations=20, precision="fp32", style_norm="none", tv_weight=1e-3)
    tiled = synthesize(s, (64, 64), cfg, tile=True,
                       callback=lambda e: losses.append(e.loss) if isinstance(e, Iterate) else None)
    plain = synthesize(s, (64, 64), cfg)
    assert losses[-1] < 0.2 * losses[0]  # it moved far from the starting noise towards the style
    assert seam_ratio(tiled.image) < 1.0 and seam_ratio(tiled.image) < 0.9 * seam_ratio(plain.image)


def _texture(tmp_path, style, weights, *flags):
    out = tmp_path / "t.png"
    return main(["texture", str(style), "-o", str(out), "--size", "96x64", "--iterations", "2",
                 "--weights", str(weights), "--quiet", *flags]), out


def test_texture_honours_tile_size_and_max_memory(small_images, tiny_weights, tmp_path, capsys, monkeypatch):
    """--tile-size renders the texture in tiles through the one loop (the tiles are seen by the network)."""
    import restyle.optimiser.loop as loop

    shapes = []
    real = loop.tiled_loss_and_grad

    def spy(obj, x, tiles, **kw):
        shapes.append(len(tiles))
        return real(obj, x, tiles, **kw)

    monkeypatch.setattr(loop, "tiled_loss_and_grad", spy)
    code, out = _texture(tmp_path, small_images[1], tiny_weights, "--tile-size", "64", "--scales", "1")
    assert code == 0, capsys.readouterr().err
    plan = json.loads(out.with_name(out.name + ".json").read_text())["memory_plan"]
    assert plan["stages"][0]["tile"] == 64 and shapes and all(n >= 2 for n in shapes)
    assert Image.open(out).size == (96, 64)
    # A budget nothing fits in: refused before any work, naming the budget.
    code, _ = _texture(tmp_path, small_images[1], tiny_weights, "--max-memory", "0.01")
    assert code == 1 and "over the memory budget of 0.0 GB" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (("--style-blend-weights", "1,2"), "style_blend_weights (1.0, 2.0) has no meaning for a texture"),
    (("--tile", "--tile-size", "64"), "tile_size 64 cannot be combined with a tileable texture (--tile)"),
    (("--precision", "fp16", "--device", "cpu"), "precision 'fp16' is not supported on the CPU"),
])
def test_texture_refuses_in_one_line_what_it_cannot_honour(small_images, tiny_weights, tmp_path, capsys, flags,
                                                           message):
    code, out = _texture(tmp_path, small_images[1], tiny_weights, *flags)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_texture_reads_only_the_style_layers(small_images, tiny_weights, monkeypatch):
    """No content term, so no content layer is ever computed (it used to run with a zero weight)."""
    from restyle.optimiser.engine import Painter

    asked = set()
    real = Painter.features
    monkeypatch.setattr(Painter, "features", lambda self, x, layers: asked.update(layers) or real(self, x, layers))
    cfg = StylizeConfig(iterations=2, style_layers=("relu1_1", "relu2_1"))
    r = synthesize(small_images[1], (48, 48), cfg, weights=tiny_weights)
    assert asked == {"relu1_1", "relu2_1"} and set(r.report["final_loss"]) == {"style", "tv"}
