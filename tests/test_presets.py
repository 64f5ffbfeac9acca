"""Named presets: one home (config.PRESETS), listed by `restyle presets`, explicit values win."""

import json
from dataclasses import fields

import pytest

from restyle.cli.main import build_parser, main
from restyle.config import PRESET_HELP, PRESETS, StylizeConfig
from restyle.errors import InputError


def test_every_preset_names_real_fields_with_valid_values():
    names = {f.name for f in fields(StylizeConfig)}
    assert set(PRESETS) == set(PRESET_HELP) >= {"gatys2016", "fast", "hq"}
    for name, values in PRESETS.items():
        assert set(values) <= names - {"preset"}, name
        cfg = StylizeConfig.from_preset(name)
        assert cfg.preset == name
        for key, value in values.items():
            assert getattr(cfg, key) == value


def test_gatys2016_is_the_papers_setup():
    cfg = StylizeConfig.from_preset("gatys2016")
    assert cfg.content_layers == ("relu4_2",)
    assert cfg.style_layers == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    assert len(set(cfg.style_layer_weights)) == 1
    assert (cfg.pooling, cfg.init, cfg.optimizer, cfg.scales, cfg.tv_weight) == ("avg", "noise", "lbfgs", (1,), 0.0)


def test_explicit_values_override_the_preset_and_replace_applies_it():
    cfg = StylizeConfig.from_preset("fast", size=128)
    assert (cfg.size, cfg.iterations) == (128, PRESETS["fast"]["iterations"])
    assert StylizeConfig(size=300).replace(preset="hq").size == PRESETS["hq"]["size"]
    with pytest.raises(InputError, match="preset 'nope' is not one of gatys2016, fast, hq"):
        StylizeConfig.from_preset("nope")


def test_presets_command_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name, values in PRESETS.items():
        assert f"{name}: {PRESET_HELP[name]}" in out
        for key in values:
            assert "--" + key.replace("_", "-") in out


def test_preset_flag_applies_then_flags_override_and_sidecar_records_both(small_images, tiny_weights, tmp_path, capsys):
    c, s = small_images
    out = tmp_path / "o.png"
    code = main(["stylize", str(c), str(s), "-o", str(out), "--weights", str(tiny_weights), "--quiet",
                 "--preset", "gatys2016", "--size", "48", "--iterations", "2"])
    assert code == 0, capsys.readouterr().err
    cfg = json.loads(out.with_name(out.name + ".json").read_text())["config"]
    assert cfg["preset"] == "gatys2016" and cfg["pooling"] == "avg" and cfg["init"] == "noise"
    assert cfg["size"] == 48 and cfg["iterations"] == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["stylize", "c", "s", "-o", "o.png", "--preset", "slow"])
