"""Tiny trained networks for the tests, and what they train on: random weights, milliseconds a picture.

One name, one thing:
- `style_model_file`: a style network's model file (family "style", widths 4, 8, one block);
- `STYLE_TRAIN` / `style_train_config`: the knobs (and the `TrainConfig`) for training one in a few steps;
- `arbitrary_net` / `arbitrary_model_file`: the any-painting network (reads the tiny VGG of
  conftest's `tiny_weights`) and its model file;
- `make_corpus` / `arbitrary_train_config`: paintings and photos to train it on, and a config;
- `frame_net`: not a model file but a callable (1,3,H,W) 0-255 -> 0-255, the video tests' "network".
"""

from __future__ import annotations

import torch
from PIL import Image

TINY_NET = dict(widths=(4, 8), res_blocks=1)


def style_model_file(path, seed=0):
    """A tiny random style network's model file, with non-trivial instance-norm affine parameters."""
    from restyle.models.modelfile import model_payload, save_model_file
    from restyle.models.transformer import TransformerConfig, TransformerNet

    torch.manual_seed(seed)
    net = TransformerNet(TransformerConfig((4, 8), 1, 3))
    for m in net.modules():  # non-trivial instance-norm affine parameters
        if isinstance(m, torch.nn.InstanceNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return save_model_file(model_payload(net, style={"name": "tiny", "sha256": "0" * 64}, training={"steps_done": 0}), path)


# A style network's training small enough that a step takes milliseconds on the tiny VGG (TrainConfig's knobs).
STYLE_TRAIN = dict(size=32, batch_size=2, style_size=48, holdout=1, preview_every=0, checkpoint_every=0,
                   precision="fp32", lr=1e-2, threads=1, **TINY_NET)


def style_train_config(**kw):
    """STYLE_TRAIN's TrainConfig, 6 steps unless `kw` says otherwise."""
    from restyle.networks.style_training import TrainConfig

    return TrainConfig(**{"steps": 6, **STYLE_TRAIN, **kw})


def arbitrary_net(seed=0):
    """A tiny random any-painting network whose heads give codes that matter."""
    from restyle.models.arbitrary import ArbitraryConfig, ArbitraryNet

    torch.manual_seed(seed)
    net = ArbitraryNet(ArbitraryConfig((4, 8), 1, code_dim=6, hidden=8, layer_channels=(4, 8, 8, 8)))
    torch.nn.init.normal_(net.heads.weight, std=0.5)  # codes that matter
    return net.eval()


def arbitrary_model_file(path, seed=0):
    """A tiny random any-painting model file that reads the tiny VGG (conftest's tiny_weights): no training."""
    from restyle.models.modelfile import model_payload, save_model_file

    net = arbitrary_net(seed)
    save_model_file(model_payload(net, family="arbitrary", training={}, style={"name": "any painting"}), path)
    return path


def make_corpus(root):
    """Four paintings with different palettes and five photos, tiny, under `root`."""
    g = torch.Generator().manual_seed(1)
    (root / "paintings").mkdir()
    (root / "photos").mkdir()
    for i in range(4):
        arr = (torch.rand(72, 96, 3, generator=g) * 255).to(torch.uint8).numpy()
        arr[:, : 30 + 10 * i] //= (i + 2)  # different palettes
        Image.fromarray(arr).save(root / "paintings" / f"p{i}.png")
    for i in range(5):
        arr = (torch.rand(64, 80, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(root / "photos" / f"x{i}.png")
    return root


def arbitrary_train_config(**kw):
    """An any-painting ArbitraryTrainConfig for the tiny network and `make_corpus`'s pictures."""
    from restyle.config.train import ArbitraryTrainConfig

    base = dict(size=32, style_size=64, encode_size=64, widths=(4, 8), res_blocks=1, code_dim=6, holdout_every=4,
                holdout=1, crops_per_painting=2, init_from="", steps=2, preview_every=0, checkpoint_every=1,
                precision="fp32", lr=1e-2)
    base.update(kw)
    return ArbitraryTrainConfig(**base)


def frame_net(seed=0):
    """A tiny random convolutional 'style network' for video frames: (1,3,H,W) 0-255 in and out."""
    g = torch.Generator().manual_seed(seed)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.3)
        conv.bias.zero_()
    return lambda x: torch.sigmoid(conv(x / 127.5 - 1)) * 255
