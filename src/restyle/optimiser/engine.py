"""The engine: stylise a photo after paintings, composed of small reusable steps.

    result = run("photo.jpg", ["starry_night.jpg"], StylizeConfig(size=512))
    result.image.save("out.png")

Gatys et al. (CVPR 2016): the generated image x minimises
    alpha * L_content(x, p) + beta * L_style(x, a) + tv_weight * TV(x)
over its pixels, with a fixed VGG-19 as the feature extractor.

`run` is a composition: load the images and the colour plan (load_inputs), pick
the network (painter_for), plan every scale of the pyramid (plan_steps), then at
each scale build the terms and their targets (stage_objective) and hand them to
the one loop (loop.paint), and finally write the report (run_report). Each step
is a function of its own, so video frames or a network's output can start from
a tensor and reuse the same parts.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from .. import __version__
from ..config import INIT_CHOICES, StylizeConfig
from ..device import (  # noqa: F401  (re-exported for front ends)
    autocast, cpu_has_fast_bf16, device_name, network, network_layout, resolve_device, resolve_precision,
)
from ..errors import InputError, RestyleError
from ..events import Callback, Planned
from ..images import ImageLike, PathLike, check_size, fit_size, is_array, load_image, resize, to_pil, to_tensor
from ..models.layers import deepest_layer
from ..models.vgg import weights_widths
from ..models.weights import Weights, load_weights
from .color import ColorPlan, recolour
from .loop import OptimizerSettings, Progress, Step, paint
from .memory import Plan, plan_run
from .objective import Objective, Sources, TargetCache, Term, TilingError, build_terms
from .progress import RunEstimate, network_pixels
from .regions import load_masks, mask_tensor
from .schedule import Stage, pyramid
from .tiling import TileSpec, default_margin

ImageSource = ImageLike  # a path, a PIL image, an HxWx3 numpy array or a 3xHxW torch tensor


@dataclass
class Result:
    image: Image.Image
    config: StylizeConfig
    report: Dict[str, Any] = field(default_factory=dict)


class Painter:
    """A network on a device at a precision, and a cache of prepared targets; reuse one for many runs."""

    STYLE_CACHE_SIZE = 64  # prepared style targets (one per style image and scale); a few MB each

    def __init__(self, net: torch.nn.Module, device: torch.device, precision: str, key: Any = None) -> None:
        self.net = net
        self.key = key  # what the network was built for; run() rebuilds when a config differs
        self.device = device
        self.precision = precision
        # Style Gram matrices by a key naming everything that shaped them (objective.style_grams):
        # batch runs and servers compute each style's targets once per scale.
        self.cache = TargetCache(self.STYLE_CACHE_SIZE)

    def features(self, x: torch.Tensor, layers: Sequence[str]) -> Dict[str, torch.Tensor]:
        x = network_layout(x, self.device)
        with autocast(self.device, self.precision):
            return self.net(x, layers)


def painter_key(weights: Weights, cfg: StylizeConfig, device: torch.device, precision: str) -> tuple:
    return (weights.sha256, deepest_layer(cfg.content_layers, cfg.style_layers), cfg.pooling, str(device), precision)


def painter_for(cfg: StylizeConfig, weights: Optional[PathLike] = None,
                painter: Optional[Painter] = None) -> Tuple[Painter, Weights]:
    """`painter` if it was built for `cfg`'s network, device and precision, else a new one (network cached)."""
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    w = load_weights(weights)
    key = painter_key(w, cfg, device, precision)
    if painter is None or painter.key != key:
        painter = Painter(network(w, key[1], cfg.pooling, device), device, precision, key=key)
    return painter, w


def make_painter(cfg: StylizeConfig, weights: Optional[PathLike] = None) -> Painter:
    """A Painter for `cfg`'s device, precision, layers and pooling; pass it to run() to share it."""
    return painter_for(cfg, weights)[0]


# --- inputs -------------------------------------------------------------------


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
        if not palette:
            raise ValueError("init palette needs the style images (palette=)")
        return to_tensor(recolour(content_img, palette), device)
    if init == "blur":
        return to_tensor(content_img.filter(ImageFilter.GaussianBlur(blur_radius(max(w, h)))), device)
    if init == "noise":
        return noise_image(size, seed, device)
    return to_tensor(load_image(init).resize((w, h), Image.Resampling.LANCZOS), device)


def noise_image(size: Tuple[int, int], seed: int, device: torch.device) -> torch.Tensor:
    """White noise around mid-grey, as in Gatys et al.; seeded, drawn on the CPU so the
    same seed gives the same start on every device."""
    w, h = size
    g = torch.Generator().manual_seed(seed)
    return (127.5 + 32.0 * torch.randn(1, 3, h, w, generator=g)).clamp(0, 255).to(device)


def upsample(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """The previous scale's result at the next scale's (w, h)."""
    return F.interpolate(x, size=(size[1], size[0]), mode="bicubic", align_corners=False).clamp(0, 255)


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


@dataclass
class Inputs:
    """The run's images, loaded and checked once: what the network sees, and the colour plan around it."""

    content: Image.Image  # as given
    net_content: Image.Image  # what the network sees (gray with --preserve-colors luminance)
    styles: List[Image.Image]  # recoloured as the colour plan says
    blend: List[float]
    masks: Optional[List[Image.Image]]
    colors: ColorPlan


def load_inputs(content: ImageSource, styles: Sequence[ImageSource], cfg: StylizeConfig) -> Inputs:
    if cfg.init not in INIT_CHOICES and not Path(cfg.init).is_file():  # checked where it is used
        raise InputError(f"init {cfg.init!r} is neither one of {', '.join(INIT_CHOICES)} nor an existing image file")
    content_img = load_image(content, max_pixels=cfg.max_input_pixels)
    style_imgs = [load_image(s, max_pixels=cfg.max_input_pixels) for s in styles]
    blend = normalised_blend(cfg, len(style_imgs))
    masks = load_masks(cfg.mask, len(style_imgs), content_img.size) if cfg.mask else None
    # Colour control wraps the loop: what the network sees, what is optimised, what comes out.
    colors = ColorPlan(cfg.preserve_colors, content_img)
    return Inputs(content_img, colors.content(content_img), colors.styles(style_imgs), blend, masks, colors)


# --- planning -----------------------------------------------------------------


def optimizer_settings(cfg: StylizeConfig, name: str, history: int,
                       line_search: Optional[str] = None) -> OptimizerSettings:
    """The planner's choice for one scale; cfg.lr is L-BFGS's when the planner swapped in Adam to fit."""
    if name == "lbfgs":
        return OptimizerSettings("lbfgs", cfg.lr_or_default, history, line_search=line_search)
    return OptimizerSettings("adam", cfg.lr_or_default if cfg.optimizer == "adam" else 2.0)


def plan_steps(cfg: StylizeConfig, sizes: Sequence[Tuple[int, int]], stages: Sequence[Stage],
               painter: Painter, widths: Sequence[int], style_layers: Sequence[str],
               content_layers: Sequence[str], line_search: Optional[str] = None) -> Tuple[List[Step], Plan]:
    """Plan memory for every scale before any work: refuse or fall back now, not when killed."""
    layers = tuple(content_layers) + tuple(style_layers)
    plan = plan_run(
        sizes, max_memory_gb=cfg.max_memory, device_type=str(painter.device), optimizer=cfg.optimizer,
        tile_size=cfg.tile_size, deepest=deepest_layer(layers), style_layers=style_layers,
        content_layers=content_layers, precision=painter.precision, widths=tuple(widths),
    )
    margin = default_margin(layers)
    steps = [Step(size, stage.iterations, optimizer_settings(cfg, sp.optimizer, sp.history, line_search),
                  TileSpec(sp.tile, margin) if sp.tile else None)
             for size, stage, sp in zip(sizes, stages, plan.stages)]
    return steps, plan


def stage_objective(painter: Painter, terms: List[Term], step: Step, note: str = "") -> Objective:
    """The terms of one scale, their targets prepared (from the painter's cache where possible)."""
    objective = Objective(terms, painter)
    if step.tile is not None:
        try:
            objective.check_tileable()
        except TilingError as e:
            w, h = step.size
            raise TilingError(f"{e}, which {w}x{h} px needs here ({note}); "
                              "use a smaller --size or raise --max-memory") from None
    return objective.prepare(step.tile, painter.cache)


TermsAt = Callable[[int, Stage, Step], List[Term]]


@dataclass
class Painted:
    """What paint_pyramid made: the final tensor, the events' tally and timings, the memory plan."""

    x: torch.Tensor
    progress: Progress
    plan: Plan
    estimator: RunEstimate


def paint_pyramid(
    cfg: StylizeConfig,
    painter: Painter,
    stages: Sequence[Stage],
    sizes: Sequence[Tuple[int, int]],
    terms_at: TermsAt,
    start: Callable[[Step], torch.Tensor],
    *,
    style_layers: Sequence[str],
    content_layers: Sequence[str],
    weights: Weights,
    resample: Callable[[torch.Tensor, Step], torch.Tensor] = lambda x, step: upsample(x, step.size),
    network_input: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
    image: Callable[[torch.Tensor], Image.Image] = to_pil,
    line_search: Optional[str] = None,
    callback: Optional[Callback] = None,
    cancel: Any = None,
    snapshot_every: int = 0,
    t_start: Optional[float] = None,
) -> Painted:
    """Plan the memory of every scale, then paint coarse to fine with the terms `terms_at` gives.

    stylize, texture and explain differ only in their terms, start and resampling; this is
    the rest. `style_layers` and `content_layers` are what the terms read (for the memory planner).
    """
    steps, plan = plan_steps(cfg, sizes, stages, painter, weights_widths(weights), style_layers, content_layers,
                             line_search)
    estimator = RunEstimate(callback or (lambda event: None))  # adds the Estimate event
    estimator(planned(steps, plan))
    progress = Progress(estimator, steps, snapshot_every, image, t_start)

    def objective_at(k: int, step: Step) -> Objective:
        return stage_objective(painter, terms_at(k, stages[k], step), step, plan.stages[k].note)

    x = paint(steps, objective_at, start, resample, progress, precision=painter.precision,
              network_input=network_input, cancel=cancel, seed=cfg.seed)
    return Painted(x, progress, plan, estimator)


def stage_sources(inputs: Inputs, cfg: StylizeConfig, stage: Stage, size: Tuple[int, int],
                  device: torch.device) -> Sources:
    """The content, styles and masks as tensors at one scale (the style follows the output's scale)."""
    style_long = style_side(cfg, stage)
    styles = []
    for i, simg in enumerate(inputs.styles):
        check_size(f"style image {i + 1} at style_scale {cfg.style_scale}", *fit_size(*simg.size, style_long))
        styles.append(to_tensor(resize(simg, style_long), device))
    masks = [mask_tensor(m, size, device) for m in inputs.masks] if inputs.masks else None
    return Sources(to_tensor(resize(inputs.net_content, stage.long_side), device), styles, inputs.blend, masks)


def style_side(cfg: StylizeConfig, stage: Stage) -> int:
    return max(1, round(stage.long_side * cfg.style_scale))


# --- the run ------------------------------------------------------------------


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
    if isinstance(styles, (str, os.PathLike, Image.Image)) or is_array(styles):
        styles = [styles]
    try:
        styles = list(styles)
    except TypeError:
        raise InputError(f"styles {styles!r} must be an image or a sequence of images") from None
    if not styles:
        raise InputError("at least one style image is needed")
    t_start = time.perf_counter()

    inputs = load_inputs(content, styles, cfg)
    stages = pyramid(cfg.size, cfg.iterations, cfg.scales)
    sizes = [fit_size(*inputs.content.size, s.long_side) for s in stages]
    for size in sizes:
        check_size("output", *size)
    painter, w = painter_for(cfg, weights, painter)

    def terms_at(k: int, stage: Stage, step: Step) -> List[Term]:
        return build_terms(cfg, stage_sources(inputs, cfg, stage, step.size, painter.device))

    def start(step: Step) -> torch.Tensor:
        first = initial_image(cfg.init, resize(inputs.net_content, stages[0].long_side), step.size, cfg.seed,
                              painter.device, palette=inputs.styles)
        return inputs.colors.variable(first)

    done = paint_pyramid(cfg, painter, stages, sizes, terms_at, start, style_layers=cfg.style_layers,
                         content_layers=cfg.content_layers, weights=w, network_input=inputs.colors.network_input,
                         image=inputs.colors.image, callback=callback, cancel=cancel, snapshot_every=snapshot_every,
                         t_start=t_start)
    image = inputs.colors.image(done.x)
    if image.size != sizes[-1]:  # cannot happen with pyramid(); a guard, not a resize
        raise RestyleError(f"internal error: made {image.size}, expected {sizes[-1]}")
    done.progress.done()
    report = run_report(
        cfg, painter, w, done.progress, [dict(long_side=s.long_side, iterations=s.iterations,
                                              style_long_side=style_side(cfg, s)) for s in stages],
        head={"styles": len(inputs.styles), "style_blend_weights": inputs.blend},
        tail={"estimate": done.estimator.summary(),  # made after the first iterations; compare timings_s.total
              "memory_plan": plan_report(done.plan)},
    )
    return Result(image, cfg, report)


def planned(steps: Sequence[Step], plan: Plan) -> Planned:
    """The event announcing the run: its scales, the pixels the network sees at each, the memory estimate."""
    return Planned(
        tuple((*step.size, step.iterations) for step in steps),
        tuple((network_pixels(*step.size, *((step.tile.core, step.tile.margin) if step.tile else ())),
               step.iterations) for step in steps),
        plan.peak, plan.budget, plan.notes,
    )


def stylize(
    content: ImageSource,
    styles: Union[ImageSource, Sequence[ImageSource]],
    config: Optional[StylizeConfig] = None,
    **kwargs: Any,
) -> Image.Image:
    """Stylise and return the PIL image; keyword arguments are run()'s and config fields."""
    return run(content, styles, config, **kwargs).image


# --- the report ---------------------------------------------------------------


def run_report(cfg: StylizeConfig, painter: Painter, w: Weights, progress: Progress, stages: List[dict],
               head: Optional[dict] = None, tail: Optional[dict] = None) -> Dict[str, Any]:
    """What a run did, for reproducing it: settings, scales, device, weights, versions, timings, losses."""
    return {
        "restyle": __version__,
        **(head or {}),
        "config": cfg.to_dict(),
        "stages": stages,
        "device": device_name(painter.device),
        "precision": painter.precision,
        "weights": {"path": str(w.path), "sha256": w.sha256, "format": w.input_format},
        "versions": versions(),
        "timings_s": {k: round(v, 3) for k, v in progress.timings.items()},
        "final_loss": dict(progress.terms),
        "iterations": progress.total,
        **(tail or {}),
    }


def plan_report(plan: Plan) -> Dict[str, Any]:
    return {
        "budget_gb": round(plan.budget / 2**30, 2),
        "stages": [{"size": f"{s.width}x{s.height}", "optimizer": s.optimizer, "history": s.history,
                    "tile": s.tile, "estimate_gb": round(s.bytes / 2**30, 2), "note": s.note}
                   for s in plan.stages],
    }


def versions() -> Dict[str, str]:
    import PIL

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "pillow": PIL.__version__,
        "platform": platform.platform(),
    }
