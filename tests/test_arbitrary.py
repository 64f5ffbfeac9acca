"""The any-painting network: its maths, its training on the one loop, and running it (tiny networks)."""

import numpy as np
import pytest
import torch
from PIL import Image

from restyle.errors import InputError
from restyle.models.arbitrary import ArbitraryConfig, ArbitraryNet, feature_stats
from restyle.networks.arbitrary_training import split_paintings, train_arbitrary
from restyle.networks.feedforward import ArbitraryModel, load_model
from restyle.networks.training import checkpoint_path
from tinynets import arbitrary_model_file, arbitrary_net, arbitrary_train_config


def test_specialised_network_paints_the_same_pixels():
    net = arbitrary_net()
    x = torch.rand(2, 3, 20, 28) * 255
    code = torch.randn(1, 6)
    with torch.no_grad():
        a = net(x, code)
        b = net.specialise(code)(x)
    assert torch.allclose(a, b, atol=1e-4)
    other = torch.randn(1, 6)
    with torch.no_grad():
        assert not torch.allclose(net(x, other), a, atol=1e-2)  # the code changes the picture


def test_fresh_heads_predict_the_body_itself():
    net = ArbitraryNet(ArbitraryConfig((4, 8), 1, code_dim=6, hidden=8, layer_channels=(4, 8, 8, 8))).eval()
    x = torch.rand(1, 3, 16, 16) * 255
    with torch.no_grad():
        assert (net(x, torch.randn(1, 6)) - net.body(x)).abs().max() < 3  # of 255: the heads start near 0
        net.heads.weight.zero_()
        assert torch.allclose(net(x, torch.randn(1, 6)), net.body(x), atol=1e-3)


def test_feature_stats_are_means_and_spreads():
    f = {"a": torch.arange(8.0).reshape(1, 2, 2, 2)}
    s = feature_stats(f, ["a"])
    assert s.shape == (1, 4)
    assert torch.allclose(s[0, :2], torch.tensor([1.5, 5.5]))
    assert torch.allclose(s[0, 2:], torch.tensor([1.25, 1.25]).sqrt())


def test_paintings_held_aside_every_kth():
    names = [f"p{i:02d}" for i in range(25)]
    train, held = split_paintings(names, 10)
    assert held == ["p09", "p19"] and len(train) == 23 and not set(train) & set(held)


def test_trains_saves_loads_and_paints_any_painting(corpus, tiny_weights):
    out = corpus / "arb.pt"
    train_arbitrary(corpus / "paintings", [corpus / "photos"], out, arbitrary_train_config(), device="cpu", weights=tiny_weights)
    model = load_model(out, weights=tiny_weights)
    assert isinstance(model, ArbitraryModel)
    photo = corpus / "photos" / "x0.png"
    held = corpus / "paintings" / "p3.png"  # held aside: never trained on
    a = model(photo, style=held)
    assert a.size == Image.open(photo).size
    code = model.encode_style(held)
    assert code.shape == (1, 6)
    assert np.array_equal(np.asarray(model(photo, style=code)), np.asarray(a))  # a code, computed once, paints the same
    b = model(photo, style=corpus / "paintings" / "p0.png")
    assert not np.array_equal(np.asarray(a), np.asarray(b))  # another painting, another picture
    blended = model.for_style([held, corpus / "paintings" / "p0.png"], blend=[1, 0])(photo)
    assert np.array_equal(np.asarray(blended), np.asarray(a))
    weak = model.for_style(held, strength=0.0, photo=photo)(photo)
    assert not np.array_equal(np.asarray(weak), np.asarray(a))


def test_refuses_bad_paintings_and_settings(corpus, tiny_weights):
    out = corpus / "arb.pt"
    train_arbitrary(corpus / "paintings", [corpus / "photos"], out, arbitrary_train_config(steps=1), device="cpu",
                    weights=tiny_weights)
    model = load_model(out, weights=tiny_weights)
    Image.new("RGB", (40, 200)).save(corpus / "thin.png")
    with pytest.raises(InputError, match="at least 64 px"):
        model.encode_style(corpus / "thin.png")
    with pytest.raises(InputError, match="blend weights"):
        model.for_style([corpus / "paintings" / "p0.png"], blend=[1, 2])
    with pytest.raises(InputError, match="strength"):
        model.for_style(corpus / "paintings" / "p0.png", strength=-1)
    with pytest.raises(InputError, match="style image"):
        model.for_style([])


def test_resume_is_exact(corpus, tiny_weights):
    a, b = corpus / "a.pt", corpus / "b.pt"
    kw = dict(device="cpu", weights=tiny_weights)
    train_arbitrary(corpus / "paintings", [corpus / "photos"], a, arbitrary_train_config(steps=4), **kw)
    train_arbitrary(corpus / "paintings", [corpus / "photos"], b, arbitrary_train_config(steps=2), **kw)
    train_arbitrary(corpus / "paintings", [corpus / "photos"], b, arbitrary_train_config(steps=4), resume=True, **kw)
    sa = torch.load(a, weights_only=True)["state_dict"]
    sb = torch.load(b, weights_only=True)["state_dict"]
    assert all(torch.allclose(sa[k], sb[k], atol=1e-6) for k in sa)
    with pytest.raises(InputError, match="differ"):
        train_arbitrary(corpus / "paintings", [corpus / "photos"], b, arbitrary_train_config(steps=6, lr=1e-3), resume=True, **kw)
    assert checkpoint_path(b).is_file()


def test_a_paintings_own_network_starts_from_the_any_painting_network(corpus, tiny_weights, monkeypatch):
    from restyle.networks.style_training import TrainConfig, train

    arb = corpus / "arb.pt"
    train_arbitrary(corpus / "paintings", [corpus / "photos"], arb, arbitrary_train_config(steps=1), device="cpu",
                    weights=tiny_weights)
    painting = corpus / "paintings" / "p3.png"
    cfg = dict(widths=(4, 8), res_blocks=1, size=32, style_size=64, steps=2, holdout=1, preview_every=0,
               checkpoint_every=0, precision="fp32")
    out = corpus / "own.pt"
    train(painting, corpus / "photos", out, TrainConfig(**cfg, lr=0.0), weights=tiny_weights, start=arb)
    model = load_model(arb, weights=tiny_weights)
    photo = corpus / "photos" / "x1.png"
    own = load_model(out)
    assert np.array_equal(np.asarray(own(photo)), np.asarray(model(photo, style=painting)))  # lr 0: the start itself
    side = torch.load(out, weights_only=True)["training"]["started_from"]
    assert side["model"] == "arb" and side["sha256"] == model.sha256
    tuned = corpus / "tuned.pt"
    train(painting, corpus / "photos", tuned, TrainConfig(**cfg, lr=1e-2), weights=tiny_weights, start=arb)
    assert not np.array_equal(np.asarray(load_model(tuned)(photo)), np.asarray(own(photo)))
    # The API's config as a dict: a fine-tune takes FROM_ARBITRARY's settings where the dict is silent.
    monkeypatch.setattr("restyle.networks.style_training.FROM_ARBITRARY", {"steps": 3, "lr_decay": "cosine"})
    silent = {k: v for k, v in cfg.items() if k != "steps"}
    train(painting, corpus / "photos", corpus / "api.pt", silent, weights=tiny_weights, start=arb)
    config = torch.load(corpus / "api.pt", weights_only=True)["training"]["config"]
    assert config["steps"] == 3 and config["lr_decay"] == "cosine"
    with pytest.raises(InputError, match="not an any-painting model"):
        train(painting, corpus / "photos", corpus / "x.pt", TrainConfig(**cfg), weights=tiny_weights, start=tuned)
    with pytest.raises(InputError, match="widths"):
        train(painting, corpus / "photos", corpus / "x.pt", TrainConfig(**{**cfg, "widths": (4, 8, 8)}),
              weights=tiny_weights, start=arb)


def test_a_start_made_first_is_the_same_start_and_the_painting_is_encoded_once(corpus, tiny_weights, monkeypatch):
    """The web app asks whether the any-painting network fits before it trains: one encoding, not two."""
    from restyle.networks.feedforward import ArbitraryModel
    from restyle.networks.style_training import TrainConfig, start_network, train

    arb = corpus / "arb.pt"
    train_arbitrary(corpus / "paintings", [corpus / "photos"], arb, arbitrary_train_config(steps=1), device="cpu",
                    weights=tiny_weights)
    painting = corpus / "paintings" / "p3.png"
    cfg = TrainConfig(widths=(4, 8), res_blocks=1, size=32, style_size=64, steps=2, holdout=1, preview_every=0,
                      checkpoint_every=0, precision="fp32", lr=0.0)
    encoded = []
    real = ArbitraryModel.encode_style
    monkeypatch.setattr(ArbitraryModel, "encode_style", lambda self, s: encoded.append(s) or real(self, s))
    start = start_network(arb, painting, cfg, weights=tiny_weights)
    train(painting, corpus / "photos", corpus / "a.pt", cfg, weights=tiny_weights, start=start)
    assert len(encoded) == 1
    train(painting, corpus / "photos", corpus / "b.pt", cfg, weights=tiny_weights, start=arb)
    assert len(encoded) == 2
    photo = corpus / "photos" / "x1.png"
    assert np.array_equal(np.asarray(load_model(corpus / "a.pt")(photo)), np.asarray(load_model(corpus / "b.pt")(photo)))
    assert torch.load(corpus / "a.pt", weights_only=True)["training"]["started_from"]["model"] == "arb"


def test_onnx_export_takes_the_photo_and_the_painting(corpus, tiny_weights, monkeypatch):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from restyle.networks import export

    arb = corpus / "arb.pt"
    train_arbitrary(corpus / "paintings", [corpus / "photos"], arb, arbitrary_train_config(steps=1), device="cpu",
                    weights=tiny_weights)
    monkeypatch.setattr(export, "load_model", lambda m: load_model(m, weights=tiny_weights))
    res = export.export_onnx(arb, corpus / "arb.onnx")
    assert res.max_abs_diff is not None and res.max_abs_diff <= export.TOLERANCE
    session = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "style"]
    side = load_model(arb, weights=tiny_weights).encode_size
    assert res.style_long_side == side and session.get_modelmeta().custom_metadata_map == {"style_long_side": str(side)}


def test_cli_any_painting_one_photo_a_folder_strength_blend_hybrid_and_training(corpus, tiny_weights, capsys, monkeypatch):
    import json

    from restyle.cli.main import main

    arb = corpus / "arb.pt"
    assert main(["train-arbitrary", "--paintings", str(corpus / "paintings"), "--photos", str(corpus / "photos"),
                 "-o", str(arb), "--weights", str(tiny_weights), "--steps", "1", "--size", "32", "--style-size", "64",
                 "--encode-size", "64", "--widths", "4,8", "--res-blocks", "1", "--code-dim", "6", "--holdout-every",
                 "4", "--holdout", "1", "--crops-per-painting", "1", "--init-from", "", "--precision", "fp32",
                 "--preview-every", "0", "--quiet"]) == 0
    photo, p0, p3 = corpus / "photos" / "x0.png", corpus / "paintings" / "p0.png", corpus / "paintings" / "p3.png"
    w = ["--weights", str(tiny_weights), "--precision", "fp32", "--quiet"]
    out = corpus / "one.png"
    assert main(["stylize", str(photo), str(p3), "--model", str(arb), "-o", str(out), *w]) == 0
    side = json.loads((corpus / "one.png.json").read_text())
    assert side["style"]["files"] == ["p3.png"] and side["style"]["from"] == "arb"
    assert np.array_equal(np.asarray(Image.open(out)),
                          np.asarray(load_model(arb, weights=tiny_weights)(photo, style=p3)))
    assert main(["stylize", str(photo), "--model", str(arb), "-o", str(corpus / "none.png"), *w]) == 2
    assert "give the style image" in capsys.readouterr().err
    half = corpus / "half.png"
    assert main(["stylize", str(photo), str(p3), "--model", str(arb), "-o", str(half), "--style-strength", "0.5",
                 *w]) == 0
    assert not np.array_equal(np.asarray(Image.open(half)), np.asarray(Image.open(out)))
    mix = corpus / "mix.png"
    assert main(["stylize", str(photo), str(p3), str(p0), "--model", str(arb), "-o", str(mix),
                 "--style-blend-weights", "1,0", *w]) == 0
    assert np.array_equal(np.asarray(Image.open(mix)), np.asarray(Image.open(out)))
    folder = corpus / "out"
    assert main(["stylize", str(corpus / "photos"), str(p3), "--model", str(arb), "-o", str(folder), *w]) == 0
    assert len(list(folder.glob("*.png"))) == 5
    hybrid = corpus / "hybrid.png"
    assert main(["stylize", str(photo), str(p3), "--init-model", str(arb), "-o", str(hybrid), "--iterations", "2",
                 "--size", "48", *w]) == 0
    assert json.loads((corpus / "hybrid.png.json").read_text())["init_model_sha256"] == side["model_sha256"]
    own = corpus / "own.pt"
    assert main(["train", str(p3), "--photos", str(corpus / "photos"), "-o", str(own), "--from", str(arb),
                 "--weights", str(tiny_weights), "--steps", "2", "--size", "32", "--style-size", "64", "--widths", "4,8",
                 "--res-blocks", "1", "--holdout", "1", "--preview-every", "0", "--precision", "fp32", "--quiet"]) == 0
    training = json.loads((corpus / "own.json").read_text())["training"]
    assert training["started_from"]["model"] == "arb"
    # The fine-tune's own defaults (FROM_ARBITRARY) where the command line is silent, the flags given where not.
    assert training["config"]["steps"] == 2 and training["config"]["lr_decay"] == "cosine"
    monkeypatch.setattr("restyle.cli.models.FROM_ARBITRARY", {"steps": 3, "lr_decay": "cosine"})
    assert main(["train", str(p3), "--photos", str(corpus / "photos"), "-o", str(corpus / "own2.pt"), "--from",
                 str(arb), "--weights", str(tiny_weights), "--size", "32", "--style-size", "64", "--widths", "4,8",
                 "--res-blocks", "1", "--holdout", "1", "--preview-every", "0", "--precision", "fp32", "--quiet",
                 "--lr-decay", "none"]) == 0
    config = json.loads((corpus / "own2.json").read_text())["training"]["config"]
    assert config["steps"] == 3 and config["lr_decay"] == "none"


def test_cli_video_with_any_painting(corpus, tiny_weights, capsys):
    from videoutil import clip_stats, make_clip

    from restyle.cli.main import main

    arb = corpus / "arb.pt"
    train_arbitrary(corpus / "paintings", [corpus / "photos"], arb, arbitrary_train_config(steps=1), device="cpu",
                    weights=tiny_weights)
    clip, out = corpus / "clip.mp4", corpus / "out.mp4"
    make_clip(clip, fps=10)
    painting = corpus / "paintings" / "p3.png"
    assert main(["video", str(clip), str(painting), "--model", str(arb), "-o", str(out), "--weights",
                 str(tiny_weights), "--precision", "fp32", "--quiet"]) == 0
    assert clip_stats(out)[0] == clip_stats(clip)[0]
    assert main(["video", str(clip), "--model", str(arb), "-o", str(corpus / "x.mp4"), "--quiet"]) == 2
    assert "give the style image" in capsys.readouterr().err


def test_style_scales_are_floored_and_big_gradients_clipped():
    from restyle.networks.arbitrary_training import ClippedAdam, view_scales

    grams = {"a": torch.stack([torch.full((2, 2), v) for v in (1.0, 1.0, 1.0, 1e-4)])}
    s = view_scales(grams, ["a"], floor=0.05)
    assert s[0]["a"] == s[1]["a"] and s[3]["a"] == pytest.approx(s[0]["a"] / 0.05)  # not 1e8 x
    w = torch.nn.Parameter(torch.zeros(3))
    opt = ClippedAdam([w], lr=0.1, ratio=2.0)
    for g in (1.0, 1.0, 100.0):
        w.grad = torch.full((3,), g)
        opt.step()
    assert opt.param_groups[0]["clip_mean"] < 3.0  # the 100x gradient counted as 2x the mean
    state = opt.state_dict()
    again = ClippedAdam([torch.nn.Parameter(torch.zeros(3))], lr=0.1)
    again.load_state_dict(state)
    assert again.param_groups[0]["clip_mean"] == opt.param_groups[0]["clip_mean"]  # resumes exactly


@pytest.mark.weights
def test_web_job_shows_the_any_painting_networks_picture_for_any_painting(tmp_path, monkeypatch):
    """No model was trained on this painting: the bundled any-painting network paints the instant picture."""
    import json

    from restyle.models import registry
    from restyle.models.modelfile import model_payload, save_model_file
    from restyle.web.worker import _instant_preview

    bundled = tmp_path / "bundled"
    bundled.mkdir()
    net = ArbitraryNet(ArbitraryConfig((4, 8), 1, code_dim=6, hidden=8))  # reads the real VGG-19's channels
    save_model_file(model_payload(net, family="arbitrary", training={}, style={"name": "any painting"}),
                    bundled / "arbitrary.pt")
    (bundled / "arbitrary.json").write_text(json.dumps({"family": "arbitrary", "style": {"name": "any painting"}}))
    monkeypatch.setattr(registry, "BUNDLED_DIR", bundled)
    photo, painting = tmp_path / "content.png", tmp_path / "painting.png"
    Image.new("RGB", (50, 40), (10, 200, 30)).save(photo)
    Image.effect_noise((80, 64), 60).convert("RGB").save(painting)
    info = _instant_preview(photo, painting, 48, tmp_path, device="cpu")
    assert info["model"] == "arbitrary" and Image.open(tmp_path / "preview.jpg").size == (48, 38)


def test_cli_style_strength_on_a_folder_paints_each_photo_from_its_own_style(corpus, tiny_weights):
    import json

    from restyle.cli.main import main

    arb = arbitrary_model_file(corpus / "arb.pt")
    p0, p3 = corpus / "paintings" / "p0.png", corpus / "paintings" / "p3.png"
    photos = sorted((corpus / "photos").glob("*.png"))
    w = ["--weights", str(tiny_weights), "--precision", "fp32", "--quiet"]
    folder = corpus / "out"
    assert main(["stylize", str(corpus / "photos"), str(p3), "--model", str(arb), "-o", str(folder),
                 "--style-strength", "0.5", *w]) == 0
    model = load_model(arb, weights=tiny_weights)

    def got(photo):
        return np.asarray(Image.open(folder / f"{photo.stem}__arb.png"))

    for photo in photos:  # each photo's own code is its zero point: the single photo's picture
        assert np.array_equal(got(photo), np.asarray(model.for_style(p3, strength=0.5, photo=photo)(photo)))
    first = model.for_style(p3, strength=0.5, photo=photos[0])  # one zero point for all would differ
    assert not np.array_equal(got(photos[1]), np.asarray(first(photos[1])))
    assert not np.array_equal(got(photos[0]), np.asarray(model(photos[0], style=p3)))  # not strength 1
    side = json.loads((folder / f"{photos[0].stem}__arb.png.json").read_text())
    assert side["style"]["strength"] == 0.5 and side["style"]["files"] == ["p3.png"]
    one = corpus / "one.png"  # the single-photo path agrees
    assert main(["stylize", str(photos[2]), str(p3), "--model", str(arb), "-o", str(one), "--style-strength", "0.5",
                 *w]) == 0
    assert np.array_equal(np.asarray(Image.open(one)), got(photos[2]))
    # Another painting into the same folder is painted again, not skipped as already complete.
    assert main(["stylize", str(corpus / "photos"), str(p0), "--model", str(arb), "-o", str(folder),
                 "--style-strength", "0.5", *w]) == 0
    assert np.array_equal(got(photos[0]), np.asarray(model.for_style(p0, strength=0.5, photo=photos[0])(photos[0])))


def test_paintings_at_a_strength_saved_as_one_file_paint_what_they_painted(corpus, tiny_weights):
    """What a Ray worker opens for `--style-strength` with the any-painting network (PhotoStyled.save)."""
    from restyle import run_network
    from restyle.networks.feedforward import PhotoStyled

    arb = arbitrary_model_file(corpus / "arb.pt")
    model = load_model(arb, weights=tiny_weights)
    styled = model.for_photos([corpus / "paintings" / "p0.png", corpus / "paintings" / "p3.png"], blend=[1, 3],
                              strength=0.5)
    back = load_model(styled.save(corpus / "styled.pt"), weights=tiny_weights)
    assert isinstance(back, PhotoStyled) and back.strength == 0.5 and back.info["style"] == styled.info["style"]
    for photo in sorted((corpus / "photos").glob("*.png"))[:2]:
        assert np.array_equal(np.asarray(run_network(back, photo)), np.asarray(run_network(styled, photo)))
    assert not isinstance(load_model(arb, weights=tiny_weights), PhotoStyled)  # the plain file stays a model


def test_a_4096_px_pass_of_the_bundled_any_painting_network_is_tiled_and_planned_under_3_gb(monkeypatch):
    """Checked without painting 4096 px here (benchmarks/arbitrary_memory.py measures the real peak)."""
    from restyle.optimiser import memory

    arb = load_model("arbitrary")  # the bundled network's own widths; a code stands in for a painting
    model = arb.for_style(torch.zeros(1, arb.net.config.code_dim))
    planned = {}
    monkeypatch.setattr(memory, "check_fits", lambda needed, what, *a, **kw: planned.__setitem__(what, needed))
    for w, h in ((4096, 4096), (4096, 3072), (3072, 4096)):
        model.check_size(w, h)
        assert planned[f"{w}x{h} through the network"] < 3 * memory.GB, planned
    # What makes it fit: the whole picture at once would be planned well over 3 GB.
    assert memory.network_estimate(4096, 4096, model.net.config.widths, 4096 * 4096) > 3 * memory.GB

    class Tiled(Exception):
        pass

    def tiled(x, **kw):
        raise Tiled(tuple(x.shape))

    monkeypatch.setattr(model, "_tiled", tiled)
    monkeypatch.setattr(model, "_run", lambda x: pytest.fail(f"{tuple(x.shape)} went through the network whole"))
    with pytest.raises(Tiled, match=r"\(1, 3, 4096, 4096\)"):
        model.stylize_tensor(torch.zeros(1, 3, 1, 1).expand(1, 3, 4096, 4096))  # a view: no 200 MB picture


def test_reading_a_painting_first_leaves_the_shared_vgg_trainable(corpus, tiny_weights):
    """A web worker reads paintings (any painting, instant previews), then may train, in one process."""
    from restyle.device import network

    network.cache_clear()  # the VGG the painting is read with is built here, not by an earlier test
    model = load_model(arbitrary_model_file(corpus / "arb.pt"), weights=tiny_weights)
    model.encode_style(corpus / "paintings" / "p0.png")
    train_arbitrary(corpus / "paintings", [corpus / "photos"], corpus / "trained.pt", arbitrary_train_config(steps=1), device="cpu",
                    weights=tiny_weights)
    assert (corpus / "trained.pt").is_file()


def test_refit_encoder_reads_paintings_at_fewer_pixels(tiny_weights, tmp_path, capsys):
    from restyle.cli.main import main
    from restyle.models.modelfile import model_payload, read_model_file, save_model_file
    from restyle.networks.arbitrary_encoder import refit_encoder

    corpus = tmp_path / "paintings"
    corpus.mkdir()
    g = torch.Generator().manual_seed(3)
    for i in range(16):  # smooth random pictures: each its own palette and its own scale of detail
        small = torch.rand(3, 3 + i % 5, 4 + i % 7, generator=g) * (0.3 + 0.7 * torch.rand(3, 1, 1, generator=g))
        big = torch.nn.functional.interpolate(small[None], size=(72, 96), mode="bicubic", align_corners=False)[0]
        arr = ((big + 0.15 * torch.rand(3, 72, 96, generator=g)).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
        Image.fromarray(arr).save(corpus / f"p{i:02d}.png")
    src = tmp_path / "arb.pt"
    training = {"config": {"encode_size": 64, "holdout_every": 4}}  # 4 of the 16 held aside
    save_model_file(model_payload(arbitrary_net(), family="arbitrary", training=training, style={}), src)
    out = refit_encoder(src, corpus, tmp_path / "small.pt", 32, views=6, steps=400, lr=1e-2, weights=tiny_weights)
    payload = read_model_file(out, "arbitrary")
    record = payload["training"]["encoder_refit"]
    assert payload["training"]["config"]["encode_size"] == 32 and record["from_encode_size"] == 64
    assert record["paintings"] == 12 and record["held_out_paintings"] == 4
    # The refitted predictor reads the small pictures closer to the big ones' codes than the old one
    # does (on the views fitted: a random tiny network's codes of unseen paintings are noise; the
    # benchmark measures the real network on held-aside paintings).
    assert record["train_error"] < 0.3 * record["train_error_unfitted"], record
    assert record["held_error"] > 0 and record["held_error_unfitted"] > 0
    old, new = (load_model(p, weights=tiny_weights) for p in (src, out))
    assert new.encode_size == 32 and old.encode_size == 64
    for name in ("state_dict",):  # the body and heads are the trained network's, only the predictor moved
        a, b = read_model_file(src)[name], payload[name]
        assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith(("predictor", "stats_")))
        assert not torch.equal(a["predictor.0.weight"], b["predictor.0.weight"])
    painting = corpus / "p00.png"  # a painting it was fitted on
    photo = torch.rand(1, 3, 40, 48) * 255
    y_old = old.for_style(painting).stylize_tensor(photo)
    y_new = new.for_style(painting).stylize_tensor(photo)
    y_unfitted = ArbitraryModel(old.net, dict(old.info, training={"config": {"encode_size": 32}}),
                                weights=tiny_weights).for_style(painting).stylize_tensor(photo)
    assert (y_new - y_old).abs().mean() < (y_unfitted - y_old).abs().mean()

    # The command; its refusals.
    assert main(["refit-encoder", str(src), "--paintings", str(corpus), "--encode-size", "32",
                 "--views", "2", "--steps", "5", "--weights", str(tiny_weights), "-o", str(tmp_path / "c.pt")]) == 0
    assert "reads paintings at 32 px (was 64)" in capsys.readouterr().out
    for argv, why in ((["-o", str(tmp_path / "c.pt")], "exists"),
                      (["--encode-size", "8", "-o", str(tmp_path / "d.pt")], "encode size 8: must be in [32, 4096]"),
                      (["-o", str(tmp_path / "d.png")], "suffix '.png' is not one of .pt")):
        code = main(["refit-encoder", str(src), "--paintings", str(corpus), "--weights",
                     str(tiny_weights), *argv])
        assert code == 2 and why in capsys.readouterr().err, argv
    assert not (tmp_path / "d.pt").exists()


def test_training_measures_the_held_aside_paintings_and_keeps_the_best(corpus, tiny_weights):
    from restyle.models.modelfile import read_model_file
    from restyle.networks.arbitrary_training import best_path

    a, b = corpus / "a.pt", corpus / "b.pt"
    kw = dict(device="cpu", weights=tiny_weights)
    cfg = dict(preview_every=1, lr=5e-2)
    train_arbitrary(corpus / "paintings", [corpus / "photos"], a, arbitrary_train_config(steps=4, **cfg), **kw)
    rows = read_model_file(a)["training"]["held_loss"]
    assert [r[0] for r in rows] == [0, 1, 2, 3, 4] and all(len(r) == 4 and min(r[1:]) >= 0 for r in rows)
    assert len({tuple(r[1:]) for r in rows}) == 5  # the network changes, and so does its held-aside loss
    best = min(rows, key=lambda r: sum(r[1:]))
    kept = read_model_file(best_path(a))
    assert kept["kind"] == "model" and kept["training"]["steps_done"] == best[0]
    assert isinstance(load_model(best_path(a), weights=tiny_weights), ArbitraryModel)

    # Resumed: the same measures, each step once.
    train_arbitrary(corpus / "paintings", [corpus / "photos"], b, arbitrary_train_config(steps=2, **cfg), **kw)
    train_arbitrary(corpus / "paintings", [corpus / "photos"], b, arbitrary_train_config(steps=4, **cfg), resume=True,
                    **kw)
    again = read_model_file(b)["training"]["held_loss"]
    assert [r[0] for r in again] == [0, 1, 2, 3, 4]
    assert all(abs(x - y) <= 1e-3 * max(1.0, abs(x)) for r, s in zip(rows, again) for x, y in zip(r[1:], s[1:]))
