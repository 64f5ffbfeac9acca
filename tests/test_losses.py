import pytest
import torch

from restyle.config import StylizeConfig
from restyle.models.layers import LAYERS
from restyle.optimiser.losses import (
    STYLE_NORM_REF, TARGET_DEEP_WEIGHTS, content_loss, default_layer_weights, effective_layer_shares, gram,
    style_layer_scales, style_loss, tv_loss, wrap_tv_loss,
)
from restyle.optimiser.objective import GramStyleTerm


def naive_gram(f):
    _, c, h, w = f.shape
    g = torch.zeros(c, c, dtype=torch.float64)
    for i in range(c):
        for j in range(c):
            s = 0.0
            for y in range(h):
                for x in range(w):
                    s += float(f[0, i, y, x]) * float(f[0, j, y, x])
            g[i, j] = s / (c * h * w)
    return g


def test_gram_matches_explicit_loops():
    f = torch.randn(1, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    assert gram(f).shape == (1, 3, 3)
    assert torch.allclose(gram(f)[0].double(), naive_gram(f), atol=1e-6)


def test_gram_is_float32_and_symmetric_from_bf16():
    f = torch.rand(1, 6, 8, 8).to(torch.bfloat16)
    g = gram(f)
    assert g.dtype == torch.float32
    assert torch.allclose(g, g.transpose(1, 2))


def test_gram_ignores_layout():
    f = torch.randn(1, 4, 6, 6)
    perm = torch.randperm(36)
    shuffled = f.reshape(1, 4, 36)[:, :, perm].reshape(1, 4, 6, 6)
    assert torch.allclose(gram(f), gram(shuffled), atol=1e-6)


def test_masked_gram_with_full_mask_equals_gram_and_half_mask_selects():
    f = torch.randn(1, 3, 4, 4)
    assert torch.allclose(gram(f, torch.ones(1, 1, 4, 4)), gram(f), atol=1e-6)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1
    left = f[..., :2]
    assert torch.allclose(gram(f, mask), gram(left), atol=1e-6)


def test_content_loss_on_2x2_example():
    f = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    p = torch.tensor([[[[1.0, 0.0], [3.0, 1.0]]]])
    # mean of squared errors: (0 + 4 + 0 + 9) / 4
    assert content_loss(f, p).item() == pytest.approx(13 / 4)


def test_style_loss_is_mean_squared_gram_error():
    a = torch.tensor([[1.0, 2.0], [2.0, 5.0]])
    g = torch.tensor([[0.0, 2.0], [2.0, 3.0]])
    assert style_loss(g, a).item() == pytest.approx((1 + 0 + 0 + 4) / 4)
    assert style_loss(a, a).item() == 0


def test_tv_loss_matches_naive_sum():
    x = torch.randn(1, 3, 5, 4)
    s = 0.0
    for c in range(3):
        for y in range(5):
            for xx in range(4):
                if xx + 1 < 4:
                    s += float(x[0, c, y, xx + 1] - x[0, c, y, xx]) ** 2
                if y + 1 < 5:
                    s += float(x[0, c, y + 1, xx] - x[0, c, y, xx]) ** 2
    assert tv_loss(x).item() == pytest.approx(0.5 * s, rel=1e-5)
    assert tv_loss(torch.full((1, 3, 5, 4), 7.0)).item() == 0


def test_losses_have_gradients():
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    (gram(x).sum() + tv_loss(x) + content_loss(x, torch.zeros_like(x))).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_target_style_norm_makes_the_loss_a_relative_error():
    g = torch.Generator().manual_seed(0)
    t = {"a": torch.rand(4, 4, generator=g), "b": 1000 * torch.rand(8, 8, generator=g)}
    assert style_layer_scales(t, ("a", "b"), "none") == {"a": 1.0, "b": 1.0}
    k = style_layer_scales(t, ("a", "b"), "target")
    assert k["a"] == pytest.approx(STYLE_NORM_REF / float(t["a"].pow(2).mean()), rel=1e-6)
    # The same relative error costs the same on a layer (or painting) with 1000x larger Gram matrices.
    la = k["a"] * style_loss(1.1 * t["a"], t["a"])
    lb = k["b"] * style_loss(1.1 * t["b"], t["b"])
    assert float(la) == pytest.approx(STYLE_NORM_REF * 0.01, rel=1e-4) and float(lb) == pytest.approx(float(la), rel=1e-4)


def test_gram_is_batch_first_per_sample():
    f = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(2))
    g = gram(f)
    assert g.shape == (3, 4, 4)
    for n in range(3):
        torch.testing.assert_close(g[n].double(), naive_gram(f[n:n + 1]), atol=1e-6, rtol=1e-6)
    # One mask per sample: each sample's Gram is taken over its own region.
    masks = torch.zeros(3, 1, 5, 6)
    masks[0, ..., :3] = 1
    masks[1, ..., 3:] = 1
    masks[2] = 1
    gm = gram(f, masks)
    torch.testing.assert_close(gm[0], gram(f[:1, ..., :3])[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gm[1], gram(f[1:2, ..., 3:])[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gm[2], g[2], atol=1e-6, rtol=1e-5)


def test_gram_stays_float32_under_bf16_autocast():
    f = torch.randn(2, 8, 16, 16)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        g = gram(f)
        loss = style_loss(g, torch.zeros(8, 8))
    assert g.dtype == torch.float32 and loss.dtype == torch.float32
    torch.testing.assert_close(g, gram(f))  # not rounded to bf16's 8-bit mantissa


def test_losses_are_batch_means():
    x = torch.randn(4, 3, 6, 5, generator=torch.Generator().manual_seed(3))
    t = torch.randn(4, 3, 6, 5, generator=torch.Generator().manual_seed(4))
    each = [(tv_loss(x[n:n + 1]), content_loss(x[n:n + 1], t[n:n + 1]), wrap_tv_loss(x[n:n + 1])) for n in range(4)]
    for k, f in enumerate((tv_loss, lambda a: content_loss(a, t), wrap_tv_loss)):
        assert f(x).item() == pytest.approx(sum(e[k].item() for e in each) / 4, rel=1e-5)
    gx, gt = gram(x), gram(t)
    assert style_loss(gx, gt).item() == pytest.approx(
        sum(style_loss(gx[n], gt[n]).item() for n in range(4)) / 4, rel=1e-5)


def test_wrap_tv_is_the_seam_differences():
    x = torch.zeros(1, 1, 3, 4)
    x[..., :, 0] = 2.0  # first column 2, last 0: each of 3 rows differs by 2 across the seam
    assert wrap_tv_loss(x).item() == pytest.approx(0.5 * 3 * 4)


def test_gram_gradient_matches_autograd_of_the_plain_product():
    # gram's backward is one product F (dG + dG^T); autograd of f^T f (in float64) is the reference,
    # for channels_last and plain layouts and a non-symmetric upstream gradient.
    g = torch.Generator().manual_seed(3)
    for layout in (torch.contiguous_format, torch.channels_last):
        f = torch.randn(2, 5, 4, 6, generator=g).contiguous(memory_format=layout).requires_grad_(True)
        up = torch.randn(2, 5, 5, generator=g)
        (gram(f) * up).sum().backward()
        ref = f.detach().double().requires_grad_(True)
        v = ref.reshape(2, 5, 24)
        ((v @ v.transpose(1, 2) / 120) * up.double()).sum().backward()
        torch.testing.assert_close(f.grad.double(), ref.grad, atol=1e-6, rtol=1e-6)


def test_gram_gradient_of_bf16_features_is_bf16_and_close_to_float32():
    g = torch.Generator().manual_seed(4)
    f32 = torch.randn(1, 16, 12, 12, generator=g).contiguous(memory_format=torch.channels_last)
    target = torch.randn(1, 16, 16, generator=g) * 0.1
    grads = []
    for dtype in (torch.float32, torch.bfloat16):
        f = f32.to(dtype).detach().requires_grad_(True)
        style_loss(gram(f), target).backward()
        assert f.grad.dtype == dtype
        grads.append(f.grad.float())
    # bf16 rounding of the features and of dG: well under 2% of the gradient's norm.
    assert float((grads[0] - grads[1]).norm() / grads[0].norm()) < 0.02


def test_content_loss_gradient_matches_the_formula():
    f = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(5)).requires_grad_(True)
    p = torch.randn(1, 3, 4, 5, generator=torch.Generator().manual_seed(6))  # one target for the batch
    content_loss(f, p).backward()
    torch.testing.assert_close(f.grad, 2 * (f.detach() - p) / f.numel())


def test_tv_gradient_matches_autograd_of_the_formula():
    # tv_loss writes its gradient out; autograd of the slices and squares (float64) is the reference.
    x = (torch.rand(2, 3, 7, 9, generator=torch.Generator().manual_seed(7)) * 255).requires_grad_(True)
    (tv_loss(x) * 3.0).backward()
    ref = x.detach().double().requires_grad_(True)
    dx, dy = ref[..., :, 1:] - ref[..., :, :-1], ref[..., 1:, :] - ref[..., :-1, :]
    (1.5 * (dx.pow(2).sum() + dy.pow(2).sum()) / 2).backward()
    torch.testing.assert_close(x.grad.double(), ref.grad, atol=1e-5, rtol=1e-5)  # float32 rounding


# Gram mean squares of Lady in Blue (Gainsborough) at 256 px, per style layer: relu5_1's are
# the smallest of all (issue 25), so the "target" normalisation multiplies its error the most.
LADY_IN_BLUE_MS = {"relu1_1": 4.2e2, "relu2_1": 1.35e4, "relu3_1": 3.2e3, "relu4_1": 2.6e5, "relu5_1": 38.0}


def _targets(ms):
    """Gram-like targets with the given mean squares (a constant c has mean square c^2)."""
    return {n: torch.full((1, 4, 4), v ** 0.5) for n, v in ms.items()}


def test_target_shares_are_the_layer_weights_whatever_the_magnitudes():
    # w_l k_l mean(T_l^2) with k_l = REF / mean(T_l^2): the magnitudes cancel, by hand.
    layers = tuple(LADY_IN_BLUE_MS)
    weights = (1.0, 2.0, 1.0, 1.0, 0.5)
    shares = effective_layer_shares(_targets(LADY_IN_BLUE_MS), layers, weights, "target")
    for n, w in zip(layers, weights):
        assert shares[n] == pytest.approx(w / sum(weights), rel=1e-5)
    # The classic loss instead weighs each layer by its magnitude: relu4_1 nearly alone.
    none = effective_layer_shares(_targets(LADY_IN_BLUE_MS), layers, (1.0,) * 5, "none")
    assert none["relu4_1"] == pytest.approx(2.6e5 / sum(LADY_IN_BLUE_MS.values()), rel=1e-5)
    assert none["relu5_1"] < 1e-3


def test_default_weights_bound_the_deepest_layer_under_target_norm():
    """Issue 25: relu5_1 weighted like the other layers pasted a portrait's face into the photo.

    The optimiser's own term, built from the default config, must give block 5 at most 5% of the
    style loss's weight on a relative error (its push on the pixels per unit weight is 3-8x
    relu4_1's), and the four shallower layers equal shares.
    """
    cfg = StylizeConfig()
    assert cfg.style_norm == "target" and "relu5_1" in cfg.style_layers
    term = GramStyleTerm(cfg.style_weight, cfg.style_layers, cfg.style_layer_weights, [], [], cfg.style_norm)
    ms = {n: LADY_IN_BLUE_MS[n] for n in cfg.style_layers}
    term.scales = style_layer_scales(_targets(ms), cfg.style_layers, cfg.style_norm)
    raw = {n: w * ms[n] for n, w in zip(cfg.style_layers, term.scaled_weights())}
    shares = {n: v / sum(raw.values()) for n, v in raw.items()}
    deep = sum(v for n, v in shares.items() if LAYERS[n].block == 5)
    assert 0 < deep <= 0.05
    shallow = [v for n, v in shares.items() if LAYERS[n].block < 5]
    assert max(shallow) == pytest.approx(min(shallow))


def test_default_weights_only_change_deep_layers_under_target():
    layers = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    assert default_layer_weights(layers, "none") == (1.0,) * 5  # the paper's loss: equal weights
    assert default_layer_weights(layers[:4], "target") == (1.0,) * 4  # the networks' training layers: as before
    assert default_layer_weights(("relu5_1", "relu5_4"), "target") == (TARGET_DEEP_WEIGHTS[5],) * 2
    explicit = GramStyleTerm(1.0, layers, (1.0,) * 5, [], [], "target")
    assert explicit.layer_weights == (1.0,) * 5  # given weights are used as given
