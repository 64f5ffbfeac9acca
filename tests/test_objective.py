"""Terms against naive references, the registry, zero-weight terms, the layer union and the target cache."""
import pytest
import torch

from restyle.config import StylizeConfig
from restyle.optimiser.objective import (TERMS, ContentTerm, GramStyleTerm, GuidedStyleTerm, Objective, Sources, TargetCache,
                               Term, TVTerm, build_terms)
from restyle.optimiser.tiling import TileSpec, full_receptive_margin, tile_grid, tiled_loss_and_grad


def _img(seed, h=64, w=80):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 255


def naive_gram(f, m=None):
    """float64 sum over positions of f_i f_j (weighted by m), divided by C * (positions or mask mass)."""
    f = f[0].double()
    c = f.shape[0]
    w = torch.ones(f.shape[1:], dtype=torch.float64) if m is None else m[0, 0].double()
    g = torch.zeros(c, c, dtype=torch.float64)
    for i in range(c):
        for j in range(c):
            g[i, j] = (f[i] * f[j] * w).sum()
    return g / (c * w.sum())


def test_content_term_is_the_mean_squared_feature_error(painter):
    p, x = _img(1), _img(2)
    term = ContentTerm(5.0, ("relu2_2", "relu4_2"), p)
    term.prepare(painter)
    fx, fp = painter.features(x, term.layers), painter.features(p, term.layers)
    want = 5.0 * sum(((fx[n].double() - fp[n].double()) ** 2).mean() for n in term.layers)
    assert term(fx, x).item() == pytest.approx(float(want), rel=1e-5)


def test_gram_style_term_matches_blended_naive_grams(painter):
    s1, s2, x = _img(3), _img(4, 48, 48), _img(5)
    layers, lw, blend = ("relu1_1", "relu3_1"), (0.3, 2.0), (0.25, 0.75)
    term = GramStyleTerm(100.0, layers, lw, [s1, s2], blend)
    term.prepare(painter)
    fx, f1, f2 = (painter.features(t, layers) for t in (x, s1, s2))
    want = 100.0 * sum(
        w * ((naive_gram(fx[n]) - (blend[0] * naive_gram(f1[n]) + blend[1] * naive_gram(f2[n]))) ** 2).mean()
        for n, w in zip(layers, lw))
    assert term(fx, x).item() == pytest.approx(float(want), rel=1e-4)


def test_target_norm_divides_each_layer_by_its_target_mean_square(painter):
    from restyle.optimiser.losses import STYLE_NORM_REF

    s, x = _img(3), _img(5)
    layers = ("relu1_1", "relu3_1")
    plain = GramStyleTerm(100.0, layers, None, [s], [1.0])
    normed = GramStyleTerm(100.0, layers, None, [s], [1.0], norm="target")
    plain.prepare(painter)
    normed.prepare(painter)
    fx, fs = painter.features(x, layers), painter.features(s, layers)
    want = 100.0 * sum(float(((naive_gram(fx[n]) - naive_gram(fs[n])) ** 2).mean())
                       * STYLE_NORM_REF / float((naive_gram(fs[n]) ** 2).mean()) for n in layers)
    assert normed(fx, x).item() == pytest.approx(want, rel=1e-4)
    assert plain.scaled_weights() == (1.0, 1.0) and normed(fx, x).item() != pytest.approx(plain(fx, x).item())


def test_config_builds_the_style_term_with_strength_and_norm():
    src = Sources(content=_img(1), styles=[_img(2)], blend=[1.0])
    cfg = StylizeConfig(style_weight=50, style_strength=3, style_norm="target")
    term = next(t for t in build_terms(cfg, src) if t.name == "style")
    assert term.weight == 150 and term.norm == "target"
    term = next(t for t in build_terms(StylizeConfig(style_norm="none"), src) if t.name == "style")
    assert term.weight == 100 and term.norm == "none"
    assert [t.name for t in build_terms(StylizeConfig(style_strength=0), src)] == ["content", "tv"]


def test_guided_style_term_matches_masked_naive_grams(painter):
    s1, s2, x = _img(6), _img(7), _img(8)
    left = torch.zeros(1, 1, 64, 80)
    left[..., :40] = 1
    masks = [left, 1 - left]
    layers = ("relu1_1", "relu2_1")
    term = GuidedStyleTerm(10.0, layers, None, [s1, s2], [0.5, 0.5], masks)
    term.prepare(painter)
    fx, f1, f2 = (painter.features(t, layers) for t in (x, s1, s2))
    want = 0.0
    for mask, fs in zip(masks, (f1, f2)):
        region = 0.5 * 2 * float(mask.mean())
        for n in layers:
            m = torch.nn.functional.adaptive_avg_pool2d(mask, fx[n].shape[-2:])
            want += region * float(((naive_gram(fx[n], m) - naive_gram(fs[n])) ** 2).mean())
    assert term(fx, x).item() == pytest.approx(10.0 * want, rel=1e-4)


def test_tv_term_matches_explicit_differences_and_wraps_on_a_torus():
    x = _img(9, 6, 5)
    d = x.double()
    inner = ((d[..., 1:, :] - d[..., :-1, :]) ** 2).sum() + ((d[..., :, 1:] - d[..., :, :-1]) ** 2).sum()
    seams = ((d[..., :1, :] - d[..., -1:, :]) ** 2).sum() + ((d[..., :, :1] - d[..., :, -1:]) ** 2).sum()
    assert TVTerm(0.01)({}, x).item() == pytest.approx(0.005 * float(inner), rel=1e-5)
    assert TVTerm(0.01, wrap=True)({}, x).item() == pytest.approx(0.005 * float(inner + seams), rel=1e-5)


def test_registry_builds_only_terms_that_apply_and_weigh_something():
    c, s = _img(1), _img(2)
    src = Sources(content=c, styles=[s], blend=[1.0])
    assert [type(t) for t in build_terms(StylizeConfig(), src)] == [ContentTerm, GramStyleTerm, TVTerm]
    assert [t.name for t in build_terms(StylizeConfig(content_weight=0, tv_weight=0), src)] == ["style"]
    assert [t.name for t in build_terms(StylizeConfig(style_weight=0), src)] == ["content", "tv"]
    masked = Sources(content=c, styles=[s], blend=[1.0], masks=[torch.ones(1, 1, 64, 80)])
    assert [type(t) for t in build_terms(StylizeConfig(), masked)] == [ContentTerm, GuidedStyleTerm, TVTerm]
    texture = Sources(styles=[s], blend=[1.0], wrap=True)
    terms = build_terms(StylizeConfig(), texture)
    assert [t.name for t in terms] == ["style", "tv"] and terms[1].wrap
    assert list(TERMS) == ["content", "style", "guided_style", "tv"]


def test_a_new_term_is_one_class_and_one_registry_line(painter):
    class MeanTerm(Term):
        """Pull the image's mean towards mid-grey (an example term, pixels only)."""

        name = "mean"

        @classmethod
        def build(cls, cfg, src):
            return cls(2.0)

        def loss(self, feats, x):
            return (x.float().mean() - 127.5) ** 2 * self.weight

    terms = build_terms(StylizeConfig(), Sources(content=_img(1), styles=[_img(2)], blend=[1.0]),
                        registry={**TERMS, "mean": MeanTerm})
    obj = Objective(terms, painter).prepare()
    x = _img(3)
    total, parts = obj(x)
    assert set(parts) == {"content", "style", "tv", "mean"}
    assert parts["mean"] == pytest.approx(2.0 * (float(x.mean()) - 127.5) ** 2, rel=1e-5)
    assert float(total) == pytest.approx(sum(parts.values()), rel=1e-6)


def test_objective_asks_the_network_once_for_the_union_of_layers(painter):
    calls = []
    real = painter.features

    def spy(x, layers):
        calls.append(tuple(layers))
        return real(x, layers)

    cfg = StylizeConfig(content_layers=("relu4_2",), style_layers=("relu1_1", "relu4_2", "relu2_1"))
    obj = Objective(build_terms(cfg, Sources(content=_img(1), styles=[_img(2)], blend=[1.0])), painter).prepare()
    painter.features = spy
    obj(_img(3))
    assert calls == [("relu1_1", "relu2_1", "relu4_2")]
    # A style-only objective never computes the content layer.
    style_only = Objective(build_terms(cfg.replace(content_weight=0.0), Sources(content=_img(1), styles=[_img(2)],
                                                                              blend=[1.0])), painter)
    painter.features = real
    style_only.prepare()
    painter.features = spy
    style_only(_img(3))
    assert calls[-1] == ("relu1_1", "relu2_1", "relu4_2") and style_only.layers == ("relu1_1", "relu2_1", "relu4_2")
    no_deep = Objective(build_terms(StylizeConfig(style_layers=("relu1_1",), content_weight=0.0),
                                    Sources(styles=[_img(2)], blend=[1.0])), painter)
    assert no_deep.layers == ("relu1_1",)


def test_losses_are_batch_means(painter):
    cfg = StylizeConfig()
    obj = Objective(build_terms(cfg, Sources(content=_img(1), styles=[_img(2)], blend=[1.0])), painter).prepare()
    a, b = _img(3), _img(4)
    _, pa = obj(a)
    _, pb = obj(b)
    _, pab = obj(torch.cat([a, b]))
    for k in pab:
        assert pab[k] == pytest.approx((pa[k] + pb[k]) / 2, rel=1e-4)


def test_style_targets_are_cached_under_the_pixels_layers_and_tiling(painter):
    cache = TargetCache()
    s = _img(2)
    cfg = StylizeConfig()
    for _ in range(2):
        Objective(build_terms(cfg, Sources(content=_img(1), styles=[s], blend=[1.0])), painter).prepare(cache=cache)
    assert (cache.misses, cache.hits) == (1, 1)
    recoloured = s.flip(1)  # same path, size and layers, other pixels: must not hit
    Objective(build_terms(cfg, Sources(content=_img(1), styles=[recoloured], blend=[1.0])), painter).prepare(cache=cache)
    Objective(build_terms(cfg.replace(style_layers=("relu1_1",)), Sources(styles=[s], blend=[1.0])),
              painter).prepare(cache=cache)
    Objective(build_terms(cfg, Sources(styles=[s], blend=[1.0])), painter).prepare(TileSpec(64, 32), cache)
    assert (cache.misses, cache.hits) == (4, 1)


@pytest.mark.parametrize("name", ["content", "style", "tv"])
def test_each_tileable_term_tiled_equals_untiled(painter, name):
    """With a margin covering the receptive field, a term's tiled value and gradient are its untiled ones."""
    c, s = _img(1, 136, 200), _img(2, 136, 200)
    terms = [t for t in build_terms(StylizeConfig(), Sources(content=c, styles=[s], blend=[1.0])) if t.name == name]
    obj = Objective(terms, painter).prepare()
    x = (c + 30 * torch.randn(1, 3, 136, 200, generator=torch.Generator().manual_seed(3))).requires_grad_(True)
    loss, _ = obj(x)
    loss.backward()
    tiles = tile_grid(136, 200, 64, full_receptive_margin("relu5_1"), (16, 32))
    tl, parts, grad = tiled_loss_and_grad(obj, x, tiles)
    assert list(parts) == [name]
    assert float(tl) == pytest.approx(float(loss.detach()), rel=1e-4)
    torch.testing.assert_close(grad, x.grad, rtol=1e-3, atol=1e-3 * float(x.grad.abs().max()))


@pytest.mark.weights
def test_default_relu5_1_pushes_the_pixels_less_than_relu4_1():
    """Issue 25, on the real network: weighted like the others under "target", relu5_1 pushed the
    pixels several times harder than relu4_1 (its Gram matrices are the smallest, so its relative
    error is multiplied the most) and pasted a portrait's face into the photo; the default weighs it
    down to a fraction of relu4_1's push. The Starry Night on Tübingen at 128 px, from the photo."""
    from pathlib import Path

    from restyle.optimiser.engine import make_painter
    from restyle.images import load_image, resize, to_tensor
    from restyle.optimiser.losses import gram, style_layer_scales, style_loss

    examples = Path(__file__).resolve().parents[1] / "examples"
    cfg = StylizeConfig()
    painter = make_painter(cfg)
    style = to_tensor(resize(load_image(examples / "starry_night.jpg"), 128), painter.device)
    photo = to_tensor(resize(load_image(examples / "tubingen.jpg"), 128), painter.device).requires_grad_(True)
    term = GramStyleTerm(cfg.style_weight, cfg.style_layers, cfg.style_layer_weights, [style], [1.0], cfg.style_norm)
    term.prepare(painter)
    assert term.scales == style_layer_scales(term.target, cfg.style_layers, "target")
    feats = painter.features(photo, cfg.style_layers)
    push = {}
    for n, w in zip(cfg.style_layers, term.scaled_weights()):
        (g,) = torch.autograd.grad(w * style_loss(gram(feats[n]), term.target[n]), photo, retain_graph=True)
        push[n] = float(g.norm()) / (w / term.scales[n])  # per unit of the layer's own weight w_l
    equal = push["relu5_1"] / push["relu4_1"]  # both weighted 1, the old default: 2.4 here
    assert equal > 1.5
    default = equal * term.layer_weights[4] / term.layer_weights[3]  # 0.07 here
    assert default < 0.25
