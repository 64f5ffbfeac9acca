import pytest
import torch

from restyle.config import StylizeConfig
from restyle.optimiser.engine import run
from restyle.errors import ResourceError
from restyle.optimiser.objective import Objective, Sources, TilingError, build_terms
from restyle.optimiser.tiling import (TileSpec, boundaries, default_margin, full_receptive_margin, random_offset, tile_grid,
                            tiled_grams, tiled_loss_and_grad)
from restyle.optimiser.losses import gram


def test_cores_partition_the_image_and_tiles_hold_their_cores():
    for off in [(0, 0), (16, 48), (80, 32)]:
        tiles = tile_grid(200, 264, 96, 32, off)
        cover = torch.zeros(200, 264, dtype=torch.int)
        for t in tiles:
            cover[t.cy0:t.cy1, t.cx0:t.cx1] += 1
            assert t.y0 <= t.cy0 < t.cy1 <= t.y1 and t.x0 <= t.cx0 < t.cx1 <= t.x1
            assert t.cy0 % 16 == 0 and t.cx0 % 16 == 0
        assert bool((cover == 1).all())


def test_boundaries_merge_slivers():
    assert boundaries(200, 96, 0) == [0, 96, 200]
    assert boundaries(200, 96, 16) == [0, 112, 200]


def test_grid_shift_changes_every_evaluation():
    g = torch.Generator().manual_seed(0)
    offsets = [random_offset(g, 256, 16) for _ in range(8)]
    assert len(set(offsets)) > 4 and all(o % 16 == 0 and 0 <= o < 256 for off in offsets for o in off)


def _images(h=136, w=200):
    g = torch.Generator().manual_seed(1)
    c = torch.rand(1, 3, h, w, generator=g) * 255
    s = torch.rand(1, 3, h, w, generator=g) * 255
    x = (c + 30 * torch.randn(1, 3, h, w, generator=g)).requires_grad_(True)
    return x, c, s


def _targets(painter, cfg, h=136, w=200, tile=None):
    x, c, s = _images(h, w)
    return x, Objective(build_terms(cfg, Sources(content=c, styles=[s], blend=[1.0])), painter).prepare(tile)


def test_tiled_grams_equal_the_whole_image_grams(painter):
    cfg = StylizeConfig(precision="fp32")
    x, _ = _targets(painter, cfg)
    feats = painter.features(x.detach(), cfg.style_layers)
    tiles = tile_grid(136, 200, 48, full_receptive_margin("relu5_1"), (16, 32))
    grams, maps = tiled_grams(painter, x.detach(), cfg.style_layers, tiles, keep=("relu4_2",))
    for n in cfg.style_layers:
        assert grams[n].shape == gram(feats[n]).shape
        torch.testing.assert_close(grams[n], gram(feats[n]), rtol=1e-4, atol=1e-6)
    whole = painter.features(x.detach(), ("relu4_2",))["relu4_2"]
    torch.testing.assert_close(maps["relu4_2"], whole.float(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("offset", [(0, 0), (32, 48)])
def test_tiled_loss_and_gradient_equal_the_untiled_ones(painter, offset):
    """With a margin covering the receptive field the maths says they are equal: the surrogate's
    gradient is the full loss's, and the tiles' cores partition the feature maps."""
    cfg = StylizeConfig(precision="fp32")
    x, t = _targets(painter, cfg)
    loss, terms = t(x)
    loss.backward()
    tiles = tile_grid(136, 200, 64, full_receptive_margin("relu5_1"), offset)
    assert len(tiles) >= 4
    tl, tterms, grad = tiled_loss_and_grad(t, x, tiles)
    assert set(tterms) == set(terms) == {"content", "style", "tv"}
    assert float(tl) == pytest.approx(float(loss), rel=1e-4)
    for k in terms:
        assert tterms[k] == pytest.approx(terms[k], rel=1e-4)
    torch.testing.assert_close(grad, x.grad, rtol=1e-3, atol=1e-3 * float(x.grad.abs().max()))


def test_no_gradient_jump_at_tile_boundaries_with_a_short_margin(painter):
    """With margin 0 (worst case) tile edges distort the gradient; with the default margin the
    error at core boundaries is no larger than anywhere else, i.e. there is no seam to paint."""
    cfg = StylizeConfig(precision="fp32")
    x, t = _targets(painter, cfg)
    loss, _ = t(x)
    loss.backward()
    tiles = tile_grid(136, 200, 64, default_margin(cfg.content_layers + cfg.style_layers), (0, 0))
    _, _, grad = tiled_loss_and_grad(t, x, tiles)
    err = (grad - x.grad).abs().sum(1)[0]
    cuts = sorted({tt.cx0 for tt in tiles} - {0})
    at_seams = torch.stack([err[:, c - 2:c + 2].mean() for c in cuts]).max()
    assert float(at_seams) <= 1e-3 * float(x.grad.abs().mean()) + 2 * float(err.mean())


def test_tiled_run_shifts_the_grid_every_iteration_and_finishes(small_images, tiny_weights, monkeypatch):
    import restyle.optimiser.loop as loop

    seen = []
    real = loop.tile_grid

    def spy(h, w, core, margin, offset=(0, 0)):
        seen.append(offset)
        return real(h, w, core, margin, offset)

    monkeypatch.setattr(loop, "tile_grid", spy)
    c, s = small_images
    r = run(c, s, StylizeConfig(size=96, iterations=5, scales=(1,), tile_size=64), weights=tiny_weights)
    assert r.image.size == (96, 77)
    assert r.report["memory_plan"]["stages"][0]["tile"] == 64
    per_iteration = seen[-5:]
    assert len(set(per_iteration)) > 1


def test_targets_prepared_tile_by_tile_equal_the_whole_image_ones(painter):
    """Content maps and style Grams computed in tiles (margin covering the receptive field) are the same targets."""
    cfg = StylizeConfig(precision="fp32")
    x, whole = _targets(painter, cfg)
    _, tiled = _targets(painter, cfg, tile=TileSpec(64, full_receptive_margin("relu5_1")))
    content_w, style_w = whole.terms[0], whole.terms[1]
    content_t, style_t = tiled.terms[0], tiled.terms[1]
    for n in cfg.content_layers:
        torch.testing.assert_close(content_t.target[n], content_w.target[n], rtol=1e-4, atol=1e-4)
    for n in cfg.style_layers:
        torch.testing.assert_close(style_t.target[n], style_w.target[n], rtol=1e-4, atol=1e-6)


def test_the_guided_style_term_refuses_tiles_by_name(painter, small_images, tiny_weights, tmp_path):
    from PIL import Image

    x, c, s = _images()
    mask = torch.ones(1, 1, 136, 200)
    obj = Objective(build_terms(StylizeConfig(), Sources(content=c, styles=[s], blend=[1.0], masks=[mask])), painter)
    with pytest.raises(TilingError, match="style term \\(--mask\\) cannot be computed tile by tile"):
        obj.check_tileable()
    with pytest.raises(TilingError):
        tiled_loss_and_grad(obj.prepare(), x, tile_grid(136, 200, 64, 32))
    cp, sp = small_images
    Image.new("L", (80, 64), 255).save(tmp_path / "m.png")
    cfg = StylizeConfig(size=96, iterations=2, scales=(1,), tile_size=64, mask=(str(tmp_path / "m.png"),))
    with pytest.raises(ResourceError, match="--mask.*tile by tile, which 96x77 px needs here"):
        run(cp, sp, cfg, weights=tiny_weights)
