"""The memory planner: estimate a run's peak memory before it starts, and choose how to fit.

Estimates are a model, not a measurement: bytes of every activation VGG-19
keeps for the backward pass, the float32 copies the Gram matrices need, the
image and the optimiser's state, the weights and a fixed runtime base. The
constants were calibrated against the peak RSS of real runs on a CPU
(tests/test_memory.py checks the estimate against a measured peak within a
stated factor). Pure apart from `available_bytes()`.

Fallbacks, in order, when the untiled run does not fit the budget:
  1. L-BFGS with a shorter history (down to MIN_HISTORY pairs);
  2. tiled rendering (tiling.py), tiles small enough to fit, L-BFGS history to fit;
  3. tiled with Adam (2 image-sized buffers instead of 2 per history pair);
then a ResourceError naming the estimate, the budget and the largest size that fits.
A smaller output is never chosen silently: it changes what the user gets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import ResourceError
from ..models.layers import layer_shapes

GB = 1024**3
MB = 1024**2
LBFGS_HISTORY = 100  # jcjohnson/neural-style's default; 2 image-sized vectors per pair
MIN_HISTORY = 10  # below this L-BFGS is hardly better than Adam
# Python, torch and oneDNN libraries, their scratch buffers, allocator slack. Measured on the
# developers' machine: 450-600 MB across venvs; CI's machine ran a 384 px Adam run at a 1.12 GB
# peak where the developers' measured 0.70-0.81 GB with the same tensors: the runtime's share
# differs by machine, and the planner must stay on the safe side of the larger one.
RUNTIME_BASE = 896 * MB
# On a GPU the libraries and the CUDA context live outside the budget (host memory, or already
# taken from mem_get_info's free memory); what the run adds beside its tensors is cuDNN's
# workspace (cudnn.benchmark may pick kernels that want a few hundred MB) and the caching
# allocator's rounding. Not yet calibrated on a GPU: benchmarks/gpu_smoke.sh measures it.
CUDA_RUNTIME = 512 * MB
BACKWARD_FACTOR = 1.6  # in-flight gradients and allocator fragmentation over the saved activations
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
TILE_MARGIN = 64  # px of context around a tile's core (see tiling.py)
MIN_TILE = 256
AUTO_TILES = (1024, 512, MIN_TILE)
BUDGET_FRACTION = 0.85  # of the memory available when the run starts


@dataclass(frozen=True)
class Estimate:
    """Peak bytes of one scale, by part."""

    parts: Dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def estimate(
    width: int,
    height: int,
    *,
    deepest: str = "relu5_1",
    style_layers: Sequence[str] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
    content_layers: Sequence[str] = ("relu4_2",),
    precision: str = "fp32",
    optimizer: str = "lbfgs",
    history: int = LBFGS_HISTORY,
    tile: Optional[int] = None,
    widths: Sequence[int] = (64, 128, 256, 512, 512),
    style_pixels: Optional[int] = None,
    device_type: str = "cpu",
) -> Estimate:
    """Peak memory of one scale at `width` x `height` (tile = core side of tiles, None = whole image)."""
    b = BYTES[precision]
    img = width * height * 3 * 4  # one float32 image-sized tensor
    # The network sees a tile with its margins, or the whole image.
    if tile is not None:
        tw, th = min(width, tile + 2 * TILE_MARGIN), min(height, tile + 2 * TILE_MARGIN)
    else:
        tw, th = width, height
    shapes = layer_shapes(tw, th, deepest, widths)
    acts = sum(c * h * w for _, c, h, w in shapes) * b
    largest = max(c * h * w for _, c, h, w in shapes)
    grams_in = sum(c * h * w for n, c, h, w in shapes if n in style_layers) * 4  # fp32 copies kept for mm's backward
    network = int((acts + grams_in + 2 * largest * 4) * BACKWARD_FACTOR)
    params = sum(9 * cin * cout + cout for cin, cout in _conv_io(deepest, widths))
    full = layer_shapes(width, height, deepest, widths)
    content_t = sum(c * h * w for n, c, h, w in full if n in content_layers) * 4
    grams = sum(c * c for n, c, _, _ in full if n in style_layers) * 4 * 3
    # Style targets are computed once, without gradients, before the loop (tiled as well when tiling).
    sp = style_pixels if style_pixels is not None else width * height
    side = int(sp**0.5)
    st_shapes = layer_shapes(min(side, tile + 2 * TILE_MARGIN) if tile else side,
                              min(side, tile + 2 * TILE_MARGIN) if tile else side, deepest, widths)
    targets_pass = sum(c * h * w for n, c, h, w in st_shapes if n in style_layers) * (b + 4) + \
        2 * max(c * h * w for _, c, h, w in st_shapes) * b
    opt_state = img * (2 * history + 2) if optimizer == "lbfgs" else img * 2
    parts = {
        "runtime": CUDA_RUNTIME if device_type.startswith("cuda") else RUNTIME_BASE,
        "weights": params * (4 + (b if b != 4 else 0)),
        "image_and_grad": img * 5,  # x, its gradient, NHWC copy, tile gradient buffer, output
        "optimizer": opt_state,
        "targets": content_t + grams,
        "network": max(network, targets_pass),
    }
    return Estimate({k: int(v) for k, v in parts.items()})


def _conv_io(deepest: str, widths: Sequence[int]) -> List[Tuple[int, int]]:
    io, cin = [], 3
    for name, c, _, _ in layer_shapes(64, 64, deepest, widths):
        if name.startswith("conv"):
            io.append((cin, c))
            cin = c
    return io


def available_bytes(device_type: str = "cpu") -> int:
    """Memory a run may use now: the GPU's free memory ("cuda" or "cuda:N"), else MemAvailable
    (Linux) or a sysconf guess."""
    if device_type.startswith("cuda"):
        import torch

        device = torch.device(device_type)
        free, _ = torch.cuda.mem_get_info(device)
        # mem_get_info's free memory excludes the blocks this process's caching allocator holds
        # but no tensor uses: a long-lived worker would plan each job with less. They are ours.
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(0, cached))
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * GB


@dataclass(frozen=True)
class StagePlan:
    width: int
    height: int
    optimizer: str
    history: int
    tile: Optional[int]  # core side of tiles in px; None = whole image
    bytes: int
    note: str = ""


@dataclass(frozen=True)
class Plan:
    stages: Tuple[StagePlan, ...]
    budget: int
    notes: Tuple[str, ...] = field(default=())

    @property
    def peak(self) -> int:
        return max(s.bytes for s in self.stages)


def plan_stage(
    width: int,
    height: int,
    budget: int,
    *,
    optimizer: str = "lbfgs",
    tile_size: Optional[int] = None,
    **kw,
) -> StagePlan:
    """The cheapest way to run one scale within `budget` bytes (see the module doc for the order)."""
    hist = LBFGS_HISTORY if optimizer == "lbfgs" else 0
    tiles_allowed = tile_size != 0
    forced = tile_size if tile_size and tile_size < max(width, height) else None

    def est(opt: str, h: int, tile: Optional[int]) -> int:
        return estimate(width, height, optimizer=opt, history=h, tile=tile, **kw).total

    if forced is None:
        if est(optimizer, hist, None) <= budget:
            return StagePlan(width, height, optimizer, hist, None, est(optimizer, hist, None))
        if optimizer == "lbfgs":
            h = _largest_history(lambda h: est("lbfgs", h, None), budget)
            if h is not None:
                return StagePlan(width, height, "lbfgs", h, None, est("lbfgs", h, None),
                                 f"L-BFGS history cut to {h} to fit")
    if not tiles_allowed:
        return StagePlan(width, height, optimizer, hist, None, est(optimizer, hist, None), "does not fit")
    # 1024 px tiles cost ~25% in overlap and need ~4 GB with VGG-19 to relu5_1; larger
    # tiles save little time, so they are never chosen automatically.
    tiles = [forced] if forced else [t for t in AUTO_TILES if t < max(width, height)]
    if optimizer == "lbfgs":
        for tile in tiles:
            h = _largest_history(lambda h: est("lbfgs", h, tile), budget)
            if h is not None:
                return StagePlan(width, height, "lbfgs", h, tile, est("lbfgs", h, tile),
                                 f"tiled ({tile} px tiles), L-BFGS history {h}")
    for tile in tiles:
        if est("adam", 0, tile) <= budget:
            note = f"tiled ({tile} px tiles)" + (", Adam instead of L-BFGS to fit" if optimizer == "lbfgs" else "")
            return StagePlan(width, height, "adam", 0, tile, est("adam", 0, tile), note)
    t = forced or MIN_TILE
    return StagePlan(width, height, "adam", 0, t, est("adam", 0, t), "does not fit")


def _largest_history(cost, budget: int) -> Optional[int]:
    for h in (LBFGS_HISTORY, 50, 20, MIN_HISTORY):
        if cost(h) <= budget:
            return h
    return None


def plan_run(
    sizes: Sequence[Tuple[int, int]],
    *,
    budget: Optional[int] = None,
    max_memory_gb: Optional[float] = None,
    device_type: str = "cpu",
    optimizer: str = "lbfgs",
    tile_size: Optional[int] = None,
    **kw,
) -> Plan:
    """Plan every scale of the pyramid; raise ResourceError before any work if one cannot fit."""
    if budget is None:
        budget = int(max_memory_gb * GB) if max_memory_gb else int(available_bytes(device_type) * BUDGET_FRACTION)
    kw["device_type"] = device_type
    stages = tuple(plan_stage(w, h, budget, optimizer=optimizer, tile_size=tile_size, **kw) for w, h in sizes)
    for s in stages:
        if s.note == "does not fit":
            how = "with tiles and Adam" if tile_size != 0 else "without tiles (--tile-size 0)"
            fits = largest_fitting(s.width, s.height, budget, optimizer=optimizer, tile_size=tile_size, **kw)
            hint = f"; the largest size that fits is about {fits} px (--size {fits})" if fits else ""
            raise ResourceError(
                f"{s.width}x{s.height} needs about {s.bytes / GB:.1f} GB even {how}, over the memory budget of "
                f"{budget / GB:.1f} GB (--max-memory, default {BUDGET_FRACTION:.0%} of available memory){hint}"
            )
    notes = tuple(f"{s.width}x{s.height}: {s.note}" for s in stages if s.note)
    return Plan(stages, budget, notes)


def largest_fitting(width: int, height: int, budget: int, **kw) -> Optional[int]:
    """Largest long side (multiple of 64) at this aspect ratio whose plan fits, or None."""
    long0 = max(width, height)
    best = None
    for long_side in range(64, long0, 64):
        w, h = (long_side, max(1, round(height * long_side / width))) if width >= height else \
            (max(1, round(width * long_side / height)), long_side)
        if plan_stage(w, h, budget, **kw).note != "does not fit":
            best = long_side
        else:
            break
    return best


# --- trained networks: one pass, no backward -------------------------------------------------------
#
# Calibrated on this CPU with the bundled starry_night (widths 12, 24, 48) on tubingen: 2048 px
# (3.1 MP, one piece) peaked at 1.34 GB RSS, 4096 px (12.6 MP, 1024 px tiles) at 1.26 GB; the
# model below gives 1.5 GB for both (it errs on the safe side).
PICTURE_BYTES = 48  # a pixel of the picture: input and output in float32, the clamp's copy, the 8-bit result
LIVE_MAPS = 3  # full-resolution feature maps of the widest level alive at once in a forward pass (float32)


def network_estimate(width: int, height: int, widths: Sequence[int], piece_pixels: int) -> int:
    """Peak bytes of a feed-forward style network (feedforward.StyleModel) painting a width x height
    picture, run on pieces of at most `piece_pixels` (the whole picture, or a tile with its margin);
    level i of the network runs at 1/2**i of the resolution."""
    per_pixel = 4 * LIVE_MAPS * sum(c / 4**i for i, c in enumerate(widths))
    return int(RUNTIME_BASE + width * height * PICTURE_BYTES + min(piece_pixels, width * height) * per_pixel)


UPSCALE_OUT_BYTES = 40  # an output pixel: the float32 sum and weight, their quotient, the 8-bit result and slack


def upscale_estimate(width: int, height: int, scale: int, channels: int, piece_pixels: int) -> int:
    """Peak bytes of upscaling a width x height picture `scale` times (models.upscaler.upscale_tensor),
    tile by tile with pieces of at most `piece_pixels` low-resolution pixels (a tile and its halo)."""
    per_piece_pixel = 4 * LIVE_MAPS * channels + 4 * 3 * scale**2 * 2  # features, then the enlarged tile
    return int(RUNTIME_BASE + width * height * 12 + width * height * scale**2 * UPSCALE_OUT_BYTES
               + min(piece_pixels, width * height) * per_piece_pixel)


def check_fits(needed: int, what: str, device_type: str = "cpu", hint: str = "use a smaller --size") -> None:
    """ResourceError, before any allocation, if `needed` bytes exceed the memory budget of a run now."""
    budget = int(available_bytes(device_type) * BUDGET_FRACTION)
    if needed > budget:
        raise ResourceError(f"{what} needs about {needed / GB:.1f} GB, over the memory budget of {budget / GB:.1f} GB "
                            f"({BUDGET_FRACTION:.0%} of available memory); {hint}")
