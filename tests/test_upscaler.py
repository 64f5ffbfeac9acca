"""The upscaler: network, tiled inference, training, model files, and its CLI paths."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from restyle.cli.main import main
from restyle.config import UpscalerTrainConfig
from restyle.errors import Cancelled, InputError
from restyle.events import TrainCheckpoint, TrainPreview, TrainStep
from restyle.models.modelfile import ModelError, build_network, model_payload, read_model_file, save_model_file
from restyle.models.transformer import TransformerConfig, TransformerNet
from restyle.models.upscaler import Upscaler, UpscalerConfig, _spans, upscale_tensor
from restyle.networks.train_upscaler import split_photos, train
from restyle.networks.training import checkpoint_path, preview_path
from restyle.networks.upscale import load_upscaler

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TINY = dict(channels=4, blocks=1, crop=16, batch_size=2, checkpoint_every=0, preview_every=0)


def randomised(scale, channels=8, blocks=2, seed=0):
    """An upscaler whose zero-initialised tail is made random, so it is not just bicubic."""
    torch.manual_seed(seed)
    m = Upscaler(UpscalerConfig(scale, channels, blocks))
    for p in m.tail.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return m.eval()


@pytest.fixture
def crops(tmp_path):
    """Five small photos cut from the example painting (real texture for the feature loss)."""
    src = Image.open(EXAMPLES / "tubingen.jpg").convert("RGB").resize((96, 72))
    d = tmp_path / "photos"
    d.mkdir()
    for i in range(5):
        src.crop((i * 8, i * 4, i * 8 + 48, i * 4 + 40)).save(d / f"p{i}.png")
    return d


# --- the network ----------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 4])
def test_untrained_network_is_bicubic_and_has_the_right_size(scale):
    m = Upscaler(UpscalerConfig(scale, 8, 2)).eval()
    x = torch.rand(1, 3, 10, 14) * 255
    with torch.no_grad():
        y = m(x)
    assert y.shape == (1, 3, 10 * scale, 14 * scale)
    bicubic = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    assert torch.allclose(y, bicubic, atol=1e-4)


@pytest.mark.parametrize("scale", [2, 4])
def test_no_checkerboard_a_flat_picture_stays_flat(scale):
    """Resize-convolution: a random network turns a flat grey into a flat colour (away from the
    borders), where transposed or sub-pixel convolutions draw a lattice of period `scale`."""
    m = randomised(scale, seed=3)
    with torch.no_grad():
        y = m(torch.full((1, 3, 24, 24), 128.0))
    inner = y[..., 8 * scale:-8 * scale, 8 * scale:-8 * scale]
    assert (inner - inner.mean(dim=(2, 3), keepdim=True)).abs().max() < 1e-3
    assert (y - 128).abs().max() > 1  # ... and it is not simply the identity


def test_bad_model_settings_are_refused():
    with pytest.raises(InputError, match="scale 3 is not one of 2, 4"):
        UpscalerConfig(scale=3)
    with pytest.raises(InputError, match="channels 0"):
        UpscalerConfig(channels=0)


# --- tiled inference ---------------------------------------------------------------


@pytest.mark.parametrize("scale,size,tile,overlap", [(4, (37, 61), 16, 4), (2, (50, 33), 20, 6), (4, (40, 40), 64, 8)])
def test_tiled_equals_untiled(scale, size, tile, overlap):
    m = randomised(scale)
    x = torch.rand(1, 3, *size) * 255
    with torch.no_grad():
        whole = m(x).clamp(0, 255)
    tiled = upscale_tensor(m, x, tile=tile, overlap=overlap)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max() < 1e-2  # in 0-255 levels: float rounding only


def test_too_small_a_halo_shows_and_the_reach_is_needed():
    """The check above can fail: tiles without context differ from the untiled picture."""
    m = randomised(4)
    x = torch.rand(1, 3, 40, 40) * 255
    with torch.no_grad():
        whole = m(x).clamp(0, 255)
    assert (upscale_tensor(m, x, tile=16, overlap=4, halo=0) - whole).abs().max() > 1.0


def test_spans_cover_and_overlap():
    spans = list(_spans(100, 32, 8))
    assert spans[0][0] == 0 and spans[-1][1] == 100
    assert all(b - a == 32 for a, b in spans)
    assert all(s[1] - t[0] >= 8 for s, t in zip(spans, spans[1:]))
    assert list(_spans(20, 32, 8)) == [(0, 20)]


def test_tiling_refuses_bad_shapes():
    m = randomised(2)
    with pytest.raises(InputError, match="expected a"):
        upscale_tensor(m, torch.rand(3, 8, 8))
    with pytest.raises(InputError, match="tile 8"):
        upscale_tensor(m, torch.rand(1, 3, 8, 8), tile=8)


# --- training ------------------------------------------------------------------------


def test_tiny_network_trains_and_its_loss_falls(crops, tiny_weights, tmp_path):
    # One mirror-symmetric photo the size of the crop: every batch is the same picture
    # (mirroring changes nothing), so the loss must fall if the gradients and the optimiser work.
    one = tmp_path / "one"
    one.mkdir()
    half = Image.open(crops / "p0.png").crop((0, 0, 8, 16))
    sym = Image.new("RGB", (16, 16))
    sym.paste(half, (0, 0))
    sym.paste(half.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (8, 0))
    sym.save(one / "a.png")
    events = []
    report = train(one, tmp_path / "m.pt", UpscalerTrainConfig(**TINY, steps=60, lr=1e-2, scale=2),
                   weights=tiny_weights, callback=events.append)
    losses = [e.loss for e in events if isinstance(e, TrainStep)]
    assert len(losses) == 60
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert report["loss_first_last"] == [losses[0], losses[-1]]


def test_checkpoint_resume_is_exact_and_model_file_describes_itself(crops, tiny_weights, tmp_path):
    cfg = UpscalerTrainConfig(**{**TINY, "checkpoint_every": 2, "preview_every": 3}, steps=6, hold_out=1)
    events = []

    def killed_after_step_4(event):
        events.append(event)
        if isinstance(event, TrainCheckpoint) and event.step == 4 and not any(
                isinstance(e, TrainCheckpoint) and e.step == 4 for e in events[:-1]):
            raise KeyboardInterrupt  # once, as Ctrl-C would

    with pytest.raises(Cancelled, match="stopped at step 4 of 6; checkpoint .*a.ckpt.pt"):
        train(crops, tmp_path / "a.pt", cfg, weights=tiny_weights, callback=killed_after_step_4)
    # Ctrl-C (KeyboardInterrupt) writes a checkpoint of the last whole step before it stops.
    assert [e.step for e in events if isinstance(e, TrainCheckpoint)] == [2, 4, 4]
    assert [e.step for e in events if isinstance(e, TrainPreview)] == [0, 3]  # at the start and every 3 steps
    assert not (tmp_path / "a.pt").exists()
    # Resume the killed run, and compare with 6 steps in one go: the same losses and weights.
    resumed = train(crops, tmp_path / "a.pt", cfg, resume=True, weights=tiny_weights)
    straight = train(crops, tmp_path / "b.pt", cfg, weights=tiny_weights)
    assert resumed["history"] == straight["history"]
    a, b = (read_model_file(tmp_path / n, "upscaler") for n in ("a.pt", "b.pt"))
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    # The model file rebuilds itself: family, arguments, weights and how it was trained.
    assert a["family"] == "upscaler" and a["kind"] == "model"
    assert a["arch_args"] == {"scale": 4, "channels": 4, "blocks": 1}
    assert a["training"]["held_out"] == ["p4.png"] and a["training"]["step"] == 6
    assert "optimizer" not in a  # the model file is small; the checkpoint holds the rest
    assert "optimizer" in read_model_file(checkpoint_path(tmp_path / "a.pt"), "upscaler")
    assert isinstance(build_network(a, "a.pt"), Upscaler)


def test_hold_out_is_every_kth_by_name(tmp_path):
    for i in range(10):
        Image.new("RGB", (4, 4)).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not a photo")
    train_set, held = split_photos(tmp_path, 3)
    assert [p.name for p in held] == ["2.png", "5.png", "8.png"]
    assert len(train_set) == 7 and not set(train_set) & set(held)
    with pytest.raises(InputError, match="need more than the 10 held aside"):
        split_photos(tmp_path, 10)


def test_bad_model_files_are_refused(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(ModelError, match=r"junk.pt: not a restyle model file \(not written by torch.save\)"):
        read_model_file(junk, "upscaler")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ModelError, match="no format 'restyle.feedforward' marker"):
        read_model_file(other, "upscaler")
    style = save_model_file(model_payload(TransformerNet(TransformerConfig((4, 8), 1, 3)), training={}),
                            tmp_path / "style.pt")
    with pytest.raises(ModelError, match="a style network, not the upscaler network asked for"):
        read_model_file(style, "upscaler")
    lying = model_payload(Upscaler(UpscalerConfig(4, 4, 1)), family="upscaler", training={})
    lying["arch_args"]["channels"] = 9
    save_model_file(lying, tmp_path / "lying.pt")
    with pytest.raises(ModelError, match="weights do not fit architecture"):
        build_network(read_model_file(tmp_path / "lying.pt", "upscaler"), tmp_path / "lying.pt")
    with pytest.raises(ModelError, match="no such file"):
        read_model_file(tmp_path / "missing.pt", "upscaler")


def test_upscaler_files_of_the_previous_format_still_load(tmp_path):
    """Model files and checkpoints written by the release before the one format (format "restyle-model")."""
    net = randomised(4, 4, 1)
    old = {"format": "restyle-model", "version": 1, "kind": "upscaler", "model_args": net.config.to_dict(),
           "state_dict": net.state_dict(), "train": {"step": 3, "held_out": []}}
    torch.save(old, tmp_path / "old.pt")
    torch.save({**{k: v for k, v in old.items() if k != "train"}, "step": 3, "history": [(1, 0.5)],
                "train_config": {}, "elapsed_s": 1.0, "optimizer": {"state": {}}, "scheduler": None},
               tmp_path / "old.ckpt.pt")
    model = load_upscaler(str(tmp_path / "old.pt"))
    x = torch.rand(1, 3, 8, 8) * 255
    assert torch.equal(model(x), net.eval()(x))
    assert read_model_file(tmp_path / "old.pt")["training"]["step"] == 3
    ckpt = read_model_file(tmp_path / "old.ckpt.pt", "upscaler")
    assert ckpt["kind"] == "checkpoint" and ckpt["training"]["history"] == [(1, 0.5)]
    assert ckpt["optimizer"] == {"state": {}}


# --- the CLI --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_upscaler(tmp_path_factory):
    """A tiny randomised 4x model file, as train-upscaler would write it."""
    p = tmp_path_factory.mktemp("model") / "tiny4.pt"
    save_model_file(model_payload(randomised(4, 4, 1), family="upscaler", training={}), p)
    return p


@pytest.mark.parametrize("scale", [2, 4])
def test_cli_upscale(tiny_upscaler, small_images, tmp_path, capsys, scale):
    c, _ = small_images
    out = tmp_path / "big.png"
    assert main(["upscale", str(c), "-o", str(out), "--scale", str(scale), "--model", str(tiny_upscaler),
                 "--tile", "24"]) == 0
    assert Image.open(out).size == (80 * scale, 64 * scale)
    assert "80x64 -> " in capsys.readouterr().out


def test_cli_upscale_with_the_bundled_model(small_images, tmp_path, capsys):
    c, _ = small_images
    out = tmp_path / "big.jpg"
    assert main(["upscale", str(c), "-o", str(out), "--quiet"]) == 0
    assert Image.open(out).size == (320, 256)
    assert capsys.readouterr().out == ""


def test_too_large_an_enlargement_is_refused_before_any_work(tiny_upscaler):
    from restyle.networks.upscale import upscale

    with pytest.raises(InputError, match=r"5000x4200 enlarged 4x is 336000000 pixels, over the limit"):
        upscale(Image.new("RGB", (5000, 4200)), 4, str(tiny_upscaler))


def test_cli_upscale_bad_inputs_exit_2(tiny_upscaler, small_images, tmp_path, capsys):
    c, _ = small_images
    before = c.read_bytes()
    cases = [
        ["upscale", str(tmp_path / "none.png"), "-o", str(tmp_path / "o.png"), "--model", str(tiny_upscaler)],
        ["upscale", str(c), "-o", str(c), "--model", str(tiny_upscaler)],
        ["upscale", str(c), "-o", str(tmp_path / "o.png"), "--model", "no-such-model"],
        ["upscale", str(c), "-o", str(tmp_path / "o.png"), "--model", str(c)],
        ["upscale", str(c), "-o", str(tmp_path / "o.png"), "--model", str(tiny_upscaler), "--tile", "4"],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("restyle: error:") and err.count("\n") == 1, err
    assert c.read_bytes() == before
    assert not (tmp_path / "o.png").exists()


def _watch_the_network(monkeypatch):
    """Record where upscale_tensor's picture is and the autocast it runs under, then run it."""
    import restyle.networks.upscale as up

    seen = []

    def watched(net, x, **kw):
        seen.append((x.device.type, torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu")))
        return upscale_tensor(net, x, **kw)

    monkeypatch.setattr(up, "upscale_tensor", watched)
    return seen


def test_cli_upscale_runs_on_the_device_and_precision_asked(tiny_upscaler, small_images, tmp_path, monkeypatch, capsys):
    """Issue 26, item 8: --device and --precision reach the network (here the CPU, in bf16 or fp32)."""
    c, _ = small_images
    seen = _watch_the_network(monkeypatch)
    base = ["upscale", str(c), "--model", str(tiny_upscaler), "--scale", "2", "--quiet", "--device", "cpu"]
    assert main([*base, "-o", str(tmp_path / "bf16.png"), "--precision", "bf16"]) == 0
    assert main([*base, "-o", str(tmp_path / "fp32.png"), "--precision", "fp32"]) == 0
    assert seen == [("cpu", torch.bfloat16), ("cpu", False)]
    bf16, fp32 = (torch.from_numpy(np.asarray(Image.open(tmp_path / n), dtype=np.float32)) for n in ("bf16.png", "fp32.png"))
    assert 0 < (bf16 - fp32).abs().mean() < 1  # half-precision convolutions: a different picture, barely


def test_stylize_upscale_enlarges_where_and_as_it_painted(tiny_upscaler, monkeypatch):
    import restyle.networks.upscale as up
    from restyle.config import StylizeConfig

    seen = {}

    def upscale_to(img, size, model, **kw):
        seen.update(kw)
        return img.resize(size)

    class Painted:
        image, report = Image.new("RGB", (64, 48)), {}

    monkeypatch.setattr(up, "upscale_to", upscale_to)
    cfg = StylizeConfig(size=128, device="cpu", precision="bf16")
    result = up.paint_and_upscale(lambda c, **kw: Painted(), cfg, model=str(tiny_upscaler), paint_limit=64)
    assert result.image.size == (128, 96) and seen == {"device": "cpu", "precision": "bf16"}


def test_cli_upscaler_commands_refuse_a_device_in_one_line(tiny_upscaler, small_images, crops, tiny_weights, tmp_path,
                                                           capsys):
    c, _ = small_images
    commands = [["upscale", str(c), "-o", str(tmp_path / "o.png"), "--model", str(tiny_upscaler)],
                ["train-upscaler", "--photos", str(crops), "-o", str(tmp_path / "m.pt"), "--weights",
                 str(tiny_weights), "--steps", "1", "--crop", "16", "--channels", "4", "--blocks", "1"]]
    bad = [("gpu", "device 'gpu' is not one of auto, cpu, cuda, mps or cuda:N")]
    if not torch.cuda.is_available():  # a device the flag names but this machine lacks: train() and upscale() say so
        bad.append(("cuda:1", "device 'cuda:1' was asked for but PyTorch sees no CUDA GPU; use --device cpu or auto"))
    for argv in commands:
        for device, message in bad:
            assert main([*argv, "--device", device]) == 2, (argv, device)
            assert capsys.readouterr().err == f"restyle: error: {message}\n"
        with pytest.raises(SystemExit) as stop:  # argparse's choices, as for every --precision
            main([*argv, "--precision", "fp8"])
        assert stop.value.code == 2 and "invalid choice: 'fp8'" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists() and not list(tmp_path.glob("m*.pt"))


def test_cli_train_upscaler_on_the_device_and_precision_asked(crops, tiny_weights, tmp_path, capsys):
    out = tmp_path / "up.pt"
    assert main(["train-upscaler", "--photos", str(crops), "-o", str(out), "--weights", str(tiny_weights),
                 "--channels", "4", "--blocks", "1", "--crop", "16", "--batch-size", "2", "--scale", "2",
                 "--steps", "2", "--preview-every", "1", "--hold-out", "1", "--device", "cpu",
                 "--precision", "bf16"]) == 0
    assert "training on 4 photos, bf16" in capsys.readouterr().err
    report = json.loads(out.with_suffix(".json").read_text())
    assert (report["device"], report["precision"], report["train_config"]["precision"]) == ("cpu", "bf16", "bf16")
    assert all(torch.isfinite(torch.tensor(h[1])) for h in report["history"])
    assert Image.open(preview_path(out)).width > 3 * 16


def test_cli_train_upscaler_and_resume(crops, tiny_weights, tmp_path, capsys):
    out = tmp_path / "up.pt"
    base = ["train-upscaler", "--photos", str(crops), "-o", str(out), "--weights", str(tiny_weights),
            "--channels", "4", "--blocks", "1", "--crop", "16", "--batch-size", "2", "--scale", "2",
            "--checkpoint-every", "2", "--preview-every", "2", "--hold-out", "1"]
    assert main([*base, "--steps", "3"]) == 0
    assert "wrote" in capsys.readouterr().out
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["step"] == 3 and len(report["history"]) == 3 and report["held_out"] == ["p4.png"]
    assert Image.open(preview_path(out)).width > 3 * 16  # bicubic | network | original
    assert checkpoint_path(out).is_file()
    # Starting afresh over a checkpoint would lose it: refused, nothing changed.
    assert main([*base, "--steps", "3"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main([*base, "--steps", "5", "--resume", "--quiet"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["step"] == 5
    # The trained file works with `restyle upscale`.
    c = next(crops.iterdir())
    assert main(["upscale", str(c), "-o", str(tmp_path / "x2.png"), "--scale", "2", "--model", str(out)]) == 0
    # ... but a 2x model cannot give 4x.
    assert main(["upscale", str(c), "-o", str(tmp_path / "x4.png"), "--scale", "4", "--model", str(out)]) == 2


def test_cli_train_upscaler_bad_inputs_exit_2(crops, tiny_weights, tmp_path, capsys):
    def go(*flags, out="m.pt", photos_dir=crops):
        code = main(["train-upscaler", "--photos", str(photos_dir), "-o", str(tmp_path / out),
                     "--weights", str(tiny_weights), "--steps", "1", "--crop", "16", *flags])
        return code, capsys.readouterr().err

    assert go(photos_dir=tmp_path / "nowhere")[0] == 2
    assert go(out="m.png")[0] == 2
    assert go("--crop", "18")[1].count("multiple of scale") == 1
    assert go("--resume")[0] == 2  # no checkpoint to resume
    (crops / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    code, err = go()
    assert code == 2 and "broken.jpg" in err and err.count("\n") == 1


def test_cli_stylize_upscale_paints_small_and_enlarges(small_images, tiny_weights, tiny_upscaler, tmp_path, capsys):
    c, s = small_images
    out = tmp_path / "big.png"
    # 1100 px: painted at the paint limit (1024 px), enlarged by the network, sized exactly.
    base = ["stylize", str(c), str(s), "-o", str(out), "--weights", str(tiny_weights), "--iterations", "1",
            "--scales", "1", "--upscale", str(tiny_upscaler), "--quiet"]
    assert main([*base, "--size", "1100"]) == 0, capsys.readouterr().err
    assert Image.open(out).size == (1100, 880)
    up = json.loads(out.with_name("big.png.json").read_text())["upscale"]
    assert up["painted"] == [1024, 819] and up["upscaled"] == [1100, 880] and up["model"] == str(tiny_upscaler)
    # Under the paint limit nothing is upscaled, and the sidecar says so.
    assert main([*base, "--size", "64"]) == 0
    up = json.loads(out.with_name("big.png.json").read_text())["upscale"]
    assert up["upscaled"] is None and up["painted"] == [64, 51]
    # More than the model's factor above the limit: refused before any painting.
    assert main([*base, "--size", "4200"]) == 2
    assert "at most 4x" in capsys.readouterr().err
    assert main(["stylize", str(c), str(s), "-o", str(tmp_path), "--batch", "--upscale"]) == 2


def test_bundled_model_is_small_and_describes_its_training():
    from restyle.networks.upscale import bundled_models, load_upscaler, model_path

    assert "up4" in bundled_models()
    path = model_path("up4")
    assert path.stat().st_size <= 10 * 2**20
    record = read_model_file(path, "upscaler")  # weights_only=True inside
    assert record["format_version"] == 2 and record["arch_args"]["scale"] == 4  # in the one format
    assert len(record["training"]["held_out"]) == 16 and record["training"]["step"] > 0
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["family"] == "upscaler"
    assert sidecar["held_out"] == record["training"]["held_out"] and len(sidecar["history"]) == sidecar["step"]
    assert load_upscaler("up4").scale == 4



def test_bundled_model_enlarges_a_photo_it_never_saw_closer_than_bicubic():
    """up4 was trained on coco256 only: the example photo, shrunk 4x, comes back closer to
    the original in LPIPS (benchmarks/quality.py's VGG-16, fetched on first use) than
    Pillow's bicubic and Lanczos bring it (measured: 0.395 against 0.447 and 0.447)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import quality

    from restyle.networks.upscale import upscale

    original = Image.open(EXAMPLES / "tubingen.jpg").convert("RGB").resize((512, 384), Image.Resampling.LANCZOS)
    small = original.resize((128, 96), Image.Resampling.BICUBIC)
    net = quality.lpips(upscale(small, 4, "up4"), original)
    for kind in (Image.Resampling.BICUBIC, Image.Resampling.LANCZOS):
        assert net < 0.95 * quality.lpips(small.resize(original.size, kind), original)
