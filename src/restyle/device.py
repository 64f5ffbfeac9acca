"""Devices, precisions and the network cache: where and in what number format the network runs.

    device = resolve_device("cuda:1")
    precision = resolve_precision("auto", device)     # "bf16" where it is fast and safe
    net = network(load_weights(None), "relu5_1", "max", device)
    with autocast(device, precision):
        feats = net(x, ("relu4_2",))

Losses and Gram matrices stay float32 whatever the network's precision (losses.py).
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import lru_cache
from typing import Dict, Optional

import torch

from .errors import InputError
from .models.vgg import VGG19Features
from .models.weights import Weights

PTDTYPE: Dict[str, Optional[torch.dtype]] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_fast_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX); else bf16 is emulated and slow."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, p, lambda: False)() for p in probes)


def _has_mps() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(name: str) -> torch.device:
    """"auto", "cpu", "cuda", "cuda:N" or "mps" -> a torch.device that exists here (else InputError)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _has_mps() else torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} was asked for but PyTorch sees no CUDA GPU; use --device cpu or auto")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {name!r} does not exist: PyTorch sees {torch.cuda.device_count()} CUDA GPU(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return device
    if name == "mps" and not _has_mps():
        raise InputError("device 'mps' was asked for but this PyTorch has no Apple MPS; use --device cpu or auto")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """The network's precision: auto picks bf16 only where it is fast and safe."""
    if name != "auto":
        if name == "fp16" and device.type == "cpu":
            raise InputError("precision 'fp16' is not supported on the CPU; use bf16 or fp32")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def autocast(device: torch.device, precision: str):
    """The context the network runs in: autocast to bf16/fp16, or nothing for fp32."""
    dtype = PTDTYPE[precision]
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@lru_cache(maxsize=4)
def network(weights: Weights, deepest: str, pooling: str, device: torch.device) -> VGG19Features:
    """VGG-19 up to `deepest` on `device`, built once per (weights, depth, pooling, device)."""
    net = VGG19Features.from_weights(weights, deepest, pooling).to(device)
    if device.type == "cpu":
        # oneDNN convolutions run ~1.6x faster on NHWC tensors on this kind of CPU.
        net = net.to(memory_format=torch.channels_last)
    return net


def device_name(device: torch.device) -> str:
    """A readable name for reports: the GPU's model, or the CPU's threads and vector unit."""
    import platform

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return (f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                f"{torch.backends.cpu.get_cpu_capability()})")
    return device.type
