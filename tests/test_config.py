import pytest

from restyle.config import VGG19_LAYERS, StylizeConfig
from restyle.errors import InputError


def test_default_layers_are_the_papers_plus_relu2_2_for_content():
    cfg = StylizeConfig()
    assert cfg.content_layers == ("relu2_2", "relu4_2")  # relu4_2 is the paper's; relu2_2 measured in issue 11
    assert cfg.style_layers == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    assert cfg.size == 512
    paper = StylizeConfig(preset="gatys2016")
    assert paper.content_layers == ("relu4_2",) and paper.style_norm == "none" and paper.init == "noise"


def test_layer_names_follow_vgg19():
    assert len([n for n in VGG19_LAYERS if n.startswith("conv")]) == 16
    assert VGG19_LAYERS[:5] == ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1")
    assert VGG19_LAYERS[-1] == "pool5"


@pytest.mark.parametrize(
    "change, words",
    [
        ({"size": 10}, ["size 10", "[32, 8192]"]),
        ({"size": 100000}, ["size 100000"]),
        ({"iterations": 0}, ["iterations 0"]),
        ({"style_layers": ("relu9_9",)}, ["relu9_9", "relu4_2"]),
        ({"content_layers": ()}, ["content_layers"]),
        ({"content_weight": -1.0}, ["content_weight -1.0", ">= 0"]),
        ({"style_weight": float("nan")}, ["style_weight nan"]),
        ({"tv_weight": -0.1}, ["tv_weight"]),
        ({"style_blend_weights": (1.0, -2.0)}, ["style_blend_weights -2.0"]),
        ({"style_blend_weights": (0.0, 0.0)}, ["sum to 0"]),
        ({"style_layer_weights": (1.0,)}, ["one weight per layer"]),
        ({"style_scale": 0.0}, ["style_scale 0.0", "[0.05, 8]"]),
        ({"optimizer": "sgd"}, ["sgd", "lbfgs, adam"]),
        ({"device": "tpu"}, ["tpu", "auto, cpu, cuda, mps"]),
        ({"precision": "fp8"}, ["fp8", "fp32"]),
        ({"lr": -1.0}, ["lr -1.0"]),
        ({"scales": ()}, ["scales"]),
        ({"style_strength": -1.0}, ["style_strength -1.0", "[0, 1000]"]),
        ({"style_strength": float("inf")}, ["style_strength inf"]),
        ({"style_norm": "max"}, ["style_norm 'max'", "target, none"]),
    ],
)
def test_bad_values_are_named_with_their_rule(change, words):
    with pytest.raises(InputError) as e:
        StylizeConfig(**change)
    for w in words:
        assert w in str(e.value)


def test_unknown_layer_message_lists_exactly_the_accepted_names():
    with pytest.raises(InputError) as e:
        StylizeConfig(content_layers=("conv6_1",))
    listed = str(e.value).split("choose from ")[1].split(", ")
    assert tuple(listed) == VGG19_LAYERS


def test_replace_validates():
    with pytest.raises(InputError):
        StylizeConfig().replace(size=1)


def test_lr_default_depends_on_optimizer():
    assert StylizeConfig().lr_or_default == 1.0
    assert StylizeConfig(optimizer="adam").lr_or_default > 0
    assert StylizeConfig(lr=0.5).lr_or_default == 0.5


def test_style_strength_multiplies_the_style_weight():
    assert StylizeConfig().style_weight_effective == StylizeConfig().style_weight
    assert StylizeConfig(style_weight=50, style_strength=3).style_weight_effective == 150
    # The paper's preset keeps the paper's (unscaled) loss whatever the default becomes.
    assert StylizeConfig.from_preset("gatys2016").style_norm == "none"
    assert StylizeConfig.from_preset("gatys2016", style_norm="target").style_norm == "target"


def test_a_preset_given_to_the_constructor_applies_its_values():
    hq = StylizeConfig(preset="hq")
    assert (hq.size, hq.iterations, hq.precision) == (1024, 300, "fp32")
    assert StylizeConfig(preset="hq", size=256).size == 256  # explicit values override the preset
    assert StylizeConfig(preset="hq") == StylizeConfig().replace(preset="hq") == StylizeConfig.from_preset("hq")
    assert hq.replace(size=512).size == 512 and hq.replace(size=512).preset == "hq"  # changes apply as given
    assert StylizeConfig(**hq.to_dict()) == hq


def test_devices_include_one_gpu_of_several():
    assert StylizeConfig(device="cuda:1").device == "cuda:1"
    with pytest.raises(InputError, match="device 'cuda1' is not one of auto, cpu, cuda, mps or cuda:N"):
        StylizeConfig(device="cuda1")


def test_files_are_not_checked_when_a_config_is_built(tmp_path):
    """A config may be built on one machine and run on another: files are checked where they are opened."""
    cfg = StylizeConfig(init=str(tmp_path / "elsewhere.png"), mask=(str(tmp_path / "mask.png"),))
    assert cfg.init.endswith("elsewhere.png") and cfg.mask[0].endswith("mask.png")


# --- issue 15: API values are coerced where unambiguous, refused clearly otherwise ------


def test_api_values_are_coerced_to_the_declared_types():
    from pathlib import Path

    import numpy as np

    cfg = StylizeConfig(size=64.0, iterations=np.int64(5), content_layers="relu4_2", style_layers=["relu1_1"],
                        scales=[32.0, 64], content_weight=3, style_layer_weights=1, max_memory=2)
    assert (cfg.size, cfg.iterations, cfg.scales) == (64, 5, (32, 64))
    assert type(cfg.size) is int and type(cfg.iterations) is int and type(cfg.content_weight) is float
    assert cfg.content_layers == ("relu4_2",) and cfg.style_layers == ("relu1_1",)
    assert cfg.style_layer_weights == (1.0,) and cfg.max_memory == 2.0
    assert cfg.replace(mask=Path(__file__)).mask == (__file__,)
    assert cfg.replace(content_layers="relu3_2").content_layers == ("relu3_2",)


@pytest.mark.parametrize("change, message", [
    ({"size": 64.5}, "size 64.5 must be an integer in [32, 8192]"),
    ({"size": "64"}, "size '64' must be an integer in [32, 8192]"),
    ({"size": True}, "size True must be an integer in [32, 8192]"),
    ({"content_layers": {"relu4_2"}}, "content_layers {'relu4_2'} must be a name or a list or tuple of them"),
    ({"scales": {256: 1}}, "scales {256: 1} must be an integer or a list or tuple of them"),
    ({"style_weight": True}, "style_weight True must be a finite number >= 0"),
    ({"content_weight": "5"}, "content_weight '5' must be a finite number >= 0"),
])
def test_api_values_that_are_not_coercible_are_refused_naming_value_and_rule(change, message):
    with pytest.raises(InputError) as e:
        StylizeConfig(**change)
    assert str(e.value) == message
