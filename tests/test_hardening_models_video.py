"""Issue 27 (hardening, round three): what a day of hostile use found in video runs, the hybrid and
model files, each as a test that failed before the fix.

A failed video run's work folder, the hybrid's flags and sidecar, model listings that print
what a file says (escaped) and check that each model would load.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from restyle.cli.main import main
from restyle.errors import InputError

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parents[1]


# --- 10. a failed video run leaves no work folder that blocks the corrected rerun --------------


def test_video_run_without_frames_leaves_no_work_folder(clip, tmp_path, capsys):
    out = tmp_path / "s11.mp4"
    assert main(["video", str(clip), "--model", "starry_night", "-o", str(out), "--size", "48",
                 "--start", "0.99", "--quiet"]) == 2
    assert "no frames" in capsys.readouterr().err
    assert not (tmp_path / "s11.mp4.frames").exists()
    assert main(["video", str(clip), "--model", "starry_night", "-o", str(out), "--size", "48", "--quiet"]) == 0
    assert out.is_file() and not (tmp_path / "s11.mp4.frames").exists()


def test_work_folder_with_a_manifest_but_no_frame_is_taken_over(clip, tmp_path):
    """A folder an older restyle left behind after such a failure holds nothing to resume."""
    from restyle.video import NetworkFrames, VideoConfig, stylize_video

    net = lambda x: x  # noqa: E731
    work = tmp_path / "o.mp4.frames"
    work.mkdir()
    (work / "manifest.json").write_text(json.dumps({"start": 0.99, "stylizer": {"other": 1}}))
    r = stylize_video(clip, tmp_path / "o.mp4", NetworkFrames(net, 0.0), VideoConfig(size=48))
    assert r.frames == 10 and not work.exists()


def test_failed_run_keeps_a_given_work_folder_but_not_its_manifest(clip, tmp_path):
    from restyle.video import NetworkFrames, VideoConfig, stylize_video

    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(InputError, match="no frames"):
        stylize_video(clip, tmp_path / "o.mp4", NetworkFrames(lambda x: x, 0.0), VideoConfig(size=48, start=0.99),
                      work_dir=mine)
    assert mine.is_dir() and not any(mine.iterdir())


# --- 12. model listings: escaped, and checked as a load would check them ---------------------------


def craft(path: Path, *, style_name="tiny", arch_args=None, weights=None) -> Path:
    """A model file as a hostile folder would hold it: a real payload, then edited."""
    from restyle.models.modelfile import model_payload
    from restyle.models.transformer import TransformerConfig, TransformerNet

    payload = model_payload(TransformerNet(TransformerConfig((4, 8), 1, 3)), style={"name": style_name, "sha256": "0" * 64},
                            training={"steps_done": 1, "size": 32})
    if arch_args is not None:
        payload["arch_args"] = arch_args
    if weights is not None:
        payload["state_dict"] = weights(payload["state_dict"])
    torch.save(payload, path)
    return path


@pytest.fixture
def craft_dir(tmp_path):
    d = tmp_path / "craft"
    d.mkdir()
    craft(d / "a_escapes.pt", style_name="evil\n\x1b[31mred\x1b[0m\rover\u202eevil")
    craft(d / "b_negative.pt", arch_args={"widths": [4, 8], "res_blocks": -3, "stem_kernel": 3, "residual": False})
    craft(d / "c_strings.pt", weights=lambda sd: {k: "not a tensor" for k in sd})
    craft(d / "d_absurd.pt", arch_args={"widths": [10**6, 10**6], "res_blocks": 1, "stem_kernel": 3,
                                        "residual": False})
    craft(d / "e_misfit.pt", weights=lambda sd: {k: torch.zeros(2) for k in sd})
    craft(d / "f_ints.pt", weights=lambda sd: {k: v.long() for k, v in sd.items()})
    craft(d / "g_fine.pt")
    (d / "h_bad\x1bname.pt").write_bytes(b"junk")
    return d


def test_models_listing_escapes_what_a_file_says(craft_dir, capsys):
    assert main(["models", "--dir", str(craft_dir)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out
    line = next(ln for ln in out.splitlines() if "a_escapes" in ln)
    assert "evil\\n\\x1b[31mred" in line  # shown, escaped, on one line
    assert "h_bad\\x1bname.pt" in out


def test_models_listing_checks_each_model_as_loading_would(craft_dir, capsys):
    assert main(["models", "--dir", str(craft_dir)]) == 0
    lines = {ln.split()[0].rsplit("/", 1)[-1]: ln for ln in capsys.readouterr().out.splitlines()}
    for bad, why in (("b_negative.pt", "res_blocks"), ("c_strings.pt", "not a floating-point tensor"),
                     ("d_absurd.pt", "widths must be"), ("e_misfit.pt", "has shape"),
                     ("f_ints.pt", "not a floating-point tensor")):
        assert "unreadable" in lines[bad] and why in lines[bad], lines[bad]
    assert "style tiny" in lines["g_fine.pt"] and "unreadable" not in lines["a_escapes.pt"]
    assert "upscaler x4" in lines["up4"] and "style starry_night" in lines["starry_night"]  # both kinds bundled


def test_loading_a_crafted_model_is_one_line_and_allocates_nothing(craft_dir, capsys):
    from restyle.networks.feedforward import load_model
    from restyle.models.modelfile import ModelError

    for name in ("b_negative.pt", "c_strings.pt", "d_absurd.pt", "e_misfit.pt"):
        with pytest.raises(ModelError):
            load_model(craft_dir / name)  # d_absurd: 10**12 weights would not fit in memory
    out = craft_dir.parent / "o.png"
    from PIL import Image

    Image.new("RGB", (64, 48)).save(craft_dir.parent / "p.png")
    assert main(["stylize", str(craft_dir.parent / "p.png"), "--model", str(craft_dir / "d_absurd.pt"),
                 "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "widths must be" in err


# --- 11. the hybrid: its flags, its sidecar, its painting ------------------------------------------


@pytest.fixture
def hybrid(tmp_path):
    from PIL import Image

    from restyle.hashing import sha256sum

    c, s = tmp_path / "c.png", tmp_path / "s.png"
    Image.open(ROOT / "examples" / "tubingen.jpg").convert("RGB").resize((64, 48)).save(c)
    Image.open(ROOT / "examples" / "starry_night.jpg").convert("RGB").resize((48, 48)).save(s)
    other = craft(tmp_path / "other.pt", style_name="the_scream")  # trained on another painting
    same = tmp_path / "same.pt"
    payload = torch.load(other, weights_only=True)
    payload["style"] = {"name": "s", "sha256": sha256sum(s)}
    torch.save(payload, same)
    return c, s, other, same


def run_hybrid(tmp_path, c, s, model, *extra):
    return main(["stylize", str(c), str(s), "--init-model", str(model), "-o", str(tmp_path / "h.png"), "--size", "48",
                 "--iterations", "1", "--quiet", *extra])


def test_hybrid_refuses_an_init_it_would_ignore(tmp_path, hybrid, tiny_weights, capsys):
    c, s, _, same = hybrid
    assert run_hybrid(tmp_path, c, s, same, "--init", "noise", "--weights", str(tiny_weights)) == 2
    err = capsys.readouterr().err
    assert "drop --init noise" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "h.png").exists()


def test_hybrid_sidecar_records_the_model_not_a_temporary_file(tmp_path, hybrid, tiny_weights, capsys):
    from restyle.hashing import sha256sum

    c, s, _, same = hybrid
    assert run_hybrid(tmp_path, c, s, same, "--weights", str(tiny_weights)) == 0
    text = (tmp_path / "h.png.json").read_text()
    side = json.loads(text)
    assert "restyle-hybrid-" not in text and side["config"]["init"] == "init_model"
    assert side["init_model"] == str(same) and side["init_model_sha256"] == sha256sum(same)
    assert side["init_model_painted_at"] == 96 and side["init_model_style"] == "s"
    assert "warning" not in capsys.readouterr().err  # trained on this very painting


def test_hybrid_warns_when_the_model_learnt_another_painting(tmp_path, hybrid, tiny_weights, capsys):
    c, s, other, _ = hybrid
    assert run_hybrid(tmp_path, c, s, other, "--weights", str(tiny_weights)) == 0
    err = capsys.readouterr().err
    assert "warning: model" in err and "trained on another painting (the_scream)" in err


def test_model_and_init_model_together_name_the_choice(tmp_path, hybrid, capsys):
    c, s, other, same = hybrid
    for styles in ([], [str(s)]):
        assert main(["stylize", str(c), *styles, "--model", str(same), "--init-model", str(other),
                     "-o", str(tmp_path / "o.png")]) == 2
        err = capsys.readouterr().err
        assert "give one of them" in err and "use --init-model to" not in err
