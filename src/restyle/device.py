"""Devices, precisions and the network cache: where and in what number format the network runs.

    device = resolve_device("cuda:1")
    precision = resolve_precision("auto", device)     # "bf16" where it is fast and safe
    net = network(load_weights(None), "relu5_1", "max", device)
    with autocast(device, precision):
        feats = net(x, ("relu4_2",))

Losses and Gram matrices stay float32 whatever the network's precision (losses.py).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from functools import lru_cache
from typing import Dict, Iterator, Optional, Sequence, Tuple

import torch

from .config import valid_device
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
    valid_device(name)  # "gpu" or "cuda0": the rule and its choices, not torch's RuntimeError
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


def worker_device(name: str, visible_gpus: Sequence[int]) -> str:
    """The device a Ray actor uses for `name`: "cuda" wherever the user said cuda[:N] and Ray gave it GPUs.

    Ray sets each GPU actor's CUDA_VISIBLE_DEVICES to the GPU(s) it assigned, so
    inside the actor that GPU is cuda:0 whatever N the driver was given ("cuda:1"
    would not exist there). "auto" and "cpu" are left as they are.
    """
    if visible_gpus and (name == "cuda" or name.startswith("cuda:")):
        return "cuda"
    return name


def cuda_precision(capability: Tuple[int, int]) -> str:
    """auto's precision on a GPU of compute `capability` (major, minor).

    bf16 is native from Ampere (8.0) up. torch.cuda.is_bf16_supported() says True on
    V100 and T4 too, where bf16 is emulated and slower than fp32, so it is not asked.
    Volta and Turing (7.x) have fp16 tensor cores: fp16, backpropagated through
    loop.LossScaler. Older GPUs have no fast half precision: fp32.
    """
    if tuple(capability) >= (8, 0):
        return "bf16"
    if tuple(capability) >= (7, 0):
        return "fp16"
    return "fp32"


def resolve_precision(name: str, device: torch.device) -> str:
    """The network's precision: auto picks bf16 or fp16 only where it is fast and safe."""
    if name != "auto":
        if name == "fp16" and device.type == "cpu":
            raise InputError("precision 'fp16' is not supported on the CPU; use bf16 or fp32")
        return name
    if device.type == "cuda":
        return cuda_precision(torch.cuda.get_device_capability(device))
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
    if prefers_channels_last(device):
        net = net.to(memory_format=torch.channels_last)
    return net


def prefers_channels_last(device: torch.device) -> bool:
    """Whether the network's weights and inputs are NHWC on `device` (both or neither: a mix converts every layer).

    oneDNN convolutions run ~1.6x faster on NHWC tensors on this kind of CPU; cuDNN's
    tensor-core kernels (bf16, fp16, TF32) are NHWC kernels.
    """
    return device.type in ("cpu", "cuda")


def network_layout(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`x` in the memory layout the network on `device` runs in (see prefers_channels_last)."""
    return x.contiguous(memory_format=torch.channels_last) if prefers_channels_last(device) else x


@contextmanager
def cuda_settings(device: torch.device, precision: str, *, benchmark: bool) -> Iterator[None]:
    """cuDNN and matmul settings for one stretch of work on `device`; restored on exit. Nothing off CUDA.

    - TF32 only where the run is not fp32: "--precision fp32" then means fp32 convolutions
      (torch enables cuDNN TF32 by default, 10-bit mantissas), and a bf16/fp16 run's
      fp32 Gram matrices use TF32 tensor cores (exact for bf16 inputs, whose 8-bit
      mantissas fit TF32's 10).
    - cudnn.benchmark where input shapes repeat (a training run, an untiled scale): it times
      the kernels once per shape. Tiled scales move their tiles, so their shapes change.
    """
    if device.type != "cuda":
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark)
    tf32 = precision != "fp32"
    cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark = tf32, tf32, benchmark
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark = saved


def synchronize(device: torch.device) -> None:
    """Wait for `device`'s queued work, so a clock read after it times the work (CUDA is asynchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def free_cached_memory(device: Optional[torch.device] = None) -> None:
    """Hand the allocator's cached blocks back to the GPU (after an out-of-memory, between jobs)."""
    if (device is None or device.type == "cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


def use_device(device: torch.device) -> torch.device:
    """Make `device` this thread's current CUDA device (kernels torch starts without one land there)."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return device


def device_name(device: torch.device) -> str:
    """A readable name for reports: the GPU's model, or the CPU's threads and vector unit."""
    import platform

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return (f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                f"{torch.backends.cpu.get_cpu_capability()})")
    return device.type
