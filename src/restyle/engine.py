"""The optimisation loop: it paints the pixels, emits events, and knows no front end.

    result = run("photo.jpg", ["starry_night.jpg"], StylizeConfig(size=512))
    result.image.save("out.png")

Gatys et al. (CVPR 2016): the generated image x minimises
    alpha * L_content(x, p) + beta * L_style(x, a) + tv_weight * TV(x)
over its pixels, with a fixed VGG-19 as the feature extractor.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from . import __version__
from .color import ColorPlan, recolour
from .config import StylizeConfig
from .errors import Cancelled, InputError, ResourceError, RestyleError
from .events import Callback, Done, Iterate, Snapshot, StageStart
from .features import VGG19Features, deepest_layer
from .images import PathLike, check_size, fit_size, load_image, resize, to_pil, to_tensor
from .losses import content_loss, gram, style_layer_scales, style_loss, tv_loss
from .memory import TILE_MARGIN, Plan, plan_run
from .regions import layer_masks, load_masks, mask_tensor
from .schedule import Stage, pyramid
from .tiling import grid_align, random_offset, tile_grid, tiled_grams, tiled_loss_and_grad
from .weights import Weights, load_weights

ImageSource = Union[PathLike, Image.Image]
PTDTYPE = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Result:
    image: Image.Image
    config: StylizeConfig
    report: Dict[str, Any] = field(default_factory=dict)


# --- devices and precision -------------------------------------------------


def cpu_has_fast_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX); else bf16 is emulated and slow."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, p, lambda: False)() for p in probes)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but PyTorch sees no CUDA GPU; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
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
    dtype = PTDTYPE[precision]
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@lru_cache(maxsize=4)
def _network(weights: Weights, deepest: str, pooling: str, device: torch.device) -> VGG19Features:
    net = VGG19Features.from_weights(weights, deepest, pooling).to(device)
    if device.type == "cpu":
        # oneDNN convolutions run ~1.6x faster on NHWC tensors on this kind of CPU.
        net = net.to(memory_format=torch.channels_last)
    return net


# --- the run ---------------------------------------------------------------


@dataclass
class Region:
    """One style's share of the canvas (guided Gram matrices, Gatys et al. 2017, Sec. 3)."""

    weight: float  # blend weight x number of styles x the mask's area fraction
    grams: Dict[str, torch.Tensor]  # the whole style image's Gram matrices
    masks: Dict[str, torch.Tensor]  # the region's mask at each style layer's resolution


@dataclass
class Targets:
    content: Dict[str, torch.Tensor]
    grams: Dict[str, torch.Tensor]
    regions: Optional[List[Region]] = None  # with masks: per-style targets instead of blended grams


class Painter:
    """Holds a network and paints images with it; reuse one for many runs (batch, server)."""

    STYLE_CACHE_SIZE = 64  # (style, size) entries; a few MB each

    def __init__(self, net: torch.nn.Module, device: torch.device, precision: str, key: Any = None) -> None:
        self.net = net
        self.key = key  # what the network was built for; run() rebuilds when a config differs
        self.device = device
        self.precision = precision
        # Style Gram matrices by (style key, size, layers, tiling): batch runs and servers
        # compute each style's targets once per scale. `style_passes` counts real computations.
        self.style_cache: Dict[Any, Dict[str, torch.Tensor]] = {}
        self.style_passes = 0

    def features(self, x: torch.Tensor, layers: Sequence[str]) -> Dict[str, torch.Tensor]:
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            return self.net(x, layers)

    @torch.no_grad()
    def targets(
        self,
        content: torch.Tensor,
        styles: Sequence[torch.Tensor],
        blend: Sequence[float],
        cfg: StylizeConfig,
        masks: Optional[Sequence[torch.Tensor]] = None,
        keys: Optional[Sequence[Any]] = None,
        tile: Optional[int] = None,
    ) -> Targets:
        """Content activations and blended style Gram matrices, computed once per scale.

        With `masks` (one (1, 1, H, W) per style, at the content's size) each style
        keeps its own Gram matrices and its mask instead of being blended.
        `keys` (one hashable per style, or None) let the style Grams be reused from
        the cache; `tile` computes everything tile by tile (see tiling.py).
        """
        if tile:
            grid = tile_grid(content.shape[2], content.shape[3], tile, self.margin(cfg))
            _, content_t = tiled_grams(self, content, (), grid, keep=cfg.content_layers)
        else:
            feats = self.features(content, cfg.content_layers)
            content_t = {name: feats[name].float() for name in cfg.content_layers}
        grams: Dict[str, torch.Tensor] = {}
        regions: List[Region] = []
        for k, (style, w, key) in enumerate(zip(styles, blend, keys or [None] * len(styles))):
            sgrams = self.style_grams(style, cfg, key, tile)
            if masks is not None:
                # Weighted by area so that a region's pixels get the push an unmasked run would give them.
                area = float(masks[k].float().mean())
                regions.append(Region(w * len(styles) * area, sgrams, layer_masks(masks[k].float(), cfg.style_layers)))
                continue
            for name in cfg.style_layers:
                g = sgrams[name] * w
                grams[name] = grams[name] + g if name in grams else g
        return Targets(content_t, grams, regions or None)

    @torch.no_grad()
    def style_grams(self, style: torch.Tensor, cfg: StylizeConfig, key: Any = None,
                    tile: Optional[int] = None) -> Dict[str, torch.Tensor]:
        """Gram matrices of one style image, from the cache when `key` was seen at this size."""
        ck = None if key is None else (key, tuple(style.shape), cfg.style_layers, tile)
        if ck is not None and ck in self.style_cache:
            return self.style_cache[ck]
        self.style_passes += 1
        if tile:
            grid = tile_grid(style.shape[2], style.shape[3], tile, self.margin(cfg))
            grams, _ = tiled_grams(self, style, cfg.style_layers, grid)
        else:
            sfeats = self.features(style, cfg.style_layers)
            grams = {name: gram(sfeats[name]) for name in cfg.style_layers}
        if ck is not None:
            if len(self.style_cache) >= self.STYLE_CACHE_SIZE:
                self.style_cache.pop(next(iter(self.style_cache)))
            self.style_cache[ck] = grams
        return grams

    def margin(self, cfg: StylizeConfig) -> int:
        align = grid_align(deepest_layer(cfg.content_layers, cfg.style_layers))
        return -(-TILE_MARGIN // align) * align

    def loss(self, x: torch.Tensor, t: Targets, cfg: StylizeConfig) -> Tuple[torch.Tensor, Dict[str, float]]:
        layers = tuple(dict.fromkeys(cfg.content_layers + cfg.style_layers))
        feats = self.features(x, layers)
        layer_w = cfg.style_layer_weights or (1.0,) * len(cfg.style_layers)
        c = sum(content_loss(feats[n], t.content[n]) for n in cfg.content_layers) * cfg.content_weight
        if t.regions is not None:
            s = 0
            for r in t.regions:
                k = style_layer_scales(r.grams, cfg.style_layers, cfg.style_norm)
                s = s + r.weight * sum(w * k[n] * style_loss(gram(feats[n], r.masks[n]), r.grams[n])
                                       for n, w in zip(cfg.style_layers, layer_w))
        else:
            k = style_layer_scales(t.grams, cfg.style_layers, cfg.style_norm)
            s = sum(w * k[n] * style_loss(gram(feats[n]), t.grams[n]) for n, w in zip(cfg.style_layers, layer_w))
        s = s * cfg.style_weight_effective
        v = tv_loss(x) * cfg.tv_weight
        total = c + s + v
        return total, {"content": c.item(), "style": s.item(), "tv": v.item()}


def make_painter(cfg: StylizeConfig, weights: Optional[PathLike] = None) -> Painter:
    """A Painter for `cfg`'s device, precision, layers and pooling; pass it to run() to share it."""
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    w = load_weights(weights)
    deepest = deepest_layer(cfg.content_layers, cfg.style_layers)
    net = _network(w, deepest, cfg.pooling, device)
    return Painter(net, device, precision, key=(w.sha256, deepest, cfg.pooling, str(device), precision))


# Largest pixel change (0-255 scale) of L-BFGS's first step. torch's default first step
# has an L1 norm of lr (1e-5 per pixel at 512 px): the gradient difference it yields is
# rounding noise, the first curvature estimate is garbage and iteration 3 jumped to a loss
# of ~1e26 before recovering, ~10 iterations wasted. A step of a few grey levels gives a
# usable curvature pair at once. 0 restores torch's behaviour.
FIRST_STEP = 4.0


def lbfgs_with_first_step(opt: torch.optim.LBFGS, closure: Callable[[], torch.Tensor], iterations: int,
                          lr: float, first_step: float) -> None:
    """Run `iterations` evaluations of L-BFGS whose first step moves the pixels by at most `first_step`.

    The first evaluation is made here to size the step; the first step() (one iteration)
    reuses it, so the count of evaluations is still exactly `iterations`.
    """
    first = closure()
    g = opt.param_groups[0]["params"][0].grad
    # torch's first step is lr_0 * g / |g|_1 (for |g|_1 > 1): pick lr_0 so its largest entry is first_step.
    l1, peak = float(g.abs().sum()), float(g.abs().max())
    if not (peak > 0 and l1 > 1):
        opt.step(closure)  # flat or tiny gradient: nothing to size, let torch start (evaluates again)
        return
    used = []

    def cached() -> torch.Tensor:
        if not used:
            used.append(True)
            return first
        return closure()

    group = opt.param_groups[0]
    group.update(lr=first_step * l1 / peak, max_iter=1, max_eval=1)
    opt.step(cached)  # one iteration, no new evaluation (n_iter == max_iter)
    group.update(lr=lr, max_iter=iterations - 1, max_eval=iterations - 1)
    opt.step(closure)  # the state (history, previous gradient) carries over


class LossScaler:
    """Backward through an fp16 network without overflow (GradScaler's idea, for a pixel gradient).

    Style losses are large (1e6-1e9 with the default weights), so fp16 activations'
    gradients overflow (max 65504) rather than underflow: the loss is scaled *down*
    before backward and the gradient scaled back up in fp32. After an overflow the
    scale drops 2**8-fold and the backward is redone; after GROW_AFTER clean steps
    it doubles again. bf16 has fp32's range and needs none of this.
    """

    GROW_AFTER = 50
    MIN_SCALE = 2.0**-60

    def __init__(self, scale: float = 2.0**-16) -> None:
        self.scale = scale
        self.clean = 0

    def backward(self, loss: torch.Tensor, x: torch.Tensor, recompute: Callable[[], torch.Tensor]) -> torch.Tensor:
        while True:
            x.grad = None
            (loss * self.scale).backward()
            grad = x.grad.float() / self.scale
            if bool(torch.isfinite(grad).all()):
                self.clean += 1
                if self.clean >= self.GROW_AFTER:
                    self.scale, self.clean = min(self.scale * 2, 1.0), 0
                return grad
            if self.scale <= self.MIN_SCALE:
                raise RestyleError("the fp16 gradient overflows at every loss scale; use --precision bf16 or fp32")
            self.scale, self.clean = self.scale / 2.0**8, 0
            loss = recompute()


def _is_cancelled(cancel: Any) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def blur_radius(long_side: int) -> float:
    """Gaussian radius for --init blur: keeps the layout, removes the photo's texture."""
    return max(2.0, long_side / 64)


def initial_image(
    init: str, content_img: Image.Image, size: Tuple[int, int], seed: int, device: torch.device,
    palette: Sequence[Image.Image] = (),
) -> torch.Tensor:
    """The first scale's start; `palette` (the style images) is used by init "palette"."""
    w, h = size
    if init == "content":
        return to_tensor(content_img, device)
    if init == "palette":
        # The reverse of --preserve-colors histogram: the photo in the painting's colours,
        # so the optimiser starts with the palette and spends its steps on the strokes.
        return to_tensor(recolour(content_img, palette or [content_img]), device)
    if init == "blur":
        return to_tensor(content_img.filter(ImageFilter.GaussianBlur(blur_radius(max(w, h)))), device)
    if init == "noise":
        # White noise around mid-grey, as in Gatys et al.; seeded, drawn on the CPU so
        # the same seed gives the same start on every device.
        g = torch.Generator().manual_seed(seed)
        return (127.5 + 32.0 * torch.randn(1, 3, h, w, generator=g)).clamp(0, 255).to(device)
    return to_tensor(load_image(init).resize((w, h), Image.Resampling.LANCZOS), device)


def normalised_blend(cfg: StylizeConfig, n_styles: int) -> List[float]:
    if cfg.style_blend_weights is None:
        return [1.0 / n_styles] * n_styles
    if len(cfg.style_blend_weights) != n_styles:
        raise InputError(
            f"style_blend_weights has {len(cfg.style_blend_weights)} values for {n_styles} style images; "
            "give one weight per style"
        )
    total = sum(cfg.style_blend_weights)
    return [w / total for w in cfg.style_blend_weights]


def run(
    content: ImageSource,
    styles: Union[ImageSource, Sequence[ImageSource]],
    config: Optional[StylizeConfig] = None,
    *,
    callback: Optional[Callback] = None,
    cancel: Any = None,
    snapshot_every: int = 0,
    weights: Optional[PathLike] = None,
    painter: Optional[Painter] = None,
    **overrides: Any,
) -> Result:
    """Stylise `content` after `styles`; returns the image and a reproducibility report.

    `callback` receives StageStart/Iterate/Snapshot/Done events; `cancel` is an
    object with is_set() (threading.Event) or a callable; when it turns true
    the run raises Cancelled at the next iteration. `painter` reuses a network and
    its style-target cache across runs (batch mode, servers).
    """
    cfg = (config or StylizeConfig()).replace(**overrides) if overrides else (config or StylizeConfig())
    if isinstance(styles, (str, os.PathLike, Image.Image)):
        styles = [styles]
    if not styles:
        raise InputError("at least one style image is needed")
    emit = callback or (lambda event: None)
    t_start = time.perf_counter()
    timings: Dict[str, float] = {}

    content_img = load_image(content, max_pixels=cfg.max_input_pixels)
    style_imgs = [load_image(s, max_pixels=cfg.max_input_pixels) for s in styles]
    blend = normalised_blend(cfg, len(style_imgs))
    masks = load_masks(cfg.mask, len(style_imgs), content_img.size) if cfg.mask else None
    # Colour control wraps the loop: what the network sees, what is optimised, what comes out.
    colors = ColorPlan(cfg.preserve_colors, content_img)
    net_content_img = colors.content(content_img)
    style_imgs = colors.styles(style_imgs)
    stages = pyramid(cfg.size, cfg.iterations, cfg.scales)
    for stage in stages:
        check_size("output", *fit_size(*content_img.size, stage.long_side))
    final_size = fit_size(*content_img.size, cfg.size)

    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    w = load_weights(weights)
    deepest = deepest_layer(cfg.content_layers, cfg.style_layers)
    key = (w.sha256, deepest, cfg.pooling, str(device), precision)
    if painter is None or painter.key != key:
        painter = Painter(_network(w, deepest, cfg.pooling, device), device, precision, key=key)
    # Plan memory for every scale before any work: refuse or fall back now, not when killed.
    plan = plan_run(
        [fit_size(*content_img.size, s.long_side) for s in stages],
        max_memory_gb=cfg.max_memory, device_type=device.type, optimizer=cfg.optimizer,
        tile_size=cfg.tile_size, deepest=deepest, style_layers=cfg.style_layers,
        content_layers=cfg.content_layers, precision=precision,
        widths=tuple(w.convs[f"conv{b}_1"][0].shape[0] for b in range(1, 6)),
    )
    style_keys = [("path", str(Path(s).resolve())) if isinstance(s, (str, os.PathLike)) else None for s in styles]
    timings["setup"] = time.perf_counter() - t_start

    steps = sum(s.iterations for s in stages)
    step = 0
    x: Optional[torch.Tensor] = None
    terms: Dict[str, float] = {}
    style_sides: List[int] = []
    for k, stage in enumerate(stages):
        t_stage = time.perf_counter()
        size = fit_size(*content_img.size, stage.long_side)
        content_t = to_tensor(resize(net_content_img, stage.long_side), device)
        style_long = max(1, round(stage.long_side * cfg.style_scale))  # the style follows the output's scale
        style_sides.append(style_long)
        style_ts = []
        for i, simg in enumerate(style_imgs):
            check_size(f"style image {i + 1} at style_scale {cfg.style_scale}", *fit_size(*simg.size, style_long))
            style_ts.append(to_tensor(resize(simg, style_long), device))
        sp = plan.stages[k]
        if sp.tile and masks:
            raise ResourceError(
                f"--mask cannot be combined with tiled rendering, which {size[0]}x{size[1]} px needs here "
                f"({sp.note}); use a smaller --size or raise --max-memory"
            )
        stage_masks = [mask_tensor(m, size, device) for m in masks] if masks else None
        targets = painter.targets(content_t, style_ts, blend, cfg, stage_masks, keys=style_keys, tile=sp.tile)
        del style_ts

        if x is None:
            x = colors.variable(initial_image(cfg.init, resize(net_content_img, stage.long_side), size, cfg.seed,
                                              device, palette=style_imgs))
        else:
            x = F.interpolate(x, size=(size[1], size[0]), mode="bicubic", align_corners=False).clamp(0, 255)
        x = x.detach().requires_grad_(True)
        emit(StageStart(k, len(stages), size[0], size[1], stage.iterations))

        i = 0
        scaler = LossScaler()
        grid_rng = torch.Generator().manual_seed(cfg.seed + k)
        align = grid_align(deepest)

        def closure() -> torch.Tensor:
            nonlocal i, step, terms
            if _is_cancelled(cancel):
                raise Cancelled("cancelled")
            opt.zero_grad(set_to_none=True)
            if sp.tile:
                # A freshly shifted grid at every evaluation: tile-edge effects never repeat in place.
                grid = tile_grid(size[1], size[0], sp.tile, painter.margin(cfg),
                                 random_offset(grid_rng, sp.tile, align))
                # Tiles see the network's input; the chain rule takes the gradient back to x
                # (which is one luminance channel with --preserve-colors luminance).
                x_net = colors.network_input(x)
                loss, terms, g_net = tiled_loss_and_grad(painter, x_net, targets, cfg, grid)
                x.grad = g_net if x_net is x else torch.autograd.grad(x_net, x, g_net)[0]
            else:
                loss, terms = painter.loss(colors.network_input(x), targets, cfg)
                if precision == "fp16":
                    x.grad = scaler.backward(loss, x, lambda: painter.loss(colors.network_input(x), targets, cfg)[0])
                else:
                    loss.backward()
                x.grad = x.grad.contiguous()  # NHWC in the network, but L-BFGS views it flat
            if not torch.isfinite(loss):
                raise RestyleError(
                    f"the loss became {float(loss)} at iteration {i + 1} (precision {precision}); "
                    "try --precision fp32 or a smaller --lr"
                )
            i += 1
            step += 1
            emit(Iterate(k, len(stages), size[0], size[1], i, stage.iterations, step, steps,
                         loss.item(), dict(terms), time.perf_counter() - t_start))
            if snapshot_every and step % snapshot_every == 0:
                emit(Snapshot(step, steps, colors.image(x)))
            return loss

        if sp.optimizer == "lbfgs":
            # One step() runs the whole scale; without a line search each iteration is
            # exactly one evaluation, and tolerances of -1 never stop it early
            # (jcjohnson/neural-style's tolX = tolFun = -1).
            opt = torch.optim.LBFGS(
                [x], lr=cfg.lr_or_default, max_iter=stage.iterations, max_eval=stage.iterations,
                tolerance_grad=-1, tolerance_change=-1, history_size=sp.history,
            )
            if FIRST_STEP and stage.iterations > 1:
                lbfgs_with_first_step(opt, closure, stage.iterations, cfg.lr_or_default, FIRST_STEP)
            else:
                opt.step(closure)
        else:
            # cfg.lr is L-BFGS's when the planner swapped in Adam to fit in memory.
            opt = torch.optim.Adam([x], lr=cfg.lr_or_default if cfg.optimizer == "adam" else 2.0)
            for _ in range(stage.iterations):
                opt.step(closure)
                with torch.no_grad():
                    x.clamp_(0, 255)
        timings[f"scale{k}_{size[0]}x{size[1]}"] = time.perf_counter() - t_stage

    assert x is not None
    image = colors.image(x)
    if image.size != final_size:  # cannot happen with pyramid(); a guard, not a resize
        raise RestyleError(f"internal error: made {image.size}, expected {final_size}")
    elapsed = time.perf_counter() - t_start
    timings["total"] = elapsed
    emit(Done(elapsed, dict(terms), dict(timings)))
    report = {
        "restyle": __version__,
        "config": cfg.to_dict(),
        "styles": len(style_imgs),
        "style_blend_weights": blend,
        "stages": [{"long_side": s.long_side, "iterations": s.iterations, "style_long_side": side}
                   for s, side in zip(stages, style_sides)],
        "device": device_name(device),
        "precision": precision,
        "weights": {"path": str(w.path), "sha256": w.sha256, "format": w.input_format},
        "versions": versions(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "final_loss": terms,
        "iterations": steps,
        "memory_plan": {
            "budget_gb": round(plan.budget / 2**30, 2),
            "stages": [{"size": f"{s.width}x{s.height}", "optimizer": s.optimizer, "history": s.history,
                        "tile": s.tile, "estimate_gb": round(s.bytes / 2**30, 2), "note": s.note}
                       for s in plan.stages],
        },
    }
    return Result(image, cfg, report)


def stylize(
    content: ImageSource,
    styles: Union[ImageSource, Sequence[ImageSource]],
    config: Optional[StylizeConfig] = None,
    **kwargs: Any,
) -> Image.Image:
    """Stylise and return the PIL image; keyword arguments are run()'s and config fields."""
    return run(content, styles, config, **kwargs).image


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()})"
    return device.type


def versions() -> Dict[str, str]:
    import PIL

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "pillow": PIL.__version__,
        "platform": platform.platform(),
    }
