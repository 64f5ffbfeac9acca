"""The explain report's pictures and page: colour maps, Gram matrices in a readable order, the
strongest units' patches, and the HTML page (report/template.html). Pure NumPy and Pillow."""

from __future__ import annotations

import html
import math
from importlib import resources
from string import Template
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from ..config import PRESETS, ExplainConfig
from ..models.layers import receptive_field


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


def _paper_name(layer: str) -> str:
    """restyle's relu4_2 is the paper's conv4_2 (Caffe's in-place ReLU)."""
    return layer.replace("relu", "conv")
