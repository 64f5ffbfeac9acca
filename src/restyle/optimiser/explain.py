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

import html
import json
import math
import time
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from .config import PRESETS, ExplainConfig, StylizeConfig
from .device import network, resolve_device, resolve_precision
from .engine import Painter, noise_image, paint_pyramid, painter_for, run
from .errors import Cancelled, InputError
from .events import Iterate
from .loop import Step, is_cancelled
from .models.layers import deepest_layer, receptive_field
from .images import PathLike, READ_FORMATS, check_size, fit_size, load_image, resize, save_atomic, to_pil, to_tensor
from .images import write_text_atomic
from .losses import gram
from .objective import ContentTerm, GramStyleTerm, Term, TVTerm
from .schedule import Stage, pyramid
from .weights import load_weights

BLOCKS = (1, 2, 3, 4, 5)
MAP_SIZE = 192  # long side of the feature-map pictures
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")


def _paper_name(layer: str) -> str:
    """restyle's relu4_2 is the paper's conv4_2 (Caffe's in-place ReLU)."""
    return layer.replace("relu", "conv")


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

# Five stops of matplotlib's "magma" colour map (perceptually uniform), interpolated.
MAGMA = np.array([(0, 0, 4), (81, 18, 124), (183, 55, 121), (252, 137, 97), (252, 253, 191)], dtype=np.float32)


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB (shape + (3,)) on the magma scale."""
    v = np.clip(np.nan_to_num(values.astype(np.float32)), 0, 1) * (len(MAGMA) - 1)
    lo = np.floor(v).astype(int).clip(0, len(MAGMA) - 2)
    t = (v - lo)[..., None]
    return (MAGMA[lo] * (1 - t) + MAGMA[lo + 1] * t).round().astype(np.uint8)


def spectral_order(g: np.ndarray, neighbours: int = 8) -> np.ndarray:
    """A channel order that puts channels that co-occur next to each other.

    Spectral seriation: sort channels by the Fiedler vector (second-smallest
    eigenvector of the normalised graph Laplacian) of a graph that links each
    channel to the `neighbours` channels it is most correlated with. ReLU
    features all correlate a little, so the full correlation graph would hide the
    groups; the nearest-neighbour graph keeps them. Dead channels go last.
    """
    g = np.asarray(g, dtype=np.float64)
    d = np.sqrt(np.clip(np.diag(g), 0, None))
    alive = d > 1e-12 * max(d.max(), 1e-30)
    idx = np.flatnonzero(alive)
    dead = np.flatnonzero(~alive)
    if len(idx) <= 2:
        return np.concatenate([idx, dead])
    corr = np.clip(g[np.ix_(idx, idx)] / np.outer(d[idx], d[idx]), 0, None)
    np.fill_diagonal(corr, 0)
    k = min(neighbours, len(idx) - 1)
    near = np.argsort(-corr, axis=1)[:, :k]
    w = np.zeros_like(corr)
    rows = np.repeat(np.arange(len(idx)), k)
    w[rows, near.ravel()] = corr[rows, near.ravel()]
    w = np.maximum(w, w.T) + 1e-6  # symmetric, and connected
    np.fill_diagonal(w, 0)
    deg = w.sum(1)
    inv = 1 / np.sqrt(deg)
    lap = np.eye(len(idx)) - inv[:, None] * w * inv[None, :]
    _, vecs = np.linalg.eigh(lap)
    fiedler = vecs[:, 1] * inv
    return np.concatenate([idx[np.argsort(fiedler, kind="stable")], dead])


def top_positions(maps: Sequence[np.ndarray], k: int, min_dist: float) -> List[Tuple[int, int, int, float]]:
    """The k strongest (image, row, col, value) over several 2-D maps, at least `min_dist` apart
    (in map cells, Chebyshev distance) within one image, so that the patches differ; closer
    ones only where the maps are too small to hold k such positions."""
    flat = [(m.ravel(), m.shape) for m in maps]
    cands: List[Tuple[float, int, int]] = []
    per_image = max(k * 20, 50)
    for i, (v, _) in enumerate(flat):
        n = min(per_image, v.size)
        top = np.argpartition(-v, n - 1)[:n]
        cands += [(float(v[j]), i, int(j)) for j in top]
    cands.sort(key=lambda c: -c[0])
    chosen: List[Tuple[int, int, int, float]] = []
    # Apart first; if the images are too small for k such positions, fill up with the next best.
    for dist in (min_dist, 1):
        for value, i, j in cands:
            if len(chosen) == k:
                return chosen
            r, c = divmod(j, flat[i][1][1])
            if all(ci != i or max(abs(r - rr), abs(c - cc)) >= dist for ci, rr, cc, _ in chosen):
                chosen.append((i, r, c, value))
    return sorted(chosen, key=lambda t: -t[3])


def patch_box(layer: str, row: int, col: int) -> Tuple[int, int, int, int]:
    """Input-pixel box (left, top, right, bottom) of the receptive field of unit (row, col) of `layer`.

    With 3x3 convolutions padded by 1 and 2x2 poolings, unit i of a layer of
    stride s is centred on input pixel i*s + (s-1)/2; the box may leave the image.
    """
    size, stride = receptive_field(layer)
    cy, cx = row * stride + (stride - 1) / 2, col * stride + (stride - 1) / 2
    left, top = int(math.floor(cx - (size - 1) / 2)), int(math.floor(cy - (size - 1) / 2))
    return left, top, left + size, top + size


def crop_patch(img: Image.Image, box: Tuple[int, int, int, int]) -> Image.Image:
    """Crop `box`; the part outside the image is mid-grey, so the patch keeps its true size."""
    left, top, right, bottom = box
    patch = Image.new("RGB", (right - left, bottom - top), (128, 128, 128))
    inner = (max(left, 0), max(top, 0), min(right, img.width), min(bottom, img.height))
    if inner[0] < inner[2] and inner[1] < inner[3]:
        patch.paste(img.crop(inner), (inner[0] - left, inner[1] - top))
    return patch


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
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise InputError(
            f"--images {folder}: no image files (looked for {', '.join(IMAGE_SUFFIXES)})"
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
    emit = callback or (lambda p: None)

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
    done = 0

    def tick(section: str, label: str, n: int = 1) -> None:
        nonlocal done
        done += n
        if is_cancelled(cancel):
            raise Cancelled("cancelled")
        emit(Progress(section, label, done, steps, time.perf_counter() - t0))

    def forward(section: str, label: str) -> Callable[[Any], None]:
        def on_event(event: Any) -> None:
            if isinstance(event, Iterate):
                tick(section, label)

        return on_event

    for d in ("inputs", "content", "style", "gram", "tradeoff", "units"):
        (out / d).mkdir(parents=True, exist_ok=True)
    save_atomic(resize(content_img, cfg.size), out / "inputs/content.png")
    save_atomic(resize(style_img, cfg.size), out / "inputs/style.png")

    synth = dict(weights=weights, cancel=cancel)

    # 1. Content reconstructions: match one layer's activations, nothing else.
    t = time.perf_counter()
    for layer, rel in zip(cfg.content_layers, plan["content"]):
        img = reconstruct_content(content_img, layer, cfg, callback=forward("content", f"content from {_paper_name(layer)}"), **synth)
        save_atomic(img, out / rel)
    timings["content"] = time.perf_counter() - t

    # 2. Style reconstructions: match the Gram matrices of the first k style layers.
    t = time.perf_counter()
    for k, rel in enumerate(plan["style"], start=1):
        layers = cfg.style_layers[:k]
        img = reconstruct_style(style_img, layers, cfg, callback=forward("style", f"style up to {_paper_name(layers[-1])}"), **synth)
        save_atomic(img, out / rel)
    timings["style"] = time.perf_counter() - t

    # 3. Gram matrices of the style image (and of the content image, in the same order).
    t = time.perf_counter()
    # With the pooling of the syntheses: these are the matrices section 2 matched.
    painter = Painter(network(w, deepest_layer(cfg.style_layers), cfg.pooling, device), device, precision)
    gram_stats = gram_section(painter, content_img, style_img, cfg, out, lambda label: tick("gram", label))
    timings["gram"] = time.perf_counter() - t

    # 4. The trade-off: alpha/beta x content layer, from noise as in the paper.
    t = time.perf_counter()
    rels = iter(plan["tradeoff"])
    for layer in cfg.tradeoff_layers:
        for ratio in cfg.ratios:
            label = f"{_paper_name(layer)}, alpha/beta {ratio:g}"
            img = tradeoff_result(content_img, style_img, layer, ratio, cfg, callback=forward("tradeoff", label), **synth)
            save_atomic(img, out / next(rels))
    timings["tradeoff"] = time.perf_counter() - t

    # 5. Units: the patches that excite them most, and their feature maps.
    t = time.perf_counter()
    corpus = [("content image", content_img), ("style image", style_img)] + [
        (p.name, img) for p, img in zip(extra, extra_imgs)
    ]
    # The network as trained (max pooling): what its units respond to.
    painter = Painter(network(w, deepest_layer(cfg.unit_layers), "max", device), device, precision)
    chosen = units_section(painter, corpus, cfg, out, lambda label: tick("units", label))
    timings["units"] = time.perf_counter() - t

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


def gram_image(g: np.ndarray, top: float, min_side: int = 256) -> Image.Image:
    """A Gram matrix as a magma heatmap on a square-root scale (so weak co-occurrences show),
    each cell an integer number of pixels wide."""
    v = np.sqrt(np.clip(g / top, 0, None))
    img = Image.fromarray(colormap(v))
    if g.shape[0] > min_side:  # 512 channels: average 2x2 cells (keeps the files small)
        return img.resize((min_side, min_side), Image.Resampling.BOX)
    scale = max(1, math.ceil(min_side / g.shape[0]))
    return img.resize((g.shape[0] * scale,) * 2, Image.Resampling.NEAREST)


def feature_map_image(fmap: np.ndarray, img: Image.Image, top: float) -> Image.Image:
    """A unit's feature map over a greyed copy of the image: coloured where the unit fires,
    the plain photo where it is silent."""
    v = np.clip(fmap / top, 0, 1)
    size = img.size
    heat = np.asarray(Image.fromarray(colormap(v)).resize(size, Image.Resampling.BILINEAR), np.float32)
    alpha = np.asarray(Image.fromarray((v * 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR), np.float32)
    alpha = (alpha / 255) ** 0.7 * 0.9
    grey = np.asarray(img.convert("L").convert("RGB"), np.float32) * 0.8 + 40
    out = grey * (1 - alpha[..., None]) + heat * alpha[..., None]
    return Image.fromarray(out.clip(0, 255).astype(np.uint8))


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


def pick_units(peak: torch.Tensor, mean: torch.Tensor, k: int) -> List[int]:
    """Units worth showing: the most selective of those that respond strongly somewhere.

    Among the channels whose peak is in the top half of the layer, take those with
    the highest peak-to-mean ratio (they fire hard on something particular, not everywhere).
    """
    alive = torch.nonzero(peak > 0).flatten()
    if len(alive) == 0:
        return list(range(min(k, len(peak))))
    strong = alive[peak[alive] >= peak[alive].median()]
    score = peak[strong] / (mean[strong] + 1e-3 * peak[strong].max())
    order = strong[torch.argsort(score, descending=True)]
    return [int(c) for c in order[:k]]


def patch_grid(patches: Sequence[Image.Image], cell: int = 72, gap: int = 3) -> Image.Image:
    """Up to nine patches in a 3x3 grid, each scaled to `cell` px (pixelated when tiny)."""
    grid = Image.new("RGB", (3 * cell + 2 * gap, 3 * cell + 2 * gap), (255, 255, 255))
    for n, p in enumerate(patches[:9]):
        method = Image.Resampling.NEAREST if p.width < cell else Image.Resampling.LANCZOS
        grid.paste(p.resize((cell, cell), method), ((n % 3) * (cell + gap), (n // 3) * (cell + gap)))
    return grid


# --- the page ---------------------------------------------------------------


def _img(src: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img src="{html.escape(src)}" alt="{html.escape(alt)}" loading="lazy">{cap}</figure>'


def render_html(
    cfg: ExplainConfig,
    plan: Dict[str, List[str]],
    units: Dict[str, List[dict]],
    corpus: Sequence[str],
    timings: Dict[str, float],
    device: str,
    precision: str,
) -> str:
    e = html.escape
    parts: Dict[str, str] = {}
    parts["content"] = "".join(
        _img(rel, f"content reconstruction from {_paper_name(layer)}", e(_paper_name(layer)))
        for layer, rel in zip(cfg.content_layers, plan["content"])
    )
    parts["style"] = "".join(
        _img(rel, f"style reconstruction from {_paper_name(cfg.style_layers[0])} to {_paper_name(layer)}",
             e(" + ".join(_paper_name(x) for x in cfg.style_layers[: k + 1])))
        for k, (layer, rel) in enumerate(zip(cfg.style_layers, plan["style"]))
    )
    rows = []
    for layer in cfg.style_layers:
        rows.append(
            "<div class='gramrow'>"
            + _img(f"gram/{layer}_style.png", f"Gram matrix of the style image at {_paper_name(layer)}",
                   f"{e(_paper_name(layer))}: style image")
            + _img(f"gram/{layer}_content.png", f"Gram matrix of the content image at {_paper_name(layer)}",
                   f"{e(_paper_name(layer))}: content image, same order")
            + "</div>"
        )
    parts["gram"] = "".join(rows)
    head = "<tr><th>content layer</th>" + "".join(f"<th>&alpha;/&beta; = {r:g}</th>" for r in cfg.ratios) + "</tr>"
    body = ""
    rels = iter(plan["tradeoff"])
    for layer in cfg.tradeoff_layers:
        body += f"<tr><th>{e(_paper_name(layer))}</th>" + "".join(
            f"<td>{_img(next(rels), f'{_paper_name(layer)}, alpha/beta {r:g}')}</td>" for r in cfg.ratios
        ) + "</tr>"
    parts["tradeoff"] = f"<table class='grid'>{head}{body}</table>"
    blocks = []
    for layer, shown in units.items():
        size, _ = receptive_field(layer)
        cells = "".join(
            "<div class='unit'>"
            + _img(f"units/{layer}_{k + 1}_patches.png", f"top patches of unit {u['channel']} of {layer}",
                   f"unit {u['channel']}: top 9 patches ({size}&times;{size} px)")
            + _img(f"units/{layer}_{k + 1}_map_content.png", f"feature map of unit {u['channel']} on the content image",
                   "its map on the content image")
            + _img(f"units/{layer}_{k + 1}_map_style.png", f"feature map of unit {u['channel']} on the style image",
                   "on the style image")
            + "</div>"
            for k, u in enumerate(shown)
        )
        blocks.append(
            f"<h3>Block {layer[4]}: {e(_paper_name(layer))} (receptive field {size}&times;{size} px "
            f"of the {cfg.patch_size} px images)</h3><div class='units'>{cells}</div>"
        )
    parts["units"] = "".join(blocks)
    template = Template((resources.files("restyle") / "report" / "template.html").read_text(encoding="utf-8"))
    return template.substitute(
        **parts,
        size=cfg.size,
        corpus=e(", ".join(corpus)),
        patch_size=cfg.patch_size,
        settings=e(
            f"{cfg.size} px; {cfg.content_iterations}/{cfg.style_iterations}/{cfg.tradeoff_iterations} "
            f"L-BFGS iterations (content/style/trade-off) at the coarsest of {cfg.scales} scale(s); "
            f"{cfg.pooling} pooling; TV weight {cfg.tv_weight:g}; seed {cfg.seed}; {device}, {precision}; "
            f"made in {timings['total']:.0f} s"
        ),
        default_ratio=f"{PRESETS['gatys2016']['content_weight'] / PRESETS['gatys2016']['style_weight']:g}",
    )
