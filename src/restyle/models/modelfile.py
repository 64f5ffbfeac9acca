"""Self-describing model files for the feed-forward style networks.

A model file is a plain dict saved with `torch.save` and read back with
`torch.load(weights_only=True)` (no pickled code runs on load). It carries
everything needed to rebuild and trust the network, the way nanoGPT saves
`model_args` beside the weights:

    format, format_version   "restyle.feedforward", FORMAT_VERSION
    kind                     "model", or "checkpoint" (adds optimizer + step)
    arch, arch_args          "TransformerNet", TransformerConfig.to_dict()
    state_dict               the network's weights (float32)
    style                    {"name", "sha256"} of the painting it was trained on
    training                 the training config, data fingerprint, held-aside photos, steps
    restyle_version, torch_version

A file that is not a restyle model, is truncated, or comes from a newer format
raises ModelError (an InputError: exit code 2 in the CLI) in one line.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

from ..errors import InputError
from .transformer import TransformerConfig, TransformerNet

FORMAT = "restyle.feedforward"
FORMAT_VERSION = 1
KINDS = ("model", "checkpoint")
ARCHS = {"TransformerNet": (TransformerNet, TransformerConfig)}
BUNDLED_DIR = Path(__file__).parent / "bundled"
MODEL_SUFFIX = ".pt"


class ModelError(InputError):
    """A model file is missing, not a restyle model, truncated or incompatible."""


def save_model_file(payload: Dict[str, Any], path: Union[str, os.PathLike]) -> Path:
    """Write `payload` to a temporary file beside `path`, then rename: never half a model."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make a shared model file private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def model_payload(
    net: TransformerNet,
    *,
    style: Dict[str, str],
    training: Dict[str, Any],
    kind: str = "model",
    extra: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    from .. import __version__

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "arch": "TransformerNet",
        "arch_args": net.config.to_dict(),
        "state_dict": {k: v.detach().float().cpu().clone() for k, v in net.state_dict().items()},
        "style": dict(style),
        "training": dict(training),
        "restyle_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        **(extra or {}),
    }


def read_model_file(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Load and check a model (or checkpoint) file; ModelError names the file and the rule."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model {p}: no such file")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle of code, random bytes: torch raises many kinds
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ModelError(f"model {p}: not a readable restyle model file ({type(e).__name__}: {reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"model {p}: not a restyle model file (no format {FORMAT!r} marker)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelError(
            f"model {p}: format version {version!r} is newer than this restyle reads ({FORMAT_VERSION}); "
            f"upgrade restyle (file written by restyle {payload.get('restyle_version')})"
        )
    if payload.get("kind") not in KINDS:
        raise ModelError(f"model {p}: kind {payload.get('kind')!r} is not one of {', '.join(KINDS)}")
    if payload.get("arch") not in ARCHS:
        raise ModelError(f"model {p}: architecture {payload.get('arch')!r} is not one of {', '.join(ARCHS)}")
    for key in ("arch_args", "state_dict", "style", "training"):
        if not isinstance(payload.get(key), dict):
            raise ModelError(f"model {p}: field {key!r} is missing or not a mapping")
    return payload


def build_network(payload: Dict[str, Any], path: Union[str, os.PathLike] = "<memory>") -> TransformerNet:
    """Rebuild the network from its saved arguments and load its weights (strictly)."""
    net_cls, cfg_cls = ARCHS[payload["arch"]]
    try:
        config = cfg_cls(**payload["arch_args"])
        net = net_cls(config)
        net.load_state_dict(payload["state_dict"], strict=True)
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise ModelError(f"model {path}: weights do not fit architecture {payload['arch_args']} ({first})") from None
    return net.eval()


def bundled_models() -> Dict[str, Path]:
    """Models shipped in the package, by name (file stem)."""
    if not BUNDLED_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(BUNDLED_DIR.glob(f"*{MODEL_SUFFIX}"))}


def resolve_model(name_or_path: Union[str, os.PathLike]) -> Path:
    """A bundled model's name (``starry_night``) or a path to a model file."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    bundled = bundled_models()
    if str(name_or_path) in bundled:
        return bundled[str(name_or_path)]
    names = ", ".join(bundled) or "none installed"
    raise ModelError(f"model {name_or_path}: no such file, and not a bundled model name ({names})")


def sidecar_of(model_path: Path) -> Path:
    """The training sidecar JSON written beside a model: starry.pt -> starry.json."""
    return model_path.with_suffix(".json")


def describe(payload: Dict[str, Any]) -> Tuple[str, str]:
    """(style name, one-line summary) for listings."""
    t = payload["training"]
    args = payload["arch_args"]
    return payload["style"].get("name", "?"), (
        f"widths {args.get('widths')}, {args.get('res_blocks')} residual blocks; "
        f"{t.get('steps_done', '?')} steps at {t.get('size', '?')} px"
    )
