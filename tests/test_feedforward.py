"""Feed-forward style networks: the network, training, model files, tiling, ONNX, CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from restyle.cli.main import main
from restyle.config import StylizeConfig
from restyle.errors import Cancelled, InputError
from restyle.networks.feedforward import StyleModel, load_model, receptive_radius
from restyle.models.modelfile import FORMAT_VERSION, ModelError, bundled_models, model_payload, read_model_file, save_model_file
from restyle.models.transformer import TransformerConfig, TransformerNet
from restyle.networks.style_training import (
    StyleObjective,
    TrainConfig,
    TrainStart,
    TrainStep,
    checkpoint_path,
    sample_batch,
    split_photos,
    train,
)
from tinynets import style_model_file, style_train_config

ROOT = Path(__file__).resolve().parents[1]


# ---- the network --------------------------------------------------------------------------------


@pytest.mark.parametrize("h,w", [(32, 32), (37, 50), (9, 70)])
def test_network_keeps_any_size(h, w):
    net = TransformerNet(TransformerConfig((4, 8, 8), 1, 5)).eval()
    with torch.no_grad():
        y = net(torch.rand(2, 3, h, w) * 255)
    assert y.shape == (2, 3, h, w)
    assert torch.isfinite(y).all()


def test_residual_network_starts_near_the_photo():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 40, 48) * 255
    with torch.no_grad():
        near = (TransformerNet(TransformerConfig((4, 8), 1, 9, residual=True))(x) - x).abs().mean()
        plain = (TransformerNet(TransformerConfig((4, 8), 1, 9))(x) - x).abs().mean()
    assert near < 0.3 * plain


def test_network_config_rejects_bad_values():
    with pytest.raises(ValueError, match="stem_kernel"):
        TransformerConfig((4, 8), 1, 4)
    with pytest.raises(ValueError, match="widths"):
        TransformerConfig((), 1)
    with pytest.raises(InputError, match="res_blocks"):
        TrainConfig(res_blocks=-1)


# ---- data -----------------------------------------------------------------------------------------


def test_batches_depend_on_step_only(photos):
    from restyle.networks.style_training import list_photos, load_photo_u8

    data = [load_photo_u8(p) for p in list_photos(photos)]
    cfg = style_train_config()
    a, b = sample_batch(data, cfg, 7), sample_batch(data, cfg, 7)
    assert a.shape == (2, 3, 32, 32)
    assert torch.equal(a, b)
    assert not torch.equal(a, sample_batch(data, cfg, 8))


def test_holdout_is_deterministic_and_disjoint():
    names = [Path(f"{i:03d}.jpg") for i in range(20)]
    train_set, held = split_photos(names, 4)
    assert len(held) == 4 and not set(held) & set(train_set)
    assert len(train_set) + len(held) == 20
    assert split_photos(names, 4) == (train_set, held)


# ---- training -------------------------------------------------------------------------------------


def objective_on_fixed_batch(model_path, photos, tiny_weights, style_path):
    """The training objective of a saved model on one fixed batch (the photos themselves)."""
    from restyle.device import network
    from restyle.optimiser.engine import Painter
    from restyle.images import load_image, resize, to_tensor
    from restyle.models.modelfile import build_network
    from restyle.models.layers import deepest_layer
    from restyle.networks.style_training import list_photos, load_photo_u8
    from restyle.models.weights import load_weights

    cfg = style_train_config()
    net = build_network(read_model_file(model_path))
    vgg = network(load_weights(tiny_weights), deepest_layer(cfg.content_layers, cfg.style_layers), "max",
                  torch.device("cpu"))
    style = to_tensor(resize(load_image(style_path), cfg.style_size))
    obj = StyleObjective(Painter(vgg, torch.device("cpu"), "fp32"), style, cfg)
    x = torch.stack([load_photo_u8(p)[:, :32, :32].float() for p in list_photos(photos)])
    with torch.no_grad():
        return float(sum(obj(net(x), x).values()))


def test_tiny_network_learns(tmp_path, photos, tiny_weights, style_path):
    steps = []
    out = train(style_path, photos, tmp_path / "m.pt", style_train_config(steps=40), weights=tiny_weights,
                callback=lambda e: steps.append(e) if isinstance(e, TrainStep) else None)
    assert [e.step for e in steps] == list(range(1, 41))
    # The untrained network (the same seeded initialisation, 0 steps) against the trained one.
    train(style_path, photos, tmp_path / "m0.pt", style_train_config(steps=1, lr=0.0), weights=tiny_weights)
    before = objective_on_fixed_batch(tmp_path / "m0.pt", photos, tiny_weights, style_path)
    after = objective_on_fixed_batch(out, photos, tiny_weights, style_path)
    assert after < 0.7 * before


def test_model_file_describes_itself(tmp_path, photos, tiny_weights, style_path):
    out = train(style_path, photos, tmp_path / "m.pt", style_train_config(steps=2), weights=tiny_weights)
    p = read_model_file(out)
    assert p["kind"] == "model" and p["format_version"] == FORMAT_VERSION
    assert p["arch_args"] == {"widths": [4, 8], "res_blocks": 1, "stem_kernel": 9, "residual": False}
    assert p["style"]["name"] == "starry_night" and len(p["style"]["sha256"]) == 64
    t = p["training"]
    assert t["steps_done"] == 2 and t["held_out"] == ["p4.jpg"] and len(t["data_fingerprint"]) == 64
    assert t["config"]["size"] == 32
    assert "optimizer" not in p
    assert [h[0] for h in t["history"]] == [1]
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["model_sha256"] == load_model(out).sha256 and side["training"]["steps_done"] == 2
    # Round trip: the loaded network computes what the saved one did.
    m = load_model(out)
    x = torch.rand(1, 3, 40, 36) * 255
    y = m.stylize_tensor(x)
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 255
    ck = read_model_file(checkpoint_path(out))
    assert ck["kind"] == "checkpoint" and ck["step"] == 2 and "optimizer" in ck
    torch.testing.assert_close(ck["state_dict"], p["state_dict"])


def test_resume_continues_at_the_same_step(tmp_path, photos, tiny_weights, style_path):
    straight = train(style_path, photos, tmp_path / "a.pt", style_train_config(steps=6), weights=tiny_weights)
    train(style_path, photos, tmp_path / "b.pt", style_train_config(steps=3), weights=tiny_weights)
    events = []
    resumed = train(style_path, photos, tmp_path / "b.pt", style_train_config(steps=6), weights=tiny_weights,
                    resume=True, callback=events.append)
    assert [e.start_step for e in events if isinstance(e, TrainStart)] == [3]
    assert [e.step for e in events if isinstance(e, TrainStep)] == [4, 5, 6]
    a, b = read_model_file(straight)["state_dict"], read_model_file(resumed)["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_resume_refuses_changed_settings(tmp_path, photos, tiny_weights, style_path):
    train(style_path, photos, tmp_path / "b.pt", style_train_config(steps=2), weights=tiny_weights)
    with pytest.raises(InputError, match="lr"):
        train(style_path, photos, tmp_path / "b.pt", style_train_config(steps=4, lr=0.5), weights=tiny_weights, resume=True)


def test_stop_leaves_a_usable_checkpoint(tmp_path, photos, tiny_weights, style_path):
    seen = []
    with pytest.raises(Cancelled, match="step 2 of 50"):
        train(style_path, photos, tmp_path / "m.pt", style_train_config(steps=50), weights=tiny_weights,
              callback=seen.append, should_stop=lambda: sum(isinstance(e, TrainStep) for e in seen) >= 2)
    ck = checkpoint_path(tmp_path / "m.pt")
    assert read_model_file(ck)["step"] == 2
    assert load_model(ck)(Image.new("RGB", (40, 40), "red")).size == (40, 40)


@pytest.mark.slow
def test_killed_run_resumes(tmp_path, photos, tiny_weights, style_path):
    out = tmp_path / "k.pt"
    cmd = [sys.executable, "-m", "restyle", "train", str(style_path), "--photos", str(photos), "-o", str(out),
           "--weights", str(tiny_weights), "--steps", "100000", "--size", "32", "--batch-size", "2",
           "--style-size", "48", "--holdout", "1", "--checkpoint-every", "1", "--preview-every", "0",
           "--widths", "4,8", "--res-blocks", "1", "--precision", "fp32", "--threads", "1", "--lr", "0.01",
           "--quiet"]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ck = checkpoint_path(out)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if ck.exists() and read_model_file(ck)["step"] >= 3:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = read_model_file(ck)["step"]
    assert done >= 3
    events = []
    train(style_path, photos, out, style_train_config(steps=done + 2, checkpoint_every=1), weights=tiny_weights,
          resume=True, callback=events.append)
    assert [e.step for e in events if isinstance(e, TrainStep)] == [done + 1, done + 2]
    assert read_model_file(out)["training"]["steps_done"] == done + 2


# ---- model files ------------------------------------------------------------------------------------


def test_bad_model_files_are_refused(tmp_path):
    good = style_model_file(tmp_path / "good.pt")
    cases = {}
    cases["random.pt"] = os.urandom(3000)
    cases["truncated.pt"] = good.read_bytes()[: good.stat().st_size // 2]
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    newer = torch.load(good, weights_only=True)
    newer["format_version"] = FORMAT_VERSION + 1
    torch.save(newer, tmp_path / "newer.pt")
    wrong = torch.load(good, weights_only=True)
    wrong["arch_args"]["widths"] = [5, 8]
    torch.save(wrong, tmp_path / "wrong.pt")
    messages = {
        "random.pt": r"not a restyle model file \(not written by torch.save\)",
        "truncated.pt": r"not a restyle model file \(it is truncated or damaged\)",
        "plain.pt": "not a restyle model file",
        "newer.pt": "newer than this restyle reads",
        "wrong.pt": "do not fit architecture",
        "missing.pt": "no such file",
    }
    for name, text in messages.items():
        with pytest.raises(ModelError, match=text):
            load_model(tmp_path / name)


def test_cli_refuses_a_bad_model_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    photo = tmp_path / "c.png"
    Image.new("RGB", (40, 40)).save(photo)
    assert main(["stylize", str(photo), "--model", str(bad), "-o", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.pt" in err
    assert not (tmp_path / "o.png").exists()


# ---- stylize ------------------------------------------------------------------------------------------


def test_tiles_give_the_whole_picture(tmp_path):
    model = load_model(style_model_file(tmp_path / "m.pt"), tile=32)
    x = torch.rand(1, 3, 90, 101) * 255
    assert receptive_radius(model.net) > 0
    whole = model.stylize_tensor(x, tiled=False)
    tiled = model.stylize_tensor(x, tiled=True)  # stats measured on the whole (small) picture
    assert (tiled - whole).abs().max() < 0.05


def test_bf16_on_a_cpu_runs_a_bf16_copy_and_paints_what_autocast_paints(tmp_path):
    file = style_model_file(tmp_path / "m.pt")
    fp32, bf16 = load_model(file, precision="fp32", tile=32), load_model(file, precision="bf16", tile=32)
    run = bf16.runner()
    assert fp32.runner() is fp32.net and run is bf16.runner()  # made once
    assert run is not bf16.net and next(run.parameters()).dtype == torch.bfloat16
    assert next(bf16.net.parameters()).dtype == torch.float32  # the model's own weights stay as loaded
    x = torch.rand(1, 3, 90, 101) * 255
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = bf16.net(x).float().clamp(0, 255)
    whole = bf16.stylize_tensor(x, tiled=False)
    assert (whole - autocast).abs().mean() < 1.0 and (whole - fp32.stylize_tensor(x)).abs().mean() < 2.0
    assert (bf16.stylize_tensor(x, tiled=True) - whole).abs().mean() < 1.0  # the tiles' norms replay the copy's


def test_load_model_api(tmp_path):
    import restyle

    model = restyle.load_model(str(style_model_file(tmp_path / "m.pt")))
    assert isinstance(model, StyleModel) and len(model.sha256) == 64
    img = Image.new("RGB", (45, 32), (200, 120, 40))  # 32 px: the short side of every painting path
    out = model(img)
    assert isinstance(out, Image.Image) and out.size == (45, 32)
    img.save(tmp_path / "p.png")
    assert model(tmp_path / "p.png").size == (45, 32)
    x = torch.rand(2, 3, 33, 36) * 255
    assert model.stylize_tensor(x).shape == (2, 3, 33, 36)
    with pytest.raises(ValueError, match="N, 3, H, W"):
        model.stylize_tensor(torch.rand(3, 20, 24))


# ---- ONNX -------------------------------------------------------------------------------------------


def test_onnx_export_matches_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from restyle.networks.export import export_onnx

    model_path = style_model_file(tmp_path / "m.pt")
    res = export_onnx(model_path, tmp_path / "m.onnx")
    assert res.opset >= 17 and res.max_abs_diff is not None and res.max_abs_diff < 0.5
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, 53, 47) * 255  # a size the export never saw
    got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
    ref = load_model(model_path).stylize_tensor(x)
    assert got.shape == ref.shape and (got - ref).abs().max() < 0.5


def test_export_refuses_low_opset_and_bad_suffix(tmp_path):
    from restyle.networks.export import export_onnx

    model_path = style_model_file(tmp_path / "m.pt")
    with pytest.raises(InputError, match="opset 13 is below 17"):
        export_onnx(model_path, tmp_path / "m.onnx", opset=13)
    with pytest.raises(InputError, match=".onnx"):
        export_onnx(model_path, tmp_path / "m.txt")


# ---- CLI ----------------------------------------------------------------------------------------------


def test_cli_train_models_stylize_export(tmp_path, photos, tiny_weights, style_path, capsys):
    out = tmp_path / "m.pt"
    args = ["train", str(style_path), "--photos", str(photos), "-o", str(out), "--weights", str(tiny_weights),
            "--steps", "3", "--size", "32", "--batch-size", "2", "--style-size", "48", "--holdout", "1",
            "--preview-every", "2", "--widths", "4,8", "--res-blocks", "1", "--precision", "fp32", "--quiet"]
    assert main(args) == 0
    assert read_model_file(out)["training"]["steps_done"] == 3
    # At the start, every 2 steps and at the end.
    assert sorted(p.name for p in (tmp_path / "m_previews").iterdir()) == ["step000000.png", "step000002.png", "step000003.png"]
    assert main(args) == 2  # the model exists: refused, not overwritten
    assert "exists" in capsys.readouterr().err
    assert main(args + ["--steps", "4", "--resume"]) == 0  # continues from the checkpoint at step 3
    assert read_model_file(out)["training"]["steps_done"] == 4

    assert main(["models", "--dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert "m.pt" in listing and "starry_night" in listing

    photo = tmp_path / "photo.png"
    Image.open(ROOT / "examples" / "tubingen.jpg").convert("RGB").resize((64, 48)).save(photo)
    res = tmp_path / "res.png"
    assert main(["stylize", str(photo), "--model", str(out), "-o", str(res), "--quiet"]) == 0
    assert Image.open(res).size == (64, 48)
    small = tmp_path / "small.png"
    assert main(["stylize", str(photo), "--model", str(out), "-o", str(small), "--size", "48", "--no-sidecar"]) == 0
    assert Image.open(small).size == (48, 36) and not (tmp_path / "small.png.json").exists()
    assert "one pass" in capsys.readouterr().out
    side = json.loads((tmp_path / "res.png.json").read_text())
    assert side["model_sha256"] == load_model(out).sha256 and side["mode"] == "feedforward"

    lum = tmp_path / "lum.png"
    assert main(["stylize", str(photo), "--model", str(out), "-o", str(lum), "--preserve-colors", "luminance",
                 "--quiet"]) == 0
    assert json.loads((tmp_path / "lum.png.json").read_text())["preserve_colors"] == "luminance"
    assert Image.open(lum).tobytes() != Image.open(res).tobytes()

    hist = tmp_path / "hist.png"
    assert main(["stylize", str(photo), "--model", str(out), "-o", str(hist), "--preserve-colors", "histogram",
                 "--quiet"]) == 0
    assert Image.open(hist).size == (64, 48)

    batch_out = tmp_path / "batch"
    batch_out.mkdir()
    assert main(["stylize", str(photos), "--model", str(out), "-o", str(batch_out), "--quiet"]) == 0
    assert len(list(batch_out.glob("*__m.png"))) == 5

    pytest.importorskip("onnxruntime")
    assert main(["export", str(out), "-o", str(tmp_path / "m.onnx")]) == 0
    assert "max |diff|" in capsys.readouterr().out
    assert main(["export", str(out), "-o", str(tmp_path / "n.onnx"), "--opset", "18", "--no-check"]) == 0
    assert "opset 18" in capsys.readouterr().out and (tmp_path / "n.onnx").stat().st_size > 0
    assert main(["export", str(out), "-o", str(tmp_path / "o.onnx"), "--opset", "11"]) == 2


def hybrid_inputs(tmp_path):
    """A tiny model file, a 64x48 photo and a 48x48 painting for the hybrid's CLI tests."""
    model = style_model_file(tmp_path / "m.pt")
    c, s = tmp_path / "c.png", tmp_path / "s.png"
    Image.open(ROOT / "examples" / "tubingen.jpg").convert("RGB").resize((64, 48)).save(c)
    Image.open(ROOT / "examples" / "starry_night.jpg").convert("RGB").resize((48, 48)).save(s)
    return model, c, s


def test_cli_hybrid_starts_from_the_network(tmp_path, tiny_weights, capsys):
    model, c, s = hybrid_inputs(tmp_path)
    out = tmp_path / "h.png"
    assert main(["stylize", str(c), str(s), "--init-model", str(model), "-o", str(out), "--size", "48",
                 "--weights", str(tiny_weights), "--iterations", "2", "--quiet"]) == 0
    side = json.loads((tmp_path / "h.png.json").read_text())
    assert side["init_model_sha256"] == load_model(model).sha256
    assert Image.open(out).size == (48, 36)


def test_cli_hybrid_defaults_refine_at_full_size_only(tmp_path, tiny_weights):
    """Without --iterations, --scales or --content-weight the hybrid runs its own plan, and the sidecar says so."""
    from restyle.cli.models import HYBRID_CONTENT_WEIGHT, HYBRID_ITERATIONS

    model, c, s = hybrid_inputs(tmp_path)
    out = tmp_path / "h.png"
    assert main(["stylize", str(c), str(s), "--init-model", str(model), "-o", str(out), "--size", "48",
                 "--weights", str(tiny_weights), "--quiet"]) == 0
    side = json.loads((tmp_path / "h.png.json").read_text())
    assert side["config"]["content_weight"] == HYBRID_CONTENT_WEIGHT != StylizeConfig().content_weight
    assert side["stages"] == [{"long_side": 48, "iterations": HYBRID_ITERATIONS, "style_long_side": 48}]


def test_cli_stylize_usage_errors(tmp_path, capsys):
    photo = tmp_path / "c.png"
    Image.new("RGB", (40, 40)).save(photo)
    model = style_model_file(tmp_path / "m.pt")
    assert main(["stylize", str(photo), "-o", str(tmp_path / "o.png")]) == 2
    assert "at least one style image" in capsys.readouterr().err
    assert main(["stylize", str(photo), str(photo), "--model", str(model), "-o", str(tmp_path / "o.png")]) == 2
    assert "without a style image" in capsys.readouterr().err
    assert main(["stylize", str(photo), "--model", "no_such_model", "-o", str(tmp_path / "o.png")]) == 2
    assert "not a bundled model name" in capsys.readouterr().err


def test_web_job_shows_the_bundled_network_at_once(tmp_path, monkeypatch):
    """A painting a bundled model was trained on: preview.jpg is the network's picture before the optimiser runs."""
    from restyle.models import registry
    from restyle.web.worker import _instant_preview

    bundled = tmp_path / "bundled"
    bundled.mkdir()
    style = tmp_path / "style.jpg"
    Image.open(ROOT / "examples" / "starry_night.jpg").convert("RGB").resize((40, 32)).save(style)
    torch.manual_seed(0)
    net = TransformerNet(TransformerConfig((4, 8), 1, 3))
    from restyle.hashing import sha256sum

    save_model_file(model_payload(net, style={"name": "starry", "sha256": sha256sum(style)}, training={}),
                    bundled / "starry.pt")
    (bundled / "starry.json").write_text(json.dumps({"family": "style", "style": {"name": "starry"}}))
    monkeypatch.setattr(registry, "BUNDLED_DIR", bundled)
    photo = tmp_path / "content.png"
    Image.new("RGB", (50, 40), (10, 200, 30)).save(photo)
    info = _instant_preview(photo, style, 48, tmp_path)
    assert info["model"] == "starry" and (tmp_path / "preview.jpg").exists()
    assert Image.open(tmp_path / "preview.jpg").size == (48, 38)
    other = tmp_path / "other.png"
    Image.new("RGB", (40, 40), "blue").save(other)
    assert _instant_preview(photo, other, 48, tmp_path / "none") is None  # no model for this painting


def test_bundled_model_is_listed_and_paints():
    from restyle.hashing import sha256sum

    assert "starry_night" in bundled_models()
    model = load_model("starry_night")
    assert model.info["style"]["sha256"] == sha256sum(ROOT / "examples" / "starry_night.jpg")
    assert bundled_models()["starry_night"].stat().st_size <= 10 * 2**20
    assert model.info["training"]["wall_s"] <= 60 * 60  # trained on this CPU within the hour
    photo = Image.open(ROOT / "examples" / "tubingen.jpg").convert("RGB").resize((96, 72))
    out = model(photo)
    assert out.size == photo.size
    diff = torch.tensor(list(out.tobytes()), dtype=torch.float) - torch.tensor(list(photo.tobytes()), dtype=torch.float)
    assert diff.abs().mean() > 5  # it repaints, it does not hand the photo back


def test_train_several_styles_here_one_model_each(tmp_path, photos, tiny_weights, style_path, capsys):
    """Without Ray, several paintings train one after another under the batch rules (the Ray tests run the rest)."""
    from restyle.batch.model_batch import train_styles

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.open(style_path).convert("RGB").resize((48, 48)).save(a)
    Image.open(style_path).convert("RGB").resize((48, 48)).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(b)
    models = tmp_path / "models"
    models.mkdir()
    (models / "b.pt").write_bytes(b"someone else's file")
    events = []
    report = train_styles([a, b], photos, models, style_train_config(steps=2), weights=tiny_weights, callback=events.append)
    assert [o.status for o in report.outcomes] == ["done", "failed"]
    assert "b.pt exists and is not this style's model" in report.failed[0].error
    assert (models / "b.pt").read_bytes() == b"someone else's file"  # refused, never overwritten
    assert read_model_file(models / "a.pt")["training"]["steps_done"] == 2
    assert [e.done for e in events if type(e).__name__ == "BatchProgress"][-1] == 2
    assert 0 < min(e.done for e in events if type(e).__name__ == "BatchProgress") < 1  # steps feed the bar

    base = ["train", str(a), str(b), "--photos", str(photos), "--weights", str(tiny_weights), "--steps", "2",
            "--holdout", "1"]
    assert main(base + ["-o", str(tmp_path / "m.pt")]) == 2
    assert "looks like a model file name" in capsys.readouterr().err
    assert main(base + ["-o", str(models), "--resume"]) == 2
    assert "--resume is implied" in capsys.readouterr().err
    assert main(base + ["-o", str(models), "--ray-workers", "2"]) == 2
    assert "--ray-workers and --ray-cpus-per-worker need --ray" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_every_bundled_network_is_in_the_one_format():
    """One format for every family; the registry reads each one's family from its sidecar, without torch."""
    from restyle.models.modelfile import FORMAT_VERSION, read_model_file
    from restyle.models.registry import bundled

    found = bundled()
    assert {"starry_night": "style", "up4": "upscaler"}.items() <= {n: b.family for n, b in found.items()}.items()
    for name, b in found.items():
        payload = read_model_file(b.path, b.family)
        assert payload["format_version"] == FORMAT_VERSION and payload["family"] == b.family, name
    assert set(bundled("style")) >= {"starry_night"} and "up4" not in bundled("style")


def test_style_files_of_the_previous_format_still_load(tmp_path):
    """Format version 1 (before the `family` field) is read as a style network."""
    path = style_model_file(tmp_path / "new.pt")
    payload = torch.load(path, weights_only=True)
    old = {k: v for k, v in payload.items() if k != "family"}
    old["format_version"] = 1
    torch.save(old, tmp_path / "old.pt")
    x = torch.rand(1, 3, 32, 32) * 255  # 32 px: the network's smallest picture
    assert torch.equal(load_model(tmp_path / "old.pt").stylize_tensor(x), load_model(path).stylize_tensor(x))
    assert read_model_file(tmp_path / "old.pt")["family"] == "style"


def test_training_photos_are_made_smaller_once_at_load(tmp_path):
    """Issue 26, item 11: a photo is kept at the most a crop at the largest scale uses, not full size."""
    from restyle.networks.training import load_photo_u8

    big = tmp_path / "big.png"
    Image.new("RGB", (1200, 900), "gray").save(big)
    x = load_photo_u8(big, short_side=410)  # size 256 x max_scale 1.6
    assert x.dtype == torch.uint8 and tuple(x.shape) == (3, 410, 547)
    assert tuple(load_photo_u8(big, short_side=1000).shape) == (3, 900, 1200)  # never made larger
    assert tuple(load_photo_u8(big, long_side=640).shape) == (3, 480, 640)


def test_photos_load_on_threads_in_order(tmp_path):
    from restyle.networks.training import load_photo_u8, load_photos

    paths = []
    for i in range(9):
        paths.append(tmp_path / f"p{i}.png")
        Image.new("RGB", (40 + i, 30), (i * 20, 0, 0)).save(paths[-1])
    loaded = load_photos(paths, short_side=20)
    assert [tuple(x.shape) for x in loaded] == [tuple(load_photo_u8(p, short_side=20).shape) for p in paths]
    assert [int(x[0, 0, 0]) for x in loaded] == [i * 20 for i in range(9)]


def test_preview_grids_are_written_whole_into_their_folder(tmp_path):
    from restyle.networks.training import save_preview

    grid_image = Image.new("RGB", (64, 32), (10, 200, 30))
    path = save_preview(grid_image, tmp_path / "previews", 7)
    assert path == tmp_path / "previews" / "step000007.png"
    with Image.open(path) as back:
        assert back.size == (64, 32) and back.getpixel((5, 5)) == (10, 200, 30)


def test_cosine_decay_ends_at_a_tenth_and_resumes_on_its_curve(tmp_path, photos, tiny_weights, style_path):
    from restyle.networks.training import cosine_lr

    with pytest.raises(InputError, match="lr_decay 'linear' is not one of none, cosine"):
        style_train_config(lr_decay="linear")
    cfg = style_train_config(steps=6, lr=1e-2, lr_decay="cosine")
    straight = train(style_path, photos, tmp_path / "a.pt", cfg, weights=tiny_weights)
    ck = read_model_file(checkpoint_path(straight))
    assert ck["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-2 * cosine_lr(6)(6)) == pytest.approx(1e-3)
    # Stopped after step 3 and resumed: the rate goes on along the curve, the weights end where the straight run's do.
    done = []
    with pytest.raises(Cancelled):
        train(style_path, photos, tmp_path / "b.pt", cfg, weights=tiny_weights, should_stop=lambda: len(done) == 3,
              callback=lambda e: done.append(e) if isinstance(e, TrainStep) else None)
    half = read_model_file(checkpoint_path(tmp_path / "b.pt"))
    assert half["scheduler"]["last_epoch"] == 3
    resumed = train(style_path, photos, tmp_path / "b.pt", cfg, weights=tiny_weights, resume=True)
    a, b = read_model_file(straight)["state_dict"], read_model_file(resumed)["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    # A constant-rate checkpoint refuses a cosine resume: the settings name the difference.
    with pytest.raises(InputError, match="lr_decay"):
        train(style_path, photos, tmp_path / "a.pt", replace(cfg, lr_decay="none", steps=8), weights=tiny_weights,
              resume=True)
