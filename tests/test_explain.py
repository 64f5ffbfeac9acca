import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from restyle.cli.main import main
from restyle.config import ExplainConfig
from restyle.device import network
from restyle.optimiser.engine import Painter
from restyle.errors import InputError
from restyle.optimiser.explain import (
    Progress,
    _plan,
    colormap,
    crop_patch,
    explain,
    patch_box,
    reconstruct_content,
    reconstruct_style,
    spectral_order,
    top_positions,
    tradeoff_result,
    units_section,
)
from restyle.models.vgg import receptive_field
from restyle.images import load_image, resize, to_tensor
from restyle.optimiser.losses import gram, style_loss
from restyle.models.weights import load_weights

# Tiny settings: every section runs on the tiny network in a second or two.
TINY = dict(
    size=64, scales=1, content_iterations=2, style_iterations=2, tradeoff_iterations=2,
    ratios=(0.5, 0.005), units=2, patch_size=64,
)


# --- pure helpers -------------------------------------------------------------


def test_colormap_runs_dark_to_bright_and_clips():
    v = colormap(np.array([-1.0, 0.0, 0.25, 0.5, 0.75, 1.0, 2.0]))
    assert v.dtype == np.uint8 and v.shape == (7, 3)
    brightness = v.astype(int).sum(1)
    assert (np.diff(brightness[1:6]) > 0).all()  # monotonic from 0 to 1
    assert (v[0] == v[1]).all() and (v[-1] == v[-2]).all()  # clipped outside [0, 1]


def test_spectral_order_puts_co_occurring_channels_together():
    # Three groups of channels that fire together, shuffled; the order must make each contiguous.
    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1, 2], 6)
    sources = rng.random((3, 400)) ** 4  # sparse, independent sources
    f = sources[groups] + 0.02 * rng.random((18, 400))
    perm = rng.permutation(18)
    g = (f[perm] @ f[perm].T) / f.size
    order = spectral_order(g)
    assert sorted(order) == list(range(18))
    labels = groups[perm][order]
    assert sum(a != b for a, b in zip(labels, labels[1:])) == 2  # exactly two boundaries
    dead = np.zeros((4, 4))
    dead[:3, :3] = np.eye(3)
    assert spectral_order(dead)[-1] == 3  # a channel that never fires goes last


def test_top_positions_are_strongest_and_apart():
    a = np.zeros((10, 10))
    a[2, 2], a[2, 3], a[7, 7] = 9, 8, 5  # (2, 3) is too close to (2, 2)
    b = np.zeros((10, 10))
    b[2, 3] = 7
    best = top_positions([a, b], 3, min_dist=2)
    assert [(i, r, c) for i, r, c, _ in best] == [(0, 2, 2), (1, 2, 3), (0, 7, 7)]
    assert [v for *_, v in best] == [9, 7, 5]
    # Maps too small for k positions that far apart: the next best fill up, strongest first.
    assert [(i, r, c) for i, r, c, _ in top_positions([a], 3, min_dist=20)] == [(0, 2, 2), (0, 2, 3), (0, 7, 7)]


@pytest.mark.parametrize("layer", ["relu1_1", "relu2_2", "relu3_2"])
def test_patch_box_covers_exactly_what_the_unit_sees(tiny_weights, layer):
    """Every input pixel with a gradient for the unit lies in its box, and the box is tight."""
    net = network(load_weights(tiny_weights), layer, "avg", torch.device("cpu"))
    x = torch.rand(1, 3, 96, 96, requires_grad=True)
    fmap = net(x, [layer])[layer]
    row, col = fmap.shape[2] // 2, fmap.shape[3] // 2
    # Sum over channels: some unit of the position sees every pixel of its field.
    fmap[0, :, row, col].sum().backward()
    ys, xs = torch.nonzero(x.grad.abs().sum(1)[0] > 0, as_tuple=True)
    left, top, right, bottom = patch_box(layer, row, col)
    size, _ = receptive_field(layer)
    assert (right - left, bottom - top) == (size, size)
    assert ys.min() >= top and ys.max() < bottom and xs.min() >= left and xs.max() < right
    assert (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1) == (top, bottom, left, right)


def test_crop_patch_keeps_its_size_and_greys_the_outside():
    img = Image.new("RGB", (10, 10), (255, 0, 0))
    p = crop_patch(img, (-3, -3, 4, 4))
    assert p.size == (7, 7)
    assert p.getpixel((0, 0)) == (128, 128, 128) and p.getpixel((5, 5)) == (255, 0, 0)


def test_config_checks_values_and_quick_is_smaller():
    q = ExplainConfig.quick()
    assert q.size < ExplainConfig().size and q.units <= ExplainConfig().units
    assert ExplainConfig.quick(size=160).size == 160  # flags override the preset
    with pytest.raises(InputError, match="unknown layer 'pool1'"):
        ExplainConfig(content_layers=("pool1",))
    with pytest.raises(InputError, match="ratio -1"):
        ExplainConfig(ratios=(-1,))
    with pytest.raises(InputError, match="coarsest scale would be 32 px"):
        ExplainConfig(size=128, scales=3)


# --- the whole report on the tiny network ----------------------------------------


@pytest.fixture(scope="module")
def tiny_report(tiny_weights, tmp_path_factory):
    """One tiny report shared by the tests that only read it."""
    from conftest import EXAMPLES

    tmp = tmp_path_factory.mktemp("explain")
    c, s = tmp / "c.png", tmp / "s.png"
    Image.open(EXAMPLES / "tubingen.jpg").convert("RGB").resize((80, 64)).save(c)
    Image.open(EXAMPLES / "starry_night.jpg").convert("RGB").resize((64, 64)).save(s)
    events = []
    cfg = ExplainConfig(**TINY, precision="fp32")
    report = explain(c, s, tmp / "report", cfg, weights=tiny_weights, callback=events.append)
    return report, cfg, events


def test_every_section_is_written_and_shown(tiny_report):
    report, cfg, _ = tiny_report
    page = report.index.read_text()
    plan = _plan(cfg)
    for section in ("content", "style", "gram", "tradeoff", "units"):
        assert plan[section], section
        for rel in plan[section]:
            path = report.out_dir / rel
            assert Image.open(path).size[0] >= 32, rel  # a real picture
            assert f'src="{rel}"' in page, f"{rel} is not shown"
    # Nothing shown is missing, and every section has its heading and caption.
    for src in re.findall(r'src="([^"]+)"', page):
        assert (report.out_dir / src).is_file(), src
    for n, title in enumerate(["Content reconstructions", "Style reconstructions", "Gram matrices",
                               "The content/style trade-off", "What units respond to"], start=1):
        assert f"{n}. {title}" in page
    assert "A row" in page and "A cell" in page
    meta = json.loads((report.out_dir / "report.json").read_text())
    assert set(meta["units"]) == set(cfg.unit_layers)
    assert all(len(u["patches"]) == 9 for units in meta["units"].values() for u in units)


def test_progress_counts_up_to_its_total(tiny_report):
    _, _, events = tiny_report
    assert events and all(isinstance(e, Progress) for e in events)
    assert [e.step for e in events] == list(range(1, len(events) + 1))
    assert events[-1].step == events[-1].steps
    assert [s for s in dict.fromkeys(e.section for e in events)] == ["content", "style", "gram", "tradeoff", "units"]


def test_extra_images_are_searched(small_images, tiny_weights, tmp_path):
    c, s = small_images
    folder = tmp_path / "more"
    folder.mkdir()
    # A picture whose bright spots are far brighter than anything in the examples.
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((64, 64, 3)) ** 8 * 255).astype(np.uint8)).save(folder / "spots.png")
    (folder / "notes.txt").write_text("not an image")
    report = explain(c, s, tmp_path / "r", ExplainConfig(**TINY), images=folder, weights=tiny_weights)
    meta = json.loads((report.out_dir / "report.json").read_text())
    assert meta["images"] == [str(folder / "spots.png")]
    used = {p["image"] for units in meta["units"].values() for u in units for p in u["patches"]}
    assert "spots.png" in used
    assert "spots.png" in report.index.read_text()


# --- bad input ---------------------------------------------------------------------


def _cli(small_images, tiny_weights, out, *extra):
    c, s = small_images
    return main(["explain", str(c), str(s), "-o", str(out), "--weights", str(tiny_weights), "--quiet",
                 "--size", "64", "--scales", "1", "--content-iterations", "1", "--style-iterations", "1",
                 "--tradeoff-iterations", "1", "--units", "1", "--patch-size", "64", *extra])


def test_cli_writes_the_report(small_images, tiny_weights, tmp_path, capsys):
    assert _cli(small_images, tiny_weights, tmp_path / "r", "--ratios", "0.05") == 0
    assert (tmp_path / "r" / "index.html").is_file()
    assert capsys.readouterr().err == ""


def test_cli_quick_flag_uses_the_preset(small_images, tiny_weights, tmp_path, monkeypatch):
    seen = {}

    def fake_explain(content, style, out, cfg, **kw):
        seen["cfg"] = cfg
        raise InputError("stop here")

    monkeypatch.setattr("restyle.optimiser.explain.explain", fake_explain)
    c, s = small_images
    assert main(["explain", str(c), str(s), "-o", str(tmp_path / "r"), "--quick", "--units", "2"]) == 2
    assert seen["cfg"] == ExplainConfig.quick(units=2)


@pytest.mark.parametrize("case", ["out_is_file", "missing_content", "missing_images_dir", "empty_images_dir",
                                  "images_is_file", "parent_missing", "bad_ratio"])
def test_bad_input_exits_2_and_writes_nothing(case, small_images, tiny_weights, tmp_path, capsys):
    c, s = small_images
    out, extra = tmp_path / "r", []
    if case == "out_is_file":
        out = tmp_path / "taken.txt"
        out.write_text("keep me")
    elif case == "missing_content":
        c.unlink()
    elif case == "missing_images_dir":
        extra = ["--images", str(tmp_path / "nope")]
    elif case == "empty_images_dir":
        (tmp_path / "empty").mkdir()
        extra = ["--images", str(tmp_path / "empty")]
    elif case == "images_is_file":
        extra = ["--images", str(c)]
    elif case == "parent_missing":
        out = tmp_path / "no" / "r"
    elif case == "bad_ratio":
        extra = ["--ratios", "0"]
    assert _cli(small_images, tiny_weights, out, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("restyle: error:") and "Traceback" not in err
    if case == "out_is_file":
        assert out.read_text() == "keep me"
    else:
        assert not out.exists()


def test_an_input_the_report_would_overwrite_is_refused(small_images, tiny_weights, tmp_path, capsys):
    c, s = small_images
    (tmp_path / "r" / "inputs").mkdir(parents=True)
    inside = tmp_path / "r" / "inputs" / "content.png"
    inside.write_bytes(c.read_bytes())
    before = inside.read_bytes()
    assert main(["explain", str(inside), str(s), "-o", str(tmp_path / "r"), "--weights", str(tiny_weights)]) == 2
    assert "refusing to overwrite an input" in capsys.readouterr().err
    assert inside.read_bytes() == before
    assert not (tmp_path / "r" / "index.html").exists()


def test_reconstructions_compute_only_the_terms_they_use(small_images, tiny_weights, monkeypatch):
    """No zero-weight switches: a content reconstruction reads its one layer (no style layer),
    a style reconstruction its style layers (no content layer), each with only its terms."""
    import restyle.optimiser.engine as engine

    asked, terms = set(), []
    real_features, real_objective = Painter.features, engine.stage_objective
    def features(self, x, layers):
        asked.update(layers)
        return real_features(self, x, layers)

    def stage_objective(painter, ts, step, note=""):
        terms.append([t.name for t in ts])
        return real_objective(painter, ts, step, note)

    monkeypatch.setattr(Painter, "features", features)
    monkeypatch.setattr(engine, "stage_objective", stage_objective)
    c, s = (load_image(p) for p in small_images)
    cfg = ExplainConfig(size=64, scales=1, content_iterations=2, style_iterations=2)
    reconstruct_content(c, "relu2_2", cfg, weights=tiny_weights)
    assert asked == {"relu2_2"} and terms == [["content", "tv"]]
    asked.clear(), terms.clear()
    reconstruct_style(s, ("relu1_1", "relu2_1"), cfg, weights=tiny_weights)
    assert asked == {"relu1_1", "relu2_1"} and terms == [["style", "tv"]]


# --- meaning, on the real weights ------------------------------------------------------


def _mse(a: Image.Image, b: Image.Image) -> float:
    return float(((np.asarray(a, float) - np.asarray(b.resize(a.size), float)) ** 2).mean())


@pytest.mark.weights
def test_shallow_content_reconstruction_is_closer_to_the_photo_than_deep(content_path):
    img = load_image(content_path)
    cfg = ExplainConfig(size=64, scales=1, content_iterations=40)
    shallow = reconstruct_content(img, "relu1_2", cfg)
    deep = reconstruct_content(img, "relu5_2", cfg)
    target = resize(img, 64)
    # Measured: about 18 (conv1_2) vs 2500 (conv5_2); noise would be about 3000.
    assert _mse(shallow, target) < 0.1 * _mse(deep, target)
    assert _mse(shallow, target) < 100  # conv1_2 is nearly the photograph


@pytest.mark.weights
def test_style_reconstruction_matches_the_style_statistics_not_the_noise(style_path):
    img = load_image(style_path)
    cfg = ExplainConfig(size=64, scales=1, style_iterations=40)
    layers = ("relu1_1", "relu2_1", "relu3_1")
    texture = reconstruct_style(img, layers, cfg)
    style = resize(img, 64)
    mean = lambda im: np.asarray(im, float).reshape(-1, 3).mean(0)  # noqa: E731
    # The painting's blue (measured within 3 levels), not the mid-grey noise it started from.
    assert np.abs(mean(texture) - mean(style)).max() < 12 < np.abs(127.5 - mean(style)).max()
    device = torch.device("cpu")
    painter = Painter(network(load_weights(), "relu3_1", "avg", device), device, "fp32")
    noise = Image.fromarray(np.random.default_rng(0).normal(127.5, 32, (40, 64, 3)).clip(0, 255).astype(np.uint8))

    def gram_distance(im: Image.Image) -> float:
        with torch.no_grad():
            a = painter.features(to_tensor(im), layers)
            b = painter.features(to_tensor(style), layers)
        return sum(float(style_loss(gram(a[n]), gram(b[n]))) for n in layers)

    assert gram_distance(texture) < 0.1 * gram_distance(noise)


@pytest.mark.weights
def test_more_content_weight_gives_a_result_closer_to_the_photo(content_path, style_path):
    c, s = load_image(content_path), load_image(style_path)
    cfg = ExplainConfig(size=64, scales=1, tradeoff_iterations=30)
    heavy = tradeoff_result(c, s, "relu2_2", 5.0, cfg)
    light = tradeoff_result(c, s, "relu2_2", 5e-3, cfg)
    # Measured: about 1100 vs 4600.
    assert _mse(heavy, resize(c, 64)) < 0.5 * _mse(light, resize(c, 64))


@pytest.mark.weights
def test_top_patches_excite_their_unit_more_than_random_patches(content_path, style_path, tmp_path):
    """Feed each top patch alone to the network: its unit must fire harder than on random patches."""
    corpus = [("content image", load_image(content_path)), ("style image", load_image(style_path))]
    cfg = ExplainConfig(unit_layers=("relu2_2", "relu3_2"), units=3, patch_size=160)
    (tmp_path / "units").mkdir()
    device = torch.device("cpu")
    painter = Painter(network(load_weights(), "relu3_2", "max", device), device, "fp32")
    shown = units_section(painter, corpus, cfg, tmp_path, lambda label: None)
    sized = {name: resize(img, cfg.patch_size) for name, img in corpus}
    rng = np.random.default_rng(0)
    for layer, units in shown.items():
        size, _ = receptive_field(layer)

        def response(patch: Image.Image, ch: int) -> float:
            # The unit at the centre of the patch, which then sees exactly the patch.
            with torch.no_grad():
                f = painter.features(to_tensor(patch), (layer,))[layer][0, ch]
            return float(f[f.shape[0] // 2, f.shape[1] // 2])

        for u in units:
            top = [response(crop_patch(sized[p["image"]], tuple(p["box"])), u["channel"]) for p in u["patches"]]
            rand = []
            for _ in range(30):
                name = ("content image", "style image")[rng.integers(2)]
                im = sized[name]
                x, y = rng.integers(0, im.width - size), rng.integers(0, im.height - size)
                rand.append(response(crop_patch(im, (x, y, x + size, y + size)), u["channel"]))
            assert np.mean(top) > 1.5 * np.mean(rand), (layer, u["channel"])
            assert np.median(top) > np.percentile(rand, 75), (layer, u["channel"])
        assert (tmp_path / "units" / f"{layer}_1_patches.png").is_file()


def test_the_library_never_prints_or_exits():
    import restyle.optimiser.explain

    text = open(restyle.optimiser.explain.__file__).read()
    assert "print(" not in text and "sys.exit" not in text and "tqdm" not in text


def test_the_page_template_is_package_data():
    """A wheel must ship report/template.html, or `restyle explain` fails once installed."""
    import tomllib
    from pathlib import Path

    from conftest import ROOT

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["restyle"]
    assert any(Path("report/template.html").match(pattern) for pattern in data)
