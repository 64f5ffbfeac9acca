"""The one model-file format for every trained network family.

A model file is a plain dict saved with `torch.save` and read back with
`torch.load(weights_only=True)` (no pickled code runs on load). It carries
everything needed to rebuild and trust the network, the way nanoGPT saves
`model_args` beside the weights:

    format, format_version   "restyle.feedforward", FORMAT_VERSION
    family                   "style" (transformer.py), "upscaler" (upscaler.py), "arbitrary" (arbitrary.py): FAMILIES
    kind                     "model", or "checkpoint" (adds the optimiser state and the step)
    arch, arch_args          the family's network class name and its config's to_dict()
    state_dict               the network's weights (float32)
    style                    {"name", "sha256"} of the painting a style network learned ({} otherwise)
    training                 what the training recipe records: config, data, steps, history
    restyle_version, torch_version

A new family is one entry in FAMILIES. Files of today's older formats still load:
format version 1 (style networks, before `family`) and the upscaler's "restyle-model"
records are read into this layout. A file that is not a restyle model, is truncated,
comes from a newer format or holds another family than asked raises ModelError (an
InputError: exit code 2 in the CLI) in one line.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch

from ..errors import InputError
from .files import load_torch_file
from .registry import bundled

FORMAT = "restyle.feedforward"
FORMAT_VERSION = 2  # 2: the `family` field (1: style networks only)
KINDS = ("model", "checkpoint")
LEGACY_UPSCALER_FORMAT = "restyle-model"  # the upscaler's own format before version 2
PathLike = Union[str, os.PathLike]


class ModelError(InputError):
    """A model file is missing, not a restyle model, truncated or incompatible."""


@dataclass(frozen=True)
class Family:
    """A family of trained networks: how to rebuild one from its saved arguments, and say what it is."""

    name: str
    arch: str  # the network's class name, stored in the file
    build: Callable[[Dict[str, Any]], torch.nn.Module]  # arch_args -> a network with random weights
    summary: Callable[[Dict[str, Any]], str]  # payload -> one line for listings


def _style_network(args: Dict[str, Any]) -> torch.nn.Module:
    from .transformer import TransformerConfig, TransformerNet

    return TransformerNet(TransformerConfig(**args))


def _style_summary(payload: Dict[str, Any]) -> str:
    t, args = payload["training"], payload["arch_args"]
    return (f"widths {args.get('widths')}, {args.get('res_blocks')} residual blocks; "
            f"{t.get('steps_done', '?')} steps at {t.get('size', '?')} px")


def _upscaler_network(args: Dict[str, Any]) -> torch.nn.Module:
    from .upscaler import Upscaler, UpscalerConfig

    return Upscaler(UpscalerConfig(**args))


def _upscaler_summary(payload: Dict[str, Any]) -> str:
    t, args = payload["training"], payload["arch_args"]
    return (f"upscaler x{args.get('scale')}, {args.get('channels')} channels, {args.get('blocks')} blocks; "
            f"{t.get('step', '?')} steps")


def _arbitrary_network(args: Dict[str, Any]) -> torch.nn.Module:
    from .arbitrary import ArbitraryConfig, ArbitraryNet

    return ArbitraryNet(ArbitraryConfig(**args))


def _arbitrary_summary(payload: Dict[str, Any]) -> str:
    t, args = payload["training"], payload["arch_args"]
    return (f"any painting: widths {args.get('widths')}, {args.get('res_blocks')} residual blocks, "
            f"{args.get('code_dim')}-d style code; {t.get('steps_done', '?')} steps on {t.get('paintings', '?')} paintings")


FAMILIES: Dict[str, Family] = {
    "style": Family("style", "TransformerNet", _style_network, _style_summary),
    "upscaler": Family("upscaler", "Upscaler", _upscaler_network, _upscaler_summary),
    "arbitrary": Family("arbitrary", "ArbitraryNet", _arbitrary_network, _arbitrary_summary),
}


def save_model_file(payload: Dict[str, Any], path: PathLike) -> Path:
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
    net: torch.nn.Module,
    *,
    family: str = "style",
    training: Dict[str, Any],
    style: Optional[Dict[str, str]] = None,
    kind: str = "model",
    extra: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """The file's dict for `net` (whose `.config.to_dict()` rebuilds it) of `family`."""
    from .. import __version__

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": family,
        "kind": kind,
        "arch": FAMILIES[family].arch,
        "arch_args": net.config.to_dict(),
        "state_dict": {k: v.detach().float().cpu().clone() for k, v in net.state_dict().items()},
        "style": dict(style or {}),
        "training": dict(training),
        "restyle_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        **(extra or {}),
    }


def _from_legacy_upscaler(record: Dict[str, Any]) -> Dict[str, Any]:
    """An upscaler "restyle-model" record (version 1) in this format's layout."""
    if record.get("version") != 1 or record.get("kind") != "upscaler":
        return record  # refused below, naming what it is
    is_model = "train" in record
    training = record["train"] if is_model else {
        k: record[k] for k in ("photos", "train_photos", "held_out", "step", "elapsed_s", "weights_sha256",
                               "train_config", "history") if k in record}
    extra = {} if is_model else {k: record.get(k) for k in ("optimizer", "scheduler")}
    return {"format": FORMAT, "format_version": 1, "family": "upscaler", "kind": "model" if is_model else "checkpoint",
            "arch": FAMILIES["upscaler"].arch, "arch_args": record.get("model_args"),
            "state_dict": record.get("state_dict"), "style": {}, "training": training, **extra}


def read_model_file(path: PathLike, family: Optional[str] = None) -> Dict[str, Any]:
    """Load and check a model (or checkpoint) file, of `family` if given; ModelError names the file and the rule."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model {p}: no such file")
    payload = load_torch_file(p, error=ModelError, label="model ")  # no code runs; NaN weights refused
    if isinstance(payload, dict) and payload.get("format") == LEGACY_UPSCALER_FORMAT:
        payload = _from_legacy_upscaler(payload)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"model {p}: not a restyle model file (no format {FORMAT!r} marker)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelError(
            f"model {p}: format version {version!r} is newer than this restyle reads ({FORMAT_VERSION}); "
            f"upgrade restyle (file written by restyle {payload.get('restyle_version')})"
        )
    # Version 1 had style networks only (and the first any-painting checkpoints, by their arch).
    payload.setdefault("family", "arbitrary" if payload.get("arch") == "ArbitraryNet" else "style")
    if payload["family"] not in FAMILIES:
        raise ModelError(f"model {p}: family {payload['family']!r} is not one of {', '.join(FAMILIES)}")
    if family is not None and payload["family"] != family:
        raise ModelError(f"model {p}: a {payload['family']} network, not the {family} network asked for")
    if payload.get("kind") not in KINDS:
        raise ModelError(f"model {p}: kind {payload.get('kind')!r} is not one of {', '.join(KINDS)}")
    if payload.get("arch") != FAMILIES[payload["family"]].arch:
        raise ModelError(f"model {p}: architecture {payload.get('arch')!r} is not the {payload['family']} "
                         f"family's ({FAMILIES[payload['family']].arch})")
    for key in ("arch_args", "state_dict", "style", "training"):
        if not isinstance(payload.get(key), dict):
            raise ModelError(f"model {p}: field {key!r} is missing or not a mapping")
    check_network(payload, p)
    return payload


def check_network(payload: Dict[str, Any], path: PathLike = "<memory>") -> None:
    """Refuse a payload whose network would not build or whose weights do not fit it, allocating nothing.

    The family's network is built on the meta device (shapes, no storage), so a file that
    claims absurd widths costs nothing to refuse and a listing shows what would not load;
    every weight must be a floating-point tensor of the shape the network has under that name.
    """
    family = FAMILIES[payload.get("family", "style")]
    try:
        with torch.device("meta"):
            net = family.build(payload["arch_args"])
    except (TypeError, ValueError, KeyError) as e:  # InputError is a ValueError too
        raise ModelError(f"model {path}: architecture arguments are not valid ({printable(e, 200)})") from None
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    weights = payload["state_dict"]
    for key, value in weights.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise ModelError(f"model {path}: weight {printable(key, 60)} is not a floating-point tensor")
    missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or extra:
        raise ModelError(f"model {path}: weights do not fit architecture {printable(payload['arch_args'], 200)} "
                         f"(missing {printable(missing[:3], 120)}, unexpected {printable(extra[:3], 120)})")
    for key, shape in expected.items():
        if tuple(weights[key].shape) != shape:
            raise ModelError(f"model {path}: weights do not fit architecture {printable(payload['arch_args'], 200)} "
                             f"(weight {key} has shape {tuple(weights[key].shape)}, the architecture {shape})")


def printable(value: Any, limit: int = 80) -> str:
    """`value` as text that is safe on a terminal: control characters (newlines, ANSI escapes, bidi
    overrides) written as escapes, cut to `limit` characters. For what a file says about itself."""
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_network(payload: Dict[str, Any], path: PathLike = "<memory>") -> torch.nn.Module:
    """Rebuild the network from its saved arguments and load its weights (strictly), in eval mode."""
    try:
        net = FAMILIES[payload.get("family", "style")].build(payload["arch_args"])
        net.load_state_dict(payload["state_dict"], strict=True)
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise ModelError(f"model {path}: weights do not fit architecture {payload['arch_args']} ({first})") from None
    return net.eval()


def load_network(name_or_path: PathLike, family: Optional[str] = None) -> Tuple[torch.nn.Module, Dict[str, Any], Path]:
    """(network in eval mode on the CPU, the file's payload without weights, its path) for a bundled
    name or a file, of `family` if given."""
    path = resolve_model(name_or_path, family)
    payload = read_model_file(path, family)
    net = build_network(payload, path)
    return net, {k: v for k, v in payload.items() if k not in ("state_dict", "optimizer", "scheduler")}, path


def bundled_models(family: Optional[str] = "style") -> Dict[str, Path]:
    """Networks shipped in the package, by name (file stem): one family's (style networks by
    default, as `--model` takes), or with `family=None` all of them."""
    return {name: b.path for name, b in bundled(family).items()}


def resolve_model(name_or_path: PathLike, family: Optional[str] = "style") -> Path:
    """A bundled network's name (``starry_night``, ``up4``) or a path to a model file."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    found = bundled(family)
    if str(name_or_path) in found:
        return found[str(name_or_path)].path
    names = ", ".join(found) or "none installed"
    raise ModelError(f"model {name_or_path}: no such file, and not a bundled model name ({names})")


def sidecar_of(model_path: Path) -> Path:
    """The training sidecar JSON written beside a model: starry.pt -> starry.json."""
    return model_path.with_suffix(".json")


def describe(payload: Dict[str, Any]) -> Tuple[str, str]:
    """(the painting's name, "-" for a network without one, and a one-line summary) for listings,
    safe to print: what the file says is escaped."""
    name = payload["style"].get("name") or "-"
    return printable(name, 40), printable(FAMILIES[payload.get("family", "style")].summary(payload), 200)
