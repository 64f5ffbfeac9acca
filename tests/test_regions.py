"""Region masks and guided Gram matrices (Gatys et al. 2017, Sec. 3)."""

import numpy as np
import pytest
import torch
from PIL import Image

import restyle
from restyle.config import StylizeConfig
from restyle.device import network
from restyle.optimiser.engine import Painter
from restyle.errors import InputError
from restyle.models.vgg import VGG19Features
from restyle.images import to_tensor
from restyle.optimiser.losses import gram, style_loss
from restyle.optimiser.regions import layer_masks, layer_size, load_masks, mask_tensor, split_labels
from restyle.models.weights import load_weights


def save(arr, path):
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)
    return path


def halves(tmp_path, size=(80, 64)):
    w, h = size
    left = np.zeros((h, w), np.uint8)
    left[:, : w // 2] = 255
    return save(left, tmp_path / "left.png"), save(255 - left, tmp_path / "right.png")


def test_label_image_colours_map_to_styles_darkest_first():
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[:, 3:] = (255, 255, 255)
    rgb[0, 0] = (200, 10, 10)  # a stray colour, less frequent than the two labels
    a, b = split_labels(Image.fromarray(rgb), 2)
    a, b = np.asarray(a), np.asarray(b)
    assert (a[1:, :3] == 255).all() and (a[:, 3:] == 0).all() and a[0, 0] > 200  # red is nearer black
    assert (b == 255 - a).all()
    soft = np.zeros((4, 5, 3), np.uint8)  # black, black, gray, white, white
    soft[:, 2] = 128
    soft[:, 3:] = 255
    a, b = (np.asarray(m)[0, ::2] for m in split_labels(Image.fromarray(soft), 2))
    assert a[0] == 255 and b[2] == 255 and 100 < a[1] < 155 and a[1] + b[1] in (254, 255, 256)  # gray blends
    with pytest.raises(InputError, match="1 distinct colour"):
        split_labels(Image.new("RGB", (4, 4), "red"), 2)


def test_mask_count_and_aspect_are_checked(tmp_path):
    l, r = halves(tmp_path)
    with pytest.raises(InputError, match="3 mask\\(s\\) for 2 style"):
        load_masks([l, r, l], 2, (80, 64))
    with pytest.raises(InputError, match="aspect ratio"):
        load_masks([l, r], 2, (64, 80))
    with pytest.raises(InputError, match="one label image for two or more"):
        load_masks([l, r], 1, (80, 64))
    masks = load_masks([l], 2, (160, 128))  # one label image, resized to the content
    assert [m.size for m in masks] == [(160, 128)] * 2


def test_masks_shrink_to_each_layer_with_soft_edges(tiny_weights):
    net = VGG19Features.from_weights(load_weights(tiny_weights), "relu5_1")
    x = torch.rand(1, 3, 51, 77) * 255
    layers = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    feats = net(x, layers)
    m = torch.zeros(1, 1, 51, 77)
    m[..., :, :38] = 1
    lm = layer_masks(m, layers)
    for name in layers:
        assert lm[name].shape[-2:] == feats[name].shape[-2:] == layer_size(name, 51, 77)
    soft = lm["relu3_1"][0, 0, 0]
    assert soft.max() == 1 and soft.min() == 0 and ((soft > 0) & (soft < 1)).any()  # a blended column
    assert mask_tensor(Image.new("L", (8, 8), 255), (4, 4), "cpu").eq(1).all()


def test_a_full_mask_is_no_mask_and_an_empty_one_removes_the_style(small_images, tiny_weights, tmp_path):
    c, s = small_images
    white = save(np.full((64, 80), 255), tmp_path / "white.png")
    black = save(np.zeros((64, 80)), tmp_path / "black.png")
    cfg = StylizeConfig(size=64, iterations=4, scales=(1,), precision="fp32")
    plain = restyle.run(c, s, cfg, weights=tiny_weights)
    full = restyle.run(c, s, cfg.replace(mask=(str(white),)), weights=tiny_weights)
    empty = restyle.run(c, s, cfg.replace(mask=(str(black),)), weights=tiny_weights)
    assert abs(full.report["final_loss"]["style"] - plain.report["final_loss"]["style"]) < 1e-3 * plain.report["final_loss"]["style"]
    assert empty.report["final_loss"]["style"] == 0 and plain.report["final_loss"]["style"] > 0


@pytest.mark.weights
def test_each_region_takes_its_own_style(small_images, tmp_path):
    """Left half after The Starry Night, right half after coarse orange/blue checks: each half's
    masked Gram matrices end closer to its own style than to the other style."""
    c, s = small_images
    check = np.zeros((64, 64, 3), np.uint8)
    yy, xx = np.mgrid[:64, :64]
    check[((yy // 8 + xx // 8) % 2) == 0] = (230, 120, 30)
    check[((yy // 8 + xx // 8) % 2) == 1] = (30, 60, 160)
    checks = save(check, tmp_path / "checks.png")
    l, r = halves(tmp_path)
    out = restyle.stylize(c, [s, checks], StylizeConfig(size=64, iterations=20, scales=(1,), precision="fp32",
                                                       mask=(str(l), str(r))))
    net = network(load_weights(None), "relu5_1", "max", torch.device("cpu"))
    p = Painter(net, torch.device("cpu"), "fp32")
    layers = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
    f_out = p.features(to_tensor(out), layers)
    targets = [p.features(to_tensor(Image.open(x).convert("RGB")), layers) for x in (s, checks)]
    for own, mask in enumerate((l, r)):
        lm = layer_masks(mask_tensor(Image.open(mask), out.size, "cpu"), layers)
        # relative distance, so that a high-contrast style's large Gram entries do not decide
        d = [sum(style_loss(gram(f_out[n], lm[n]), gram(t[n])).item() / gram(t[n]).pow(2).mean().item()
                 for n in layers) for t in targets]
        assert d[own] < d[1 - own], (own, d)
