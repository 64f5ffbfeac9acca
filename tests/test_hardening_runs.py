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
