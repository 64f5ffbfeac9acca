"""The one way restyle reads a file written by `torch.save`: model files, checkpoints, VGG-19 weights.

`torch.load(weights_only=True)` runs no pickled code, but its errors are written for
the developer who saved the file: seven lines ending with advice to load it again
with `weights_only=False`, "[Errno 22] Invalid argument" for a truncated archive,
nothing at all for an empty file. `load_torch_file` says in one line what is wrong
with the file (it holds code, it is damaged, it is not a PyTorch file) and never
repeats the advice to turn the protection off. It also refuses any floating-point
tensor holding NaN or an infinity: such weights paint an all-black picture (or
train a network that does), which no check downstream would notice.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Iterator, Tuple, Type, Union

import torch

from ..errors import InputError

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6


def load_torch_file(
    path: Union[str, os.PathLike], *, refusal: str = "not a restyle model file", error: Type[Exception] = InputError,
    label: str = "",
) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU. A file torch cannot read safely, or one
    holding non-finite numbers, raises `error` in one line: "{label}{path}: {refusal} ({why})"."""
    p = Path(path)
    where = f"{label}{p}"
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "GLOBAL" in text or "Unsupported global" in text:  # a class or function torch's safe loader refused
            reason = "it holds code or objects restyle does not load"
        elif _is_zip(p):
            reason = "it is truncated or damaged"
        else:
            reason = "not written by torch.save"
        raise error(f"{where}: {refusal} ({reason})") from None
    except Exception:  # noqa: BLE001 - a truncated archive raises RuntimeError, OSError, EOFError, ...
        reason = "it is truncated or damaged" if _is_zip(p) else "not written by torch.save"
        raise error(f"{where}: {refusal} ({reason})") from None
    name = next(non_finite(obj), None)
    if name is not None:
        raise error(f"{where}: {refusal} (tensor {name} holds NaN or infinite values: broken weights)")
    return obj


def _is_zip(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(4) == _ZIP_MAGIC
    except OSError:
        return False


def _tensors(obj: Any, prefix: str = "") -> Iterator[Tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix or "<file>", obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}[{i}]")


def non_finite(obj: Any) -> Iterator[str]:
    """The names (dotted paths) of the floating-point tensors in `obj` holding NaN or an infinity."""
    for name, t in _tensors(obj):
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            yield name
