"""Explain: what each layer of VGG-19 sees, drawn from the user's own images.

    report = explain("photo.jpg", "painting.jpg", "report/", ExplainConfig.quick())
    report.index  # -> report/index.html

The report redraws the figures that explain neural style transfer:

1. content reconstructions (Gatys, Ecker & Bethge, CVPR 2016, Fig. 1): images
   synthesised from noise to match the content image's activations at one layer;
2. style reconstructions (Fig. 1): textures synthesised from the style image's
   Gram matrices at conv1_1, conv1_1+conv2_1, ... up to conv5_1;
3. the style image's Gram matrices as heatmaps, channels reordered so that
   groups of features that fire together sit together;
4. the content/style trade-off (Fig. 3): results over alpha/beta and over the
   choice of content layer;
5. what units respond to (after Zeiler & Fergus 2013): for a few units of each
   block, the nine image patches that excite them most, cut at the unit's
   receptive field, and the unit's feature map over both images.

Every picture is made by the engine's own pieces: reconstructions are the
engine's pyramid and loop (`engine.paint_pyramid`) with only the terms they
need (a content term, or a Gram style term, and TV), the trade-off grid is
`engine.run`, features come from `Painter`.
The paper names layers conv1_2 ...; Caffe's ReLUs run in place, so its
"conv1_2" is the rectified output, `relu1_2` in restyle's names.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from ..config import ExplainConfig, StylizeConfig
from ..device import network, resolve_device, resolve_precision
from ..errors import Cancelled, InputError
from ..events import Iterate
from ..images import PathLike, check_size, fit_size, load_image, resize, save_atomic, to_pil, to_tensor
from ..images import IMAGE_SUFFIXES, write_text_atomic
from ..models.layers import deepest_layer, receptive_field
from ..models.weights import load_weights
from .engine import Painter, noise_image, paint_pyramid, painter_for, run
from .explain_figures import (  # noqa: F401  (colormap is part of the report's API)
    _paper_name, colormap, crop_patch, feature_map_image, gram_image, patch_box, patch_grid, pick_units,
    render_html, spectral_order, top_positions,
)
from .loop import Step, is_cancelled
from .losses import gram
from .objective import ContentTerm, GramStyleTerm, Term, TVTerm
from .schedule import Stage, pyramid

BLOCKS = (1, 2, 3, 4, 5)
MAP_SIZE = 192  # long side of the feature-map pictures
EXPLAIN_SUFFIXES = IMAGE_SUFFIXES + (".gif",)  # the one list, plus GIF, which the report also reads


@dataclass(frozen=True)
class Progress:
    """One step of the report: `step` of `steps` (iterations, plus one per image searched or drawn)."""

    section: str
    label: str
    step: int
    steps: int
    elapsed: float


@dataclass
class ExplainReport:
    out_dir: Path
    index: Path
    files: Dict[str, List[Path]]  # section -> files written (relative paths are in index.html)
    timings_s: Dict[str, float]
    units: Dict[str, List[int]]  # layer -> channel indices shown


# --- small pure helpers (tested without a network) --------------------------


# --- the report -------------------------------------------------------------


def _plan(cfg: ExplainConfig) -> Dict[str, List[str]]:
    """Every file the report writes, relative to the report folder, by section."""
    ratio = [_ratio_name(r) for r in cfg.ratios]
    return {
        "inputs": ["inputs/content.png", "inputs/style.png"],
        "content": [f"content/{layer}.png" for layer in cfg.content_layers],
        "style": [f"style/upto_{layer}.png" for layer in cfg.style_layers],
        "gram": [f"gram/{layer}_{which}.png" for layer in cfg.style_layers for which in ("style", "content")],
        "tradeoff": [f"tradeoff/{layer}_ratio_{r}.png" for layer in cfg.tradeoff_layers for r in ratio],
        "units": [
            f"units/{layer}_{k}_{what}.png"
            for layer in cfg.unit_layers
            for k in range(1, cfg.units + 1)
            for what in ("patches", "map_content", "map_style")
        ],
        "page": ["index.html", "report.json"],
    }


def _ratio_name(r: float) -> str:
    return f"{r:.0e}".replace("+", "")


def check_out_dir(out_dir: PathLike, inputs: Sequence[Path], planned: Sequence[str]) -> Path:
    """The report folder may exist (it is rewritten), but must not be a file, and no file
    the report writes may be one of the inputs."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out}: is a file; give a folder for the report")
    if not out.exists() and not out.parent.exists():
        raise InputError(f"output {out}: folder {out.parent} does not exist")
    resolved = {Path(p).resolve(): p for p in inputs}
    for rel in planned:
        target = (out / rel).resolve()
        if target in resolved:
            raise InputError(
                f"the report would write {out / rel}, which is input {resolved[target]}; "
                "refusing to overwrite an input (choose another output folder)"
            )
        if (out / rel).exists() and (out / rel).is_dir():
            raise InputError(f"the report would write {out / rel}, which is a folder")
    return out


def list_images(folder: PathLike, limit: int) -> List[Path]:
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"--images {folder}: no such folder")
    if not folder.is_dir():
        raise InputError(f"--images {folder}: not a folder")
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXPLAIN_SUFFIXES)
    if not found:
        raise InputError(
            f"--images {folder}: no image files (looked for {', '.join(EXPLAIN_SUFFIXES)})"
        )
    return found[:limit]


def explain(
    content: PathLike,
    style: PathLike,
    out_dir: PathLike,
    config: Optional[ExplainConfig] = None,
    *,
    images: Optional[PathLike] = None,
    weights: Optional[PathLike] = None,
    callback: Optional[Callable[[Progress], None]] = None,
    cancel: Any = None,
) -> ExplainReport:
    """Write the report (index.html and its PNGs) into `out_dir`; returns what was written.

    `images` is an optional folder of more pictures to search for the patches
    that excite each unit. `callback` receives `Progress` events; `cancel` is
    a threading.Event or a callable, as in `engine.run`.
    """
    cfg = config or ExplainConfig()
    t0 = time.perf_counter()

    # Check everything at the boundary before any work.
    content_img = load_image(content)
    style_img = load_image(style)
    extra = list_images(images, cfg.max_images) if images is not None else []
    extra_imgs = [load_image(p) for p in extra]
    plan = _plan(cfg)
    out = check_out_dir(out_dir, [Path(content), Path(style), *extra], [f for fs in plan.values() for f in fs])
    coarsest = cfg.size // 2 ** (cfg.scales - 1)
    for name, img in (("content image", content_img), ("style image", style_img)):
        check_size(f"{name} at the coarsest scale", *fit_size(*img.size, coarsest))

    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    w = load_weights(weights)
    timings: Dict[str, float] = {"setup": time.perf_counter() - t0}

    steps = _iterations(cfg) + len(cfg.style_layers) + 2 * (2 + len(extra_imgs))  # + Gram matrices + image passes
    tick = _Ticker(callback or (lambda p: None), cancel, steps, t0)
    for d in ("inputs", "content", "style", "gram", "tradeoff", "units"):
        (out / d).mkdir(parents=True, exist_ok=True)
    save_atomic(resize(content_img, cfg.size), out / "inputs/content.png")
    save_atomic(resize(style_img, cfg.size), out / "inputs/style.png")
    synth = dict(weights=weights, cancel=cancel)

    with _timed(timings, "content"):
        content_section(content_img, cfg, plan["content"], out, tick.forward, **synth)
    with _timed(timings, "style"):
        style_section(style_img, cfg, plan["style"], out, tick.forward, **synth)
    with _timed(timings, "gram"):
        # With the pooling of the syntheses: these are the matrices section 2 matched.
        painter = Painter(network(w, deepest_layer(cfg.style_layers), cfg.pooling, device), device, precision)
        gram_stats = gram_section(painter, content_img, style_img, cfg, out, lambda label: tick("gram", label))
    with _timed(timings, "tradeoff"):
        tradeoff_section(content_img, style_img, cfg, plan["tradeoff"], out, tick.forward, **synth)
    with _timed(timings, "units"):
        corpus = [("content image", content_img), ("style image", style_img)] + [
            (p.name, img) for p, img in zip(extra, extra_imgs)
        ]
        # The network as trained (max pooling): what its units respond to.
        painter = Painter(network(w, deepest_layer(cfg.unit_layers), "max", device), device, precision)
        chosen = units_section(painter, corpus, cfg, out, lambda label: tick("units", label))

    timings["total"] = time.perf_counter() - t0
    files = {k: [out / f for f in v] for k, v in plan.items()}
    write_text_atomic(
        json.dumps(
            {
                "config": cfg.to_dict(), "content": str(content), "style": str(style),
                "images": [str(p) for p in extra], "units": chosen, "gram": gram_stats,
                "device": str(device), "precision": precision, "weights": w.sha256,
                "timings_s": {k: round(v, 2) for k, v in timings.items()},
            },
            indent=2,
        )
        + "\n",
        out / "report.json",
    )
    write_text_atomic(render_html(cfg, plan, chosen, [n for n, _ in corpus], timings, str(device), precision), out / "index.html")
    return ExplainReport(out, out / "index.html", files, timings, chosen)


class _Ticker:
    """The report's steps as Progress events (`callback`), `done` of `steps`; Cancelled once `cancel` is set."""

    def __init__(self, emit: Callable[[Progress], None], cancel: Any, steps: int, t0: float) -> None:
        self.emit, self.cancel, self.steps, self.t0 = emit, cancel, steps, t0
        self.done = 0

    def __call__(self, section: str, label: str, n: int = 1) -> None:
        self.done += n
        if is_cancelled(self.cancel):
            raise Cancelled("cancelled")
        self.emit(Progress(section, label, self.done, self.steps, time.perf_counter() - self.t0))

    def forward(self, section: str, label: str) -> Callable[[Any], None]:
        """An engine callback that ticks once per iteration of a synthesis."""
        def on_event(event: Any) -> None:
            if isinstance(event, Iterate):
                self(section, label)

        return on_event


@contextmanager
def _timed(timings: Dict[str, float], name: str) -> Iterator[None]:
    """timings[name]: the seconds the block took."""
    t = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - t


Forward = Callable[[str, str], Callable[[Any], None]]  # (section, label) -> an engine callback (_Ticker.forward)


def content_section(content: Image.Image, cfg: ExplainConfig, rels: Sequence[str], out: Path, forward: Forward,
                    **synth: Any) -> None:
    """1. Content reconstructions: match one layer's activations, nothing else."""
    for layer, rel in zip(cfg.content_layers, rels):
        img = reconstruct_content(content, layer, cfg, callback=forward("content", f"content from {_paper_name(layer)}"), **synth)
        save_atomic(img, out / rel)


def style_section(style: Image.Image, cfg: ExplainConfig, rels: Sequence[str], out: Path, forward: Forward,
                  **synth: Any) -> None:
    """2. Style reconstructions: match the Gram matrices of the first k style layers."""
    for k, rel in enumerate(rels, start=1):
        layers = cfg.style_layers[:k]
        img = reconstruct_style(style, layers, cfg, callback=forward("style", f"style up to {_paper_name(layers[-1])}"), **synth)
        save_atomic(img, out / rel)


def tradeoff_section(content: Image.Image, style: Image.Image, cfg: ExplainConfig, rels: Sequence[str], out: Path,
                     forward: Forward, **synth: Any) -> None:
    """4. The trade-off: alpha/beta x content layer, from noise as in the paper."""
    rel = iter(rels)
    for layer in cfg.tradeoff_layers:
        for ratio in cfg.ratios:
            label = f"{_paper_name(layer)}, alpha/beta {ratio:g}"
            img = tradeoff_result(content, style, layer, ratio, cfg, callback=forward("tradeoff", label), **synth)
            save_atomic(img, out / next(rel))


def _synth_config(cfg: ExplainConfig, iterations: int, **changes: Any) -> StylizeConfig:
    """The engine's settings for one synthesis from noise."""
    return StylizeConfig(
        size=cfg.size, iterations=iterations, scales=(cfg.scales,), init="noise", seed=cfg.seed,
        pooling=cfg.pooling, device=cfg.device, precision=cfg.precision, tv_weight=cfg.tv_weight,
        # The paper's (unscaled) style loss: the report shows Gatys et al.'s figures and their trade-off.
        optimizer="lbfgs", style_norm="none",
    ).replace(**changes)


def reconstruct_content(
    content: Image.Image, layer: str, cfg: ExplainConfig, *, weights: Optional[PathLike] = None,
    callback: Optional[Callable[[Any], None]] = None, cancel: Any = None,
) -> Image.Image:
    """An image synthesised from noise to match `content`'s activations at `layer` alone (Fig. 1)."""
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    painter = Painter(network(load_weights(weights), layer, cfg.pooling, device), device, precision)
    with torch.no_grad():
        target = painter.features(to_tensor(resize(content, cfg.size), device), (layer,))[layer]
    # The content loss divided by the target's mean square is a relative error, so one
    # weight (and one TV weight, scaled by the layer's stride) works at every depth.
    energy = float(target.float().pow(2).mean().clamp_min(1e-12))
    weight, tv = cfg.content_weight / energy, cfg.tv_weight * receptive_field(layer)[1]
    sc = _synth_config(cfg, cfg.content_iterations, content_layers=(layer,), style_layers=(layer,))
    return synthesize_from_noise(
        content, sc, lambda c: [ContentTerm(weight, (layer,), c), TVTerm(tv)], content_layers=(layer,),
        weights=weights, callback=callback, cancel=cancel,
    )


def reconstruct_style(
    style: Image.Image, layers: Sequence[str], cfg: ExplainConfig, *, weights: Optional[PathLike] = None,
    callback: Optional[Callable[[Any], None]] = None, cancel: Any = None,
) -> Image.Image:
    """A texture synthesised from noise to match `style`'s Gram matrices at `layers` (Fig. 1).

    Textures of shallow layers are painted at full size only: their statistics cannot
    see scale, so blobs upsampled from a coarse scale would survive as blobs. The
    texture takes the style image's shape.
    """
    shallow = receptive_field(deepest_layer(layers))[1] < 8
    sc = _synth_config(cfg, cfg.style_iterations, content_layers=(layers[0],), style_layers=tuple(layers),
                       scales=(1,) if shallow else (cfg.scales,))
    return synthesize_from_noise(
        style, sc, lambda s: [GramStyleTerm(cfg.style_weight, layers, None, [s], [1.0]), TVTerm(cfg.tv_weight)],
        style_layers=tuple(layers), weights=weights, callback=callback, cancel=cancel,
    )


def synthesize_from_noise(
    image: Image.Image, sc: StylizeConfig, terms: Callable[[torch.Tensor], List[Term]], *,
    content_layers: Sequence[str] = (), style_layers: Sequence[str] = (), weights: Optional[PathLike] = None,
    callback: Optional[Callable[[Any], None]] = None, cancel: Any = None,
) -> Image.Image:
    """Paint from seeded noise, coarse to fine, with the terms `terms` makes from `image` at each scale
    (the result takes `image`'s shape); the engine's pyramid and loop, with only these terms."""
    painter, w = painter_for(sc, weights)
    stages = pyramid(sc.size, sc.iterations, sc.scales)
    sizes = [fit_size(*image.size, s.long_side) for s in stages]
    for size in sizes:
        check_size("output", *size)

    def terms_at(k: int, stage: Stage, step: Step) -> List[Term]:
        return terms(to_tensor(resize(image, stage.long_side), painter.device))

    def start(step: Step) -> torch.Tensor:
        return noise_image(step.size, sc.seed, painter.device)

    done = paint_pyramid(sc, painter, stages, sizes, terms_at, start, content_layers=content_layers,
                         style_layers=style_layers, weights=w, callback=callback, cancel=cancel)
    done.progress.done()
    return to_pil(done.x)


def tradeoff_result(
    content: Image.Image, style: Image.Image, layer: str, ratio: float, cfg: ExplainConfig, *,
    weights: Optional[PathLike] = None, callback: Optional[Callable[[Any], None]] = None, cancel: Any = None,
) -> Image.Image:
    """Style transfer from noise with content at `layer` and alpha/beta = `ratio` (Fig. 3)."""
    sc = _synth_config(
        cfg, cfg.tradeoff_iterations, content_layers=(layer,), style_layers=cfg.style_layers,
        content_weight=ratio * cfg.style_weight, style_weight=cfg.style_weight,
    )
    return run(content, style, sc, weights=weights, callback=callback, cancel=cancel).image


def _iterations(cfg: ExplainConfig) -> int:
    """Engine iterations of the whole report (for the progress total)."""
    def total(n: int, scales: int) -> int:
        return sum(s.iterations for s in pyramid(cfg.size, n, (scales,)))

    style = sum(
        total(cfg.style_iterations, 1 if receptive_field(deepest_layer(cfg.style_layers[: k + 1]))[1] < 8 else cfg.scales)
        for k in range(len(cfg.style_layers))
    )
    return (
        len(cfg.content_layers) * total(cfg.content_iterations, cfg.scales)
        + style
        + len(cfg.tradeoff_layers) * len(cfg.ratios) * total(cfg.tradeoff_iterations, cfg.scales)
    )


def gram_section(
    painter: Painter, content: Image.Image, style: Image.Image, cfg: ExplainConfig, out: Path,
    tick: Callable[[str], None],
) -> Dict[str, Dict[str, int]]:
    """Write each style layer's Gram matrix of the style image, and the content image's in the same order."""
    device = painter.device
    stats: Dict[str, Dict[str, int]] = {}
    with torch.no_grad():
        sfeats = painter.features(to_tensor(resize(style, cfg.size), device), cfg.style_layers)
        cfeats = painter.features(to_tensor(resize(content, cfg.size), device), cfg.style_layers)
        for layer in cfg.style_layers:
            gs = gram(sfeats[layer])[0].cpu().numpy()
            gc = gram(cfeats[layer])[0].cpu().numpy()
            order = spectral_order(gs)
            # Scale to the style matrix's 99.5th percentile: the few largest (diagonal)
            # cells saturate, the co-occurrences stay visible.
            top = float(np.percentile(gs, 99.5)) or 1.0
            for g, rel in ((gs, f"gram/{layer}_style.png"), (gc, f"gram/{layer}_content.png")):
                save_atomic(gram_image(g[np.ix_(order, order)], top), out / rel)
            stats[layer] = {"channels": int(gs.shape[0]), "alive": int((np.diag(gs) > 0).sum())}
            tick(f"Gram matrix of {_paper_name(layer)}")
    return stats


def units_section(
    painter: Painter,
    corpus: Sequence[Tuple[str, Image.Image]],
    cfg: ExplainConfig,
    out: Path,
    tick: Callable[[str], None],
) -> Dict[str, List[dict]]:
    """For each unit layer, pick `cfg.units` channels and write their top-9 patches and maps."""
    layers = cfg.unit_layers
    device = painter.device
    sized = [(name, resize(img, cfg.patch_size)) for name, img in corpus]

    # Pass 1: each channel's strongest response over all images -> which units to show.
    peak: Dict[str, torch.Tensor] = {}
    mean: Dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, img in sized:
            feats = painter.features(to_tensor(img, device), layers)
            for layer in layers:
                f = feats[layer][0].float()
                m = f.amax(dim=(1, 2)).cpu()
                peak[layer] = torch.maximum(peak[layer], m) if layer in peak else m
                a = f.mean(dim=(1, 2)).cpu() / len(sized)
                mean[layer] = mean[layer] + a if layer in mean else a
            tick(f"searching {name}")
    chosen_ch = {layer: pick_units(peak[layer], mean[layer], cfg.units) for layer in layers}

    # Pass 2: the chosen units' maps over every image.
    maps: Dict[str, List[np.ndarray]] = {layer: [] for layer in layers}
    with torch.no_grad():
        for name, img in sized:
            feats = painter.features(to_tensor(img, device), layers)
            for layer in layers:
                maps[layer].append(feats[layer][0, chosen_ch[layer]].float().cpu().numpy())
            tick(f"mapping {name}")

    shown: Dict[str, List[dict]] = {}
    for layer in layers:
        size, stride = receptive_field(layer)
        shown[layer] = []
        for k, ch in enumerate(chosen_ch[layer]):
            unit_maps = [m[k] for m in maps[layer]]
            # Patches at least half a receptive field apart, so the nine are not one spot nine times.
            best = top_positions(unit_maps, 9, max(1.0, size / stride / 2))
            patches = [crop_patch(sized[i][1], patch_box(layer, r, c)) for i, r, c, _ in best]
            save_atomic(patch_grid(patches), out / f"units/{layer}_{k + 1}_patches.png")
            top = max(float(m.max()) for m in unit_maps[:2]) or 1.0
            for i, which in ((0, "content"), (1, "style")):
                # Drawn at MAP_SIZE px: as large as the page shows it, and small files.
                save_atomic(
                    feature_map_image(unit_maps[i], resize(sized[i][1], MAP_SIZE), top),
                    out / f"units/{layer}_{k + 1}_map_{which}.png",
                )
            shown[layer].append(
                {
                    "channel": int(ch),
                    "receptive_field_px": size,
                    "patches": [
                        {"image": sized[i][0], "row": r, "col": c, "box": list(patch_box(layer, r, c)), "activation": round(v, 4)}
                        for i, r, c, v in best
                    ],
                }
            )
    return shown


# --- the page ---------------------------------------------------------------


