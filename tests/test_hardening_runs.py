"""Issue 27 (hardening, round three): what a day of hostile use found in training, model files,
sizes, video timing and Ray, each as a test that failed before the fix.

Ctrl-C during a training is in test_interrupts.py (it needs a real process and a real signal).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from restyle.cli import main
from restyle.errors import InputError
from restyle.style_training import TrainConfig, checkpoint_path, train

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TINY_TRAIN = dict(size=32, batch_size=2, style_size=48, holdout=1, preview_every=0, checkpoint_every=0,
                  precision="fp32", lr=1e-2, threads=1, widths=(4, 8), res_blocks=1)


@pytest.fixture
def photos(tmp_path):
    """Five small photos cut from the example (one is held aside)."""
    d = tmp_path / "photos"
    d.mkdir()
    src = Image.open(EXAMPLES / "tubingen.jpg").convert("RGB")
    for i in range(5):
        src.crop((i * 60, i * 20, i * 60 + 300, i * 20 + 240)).resize((60, 48)).save(d / f"p{i}.jpg")
    return d


# --- 2. --resume with another painting or other photos is refused ----------------------------------


def test_resume_refuses_another_painting_and_other_photos(tmp_path, photos, tiny_weights):
    out = tmp_path / "m.pt"
    starry, scream = EXAMPLES / "starry_night.jpg", tmp_path / "the_scream.png"
    Image.open(starry).convert("RGB").rotate(90).save(scream)
    train(starry, photos, out, TrainConfig(steps=2, **TINY_TRAIN), weights=tiny_weights)
    before = checkpoint_path(out).read_bytes()
    with pytest.raises(InputError, match=r"trained on painting starry_night.jpg .*not the_scream.png"):
        train(scream, photos, out, TrainConfig(steps=4, **TINY_TRAIN), weights=tiny_weights, resume=True)
    Image.open(photos / "p0.jpg").rotate(180).save(photos / "p0.jpg")  # same names, another picture
    with pytest.raises(InputError, match="other photos"):
        train(starry, photos, out, TrainConfig(steps=4, **TINY_TRAIN), weights=tiny_weights, resume=True)
    assert checkpoint_path(out).read_bytes() == before  # nothing was written


def test_cli_resume_with_another_painting_exits_2_in_one_line(tmp_path, photos, tiny_weights, capsys):
    out = tmp_path / "m.pt"
    scream = tmp_path / "scream.png"
    Image.open(EXAMPLES / "starry_night.jpg").convert("RGB").rotate(90).save(scream)
    common = ["--photos", str(photos), "-o", str(out), "--weights", str(tiny_weights), "--size", "32",
              "--batch-size", "2", "--style-size", "48", "--holdout", "1", "--preview-every", "0",
              "--widths", "4,8", "--res-blocks", "1", "--precision", "fp32", "--quiet"]
    assert main(["train", str(EXAMPLES / "starry_night.jpg"), *common, "--steps", "2"]) == 0
    capsys.readouterr()
    assert main(["train", str(scream), *common, "--steps", "4", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "starry_night.jpg" in err and "scream.png" in err, err


# --- 5, 9 and 13: model files and weights that are not what they claim: one line, exit 2 -------------


class _Payload:
    """Pickled as a call to open(MARKER, "w"): loading it with pickle would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _tiny_style_model(path: Path) -> Path:
    from restyle.modelfile import model_payload, save_model_file
    from restyle.models.transformer import TransformerConfig, TransformerNet

    torch.manual_seed(0)
    net = TransformerNet(TransformerConfig((4, 8), 1, 3))
    return save_model_file(model_payload(net, style={"name": "tiny", "sha256": "0" * 64}, training={}), path)


def _tiny_upscaler(path: Path, kind: str = "model") -> Path:
    from restyle.models.upscaler import Upscaler, UpscalerConfig, model_record
    from restyle.training import save_record

    record = model_record(Upscaler(UpscalerConfig(2, 4, 1)))
    if kind == "checkpoint":
        record.update(step=1, history=[], elapsed_s=0.0, optimizer={}, scheduler=None, train_config={})
    return save_record(record, path)


@pytest.fixture
def photo(tmp_path):
    p = tmp_path / "photo.png"
    Image.open(EXAMPLES / "tubingen.jpg").convert("RGB").resize((64, 48)).save(p)
    return p


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def _commands(path: Path, photo: Path, tmp_path: Path):
    """Every command that reads a model file, a checkpoint or weights, reading `path`."""
    out = tmp_path / "out.png"
    photos = tmp_path / "ph"
    photos.mkdir(exist_ok=True)
    for i in range(3):
        Image.open(photo).save(photos / f"p{i}.png")
    ckpt_out = tmp_path / "up.pt"
    return {
        "stylize --weights": ["stylize", str(photo), str(photo), "-o", str(out), "--weights", str(path)],
        "stylize --model": ["stylize", str(photo), "--model", str(path), "-o", str(out)],
        "export": ["export", str(path), "-o", str(tmp_path / "m.onnx")],
        "upscale --model": ["upscale", str(photo), "-o", str(out), "--scale", "2", "--model", str(path)],
        "train-upscaler --resume": ["train-upscaler", "--photos", str(photos), "-o", str(ckpt_out), "--resume",
                                    "--steps", "2", "--crop", "16"],
    }


def _place(command: str, path: Path, tmp_path: Path) -> None:
    if command == "train-upscaler --resume":  # the file is the checkpoint it resumes
        (tmp_path / "up.ckpt.pt").write_bytes(path.read_bytes())


@pytest.mark.parametrize("command", ["stylize --weights", "stylize --model", "export", "upscale --model",
                                     "train-upscaler --resume"])
def test_a_file_holding_code_is_refused_in_one_line_without_torchs_advice(tmp_path, photo, capsys, command):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "restyle.feedforward", "state_dict": _Payload(marker)}, evil)
    _place(command, evil, tmp_path)
    assert main(_commands(evil, photo, tmp_path)[command]) == 2
    err = _one_line(capsys)
    assert "it holds code or objects restyle does not load" in err, err
    assert "weights_only" not in err and "arbitrary code" not in err
    assert not marker.exists() and not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("command", ["stylize --model", "export", "upscale --model", "train-upscaler --resume"])
def test_a_truncated_model_or_checkpoint_says_so(tmp_path, photo, capsys, command):
    good = tmp_path / "good.pt"
    (_tiny_upscaler if command in ("upscale --model", "train-upscaler --resume") else _tiny_style_model)(good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:-30])  # torch: "[Errno 22] Invalid argument"
    _place(command, cut, tmp_path)
    assert main(_commands(cut, photo, tmp_path)[command]) == 2
    err = _one_line(capsys)
    assert "truncated or damaged" in err and "Errno" not in err, err


def test_nan_weights_are_refused_when_loading(tmp_path, photo, capsys):
    from restyle.feedforward import load_model
    from restyle.upscale import load_upscaler
    from restyle.weights import load_weights
    from conftest import tiny_torchvision_state

    style = _tiny_style_model(tmp_path / "style.pt")
    payload = torch.load(style, weights_only=True)
    key = next(k for k in payload["state_dict"] if k.endswith("weight"))
    payload["state_dict"][key][0] = float("nan")
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(InputError, match=f"tensor state_dict.{key} holds NaN"):
        load_model(tmp_path / "nan.pt")
    assert main(["stylize", str(photo), "--model", str(tmp_path / "nan.pt"), "-o", str(tmp_path / "o.png")]) == 2
    assert "NaN" in _one_line(capsys) and not (tmp_path / "o.png").exists()

    up = torch.load(_tiny_upscaler(tmp_path / "up.pt"), weights_only=True)
    next(iter(up["state_dict"].values())).fill_(float("inf"))
    torch.save(up, tmp_path / "inf_up.pt")
    with pytest.raises(InputError, match="NaN or infinite"):
        load_upscaler(str(tmp_path / "inf_up.pt"))

    vgg = tiny_torchvision_state()
    vgg["features.0.bias"][1] = float("nan")
    torch.save(vgg, tmp_path / "nan_vgg.pth")
    with pytest.raises(InputError, match="features.0.bias holds NaN"):
        load_weights(tmp_path / "nan_vgg.pth")
