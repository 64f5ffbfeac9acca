"""The objective: a weighted sum of loss terms, each of which knows its layers, target and tiling.

    terms = build_terms(cfg, Sources(content=c, styles=[s], blend=[1.0]))
    objective = Objective(terms, painter).prepare(cache=painter.cache)
    total, parts = objective(x)          # parts: {"content": ..., "style": ..., "tv": ...}

A term (after crowsonkb/style-transfer-pytorch's `Scale(LayerApply(StyleLoss(target), layer), weight)`)

- names the network layers it reads (`layers`), so the objective asks the network
  for the union of all terms' layers in one forward pass;
- prepares its target once, without gradients (`prepare`), under a cache key that
  names everything that shaped it: the network, a digest of the pixels the network
  saw (so a style recoloured for another photo never hits), the layers and the tiling;
- returns its weighted value on a batch of features (`loss`, fp32, batch mean);
- says how it is computed tile by tile (`tiled`), or refuses naming itself.

Adding a term is one class here and one line in TERMS. A term whose weight is 0 is
not built at all (its layers are then never computed).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from ..errors import ResourceError
from ..models.layers import in_network_order
from .losses import content_loss, default_layer_weights, gram, style_layer_scales, style_loss, tv_loss, wrap_tv_loss
from .regions import layer_masks
from .faces import deep, face_boxes, keep_mask
from .tiling import TiledTerm, TileSpec, TileView, gram_sum, tile_grid, tiled_grams

Feats = Dict[str, torch.Tensor]


class TilingError(ResourceError):
    """A term cannot be computed tile by tile, but the scale needs tiles to fit in memory."""


def digest(x: torch.Tensor) -> str:
    """A short content hash of a tensor's values (and shape): the identity of an image in cache keys."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str((tuple(x.shape), str(x.dtype))).encode())
    h.update(x.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


class TargetCache:
    """Prepared targets by key (least recently used evicted); `misses` counts real computations."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.entries: "OrderedDict[Any, Any]" = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        if key in self.entries:
            self.hits += 1
            self.entries.move_to_end(key)
            return self.entries[key]
        self.misses += 1
        value = compute()
        self.entries[key] = value
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return value


def _cached(cache: Optional[TargetCache], key: Any, compute: Callable[[], Any]) -> Any:
    return compute() if cache is None else cache.get(key, compute)


@dataclass
class Sources:
    """What the terms of one scale are made from (tensors at that scale, as the network sees them)."""

    content: Optional[torch.Tensor] = None  # (1, 3, H, W), or None (textures)
    styles: Sequence[torch.Tensor] = ()
    blend: Sequence[float] = ()  # one weight per style, summing to 1
    masks: Optional[Sequence[torch.Tensor]] = None  # one (1, 1, H, W) per style: guided style
    wrap: bool = False  # the image is a torus (tileable textures): TV across the seams too


class Term:
    """One weighted loss term. Subclasses set `name`, `layers`, and implement `loss` (and `prepare`, `tiled`)."""

    name = "term"
    option = ""  # the CLI option that asks for the term, for messages
    layers: Tuple[str, ...] = ()

    def __init__(self, weight: float) -> None:
        self.weight = float(weight)

    @classmethod
    def build(cls, cfg: Any, src: Sources) -> Optional["Term"]:
        """The term for a StylizeConfig and sources, or None where it does not apply or weighs 0."""
        raise NotImplementedError

    def prepare(self, net: Any, tile: Optional[TileSpec] = None, cache: Optional[TargetCache] = None) -> None:
        """Compute the target once, without gradients (tile by tile with `tile`)."""

    def loss(self, feats: Feats, x: torch.Tensor) -> torch.Tensor:
        """The weighted value on a batch: `feats` holds at least this term's layers, `x` the network's input."""
        raise NotImplementedError

    def __call__(self, feats: Feats, x: torch.Tensor) -> torch.Tensor:
        return self.loss(feats, x)

    def tiled(self) -> TiledTerm:
        """A fresh per-evaluation object computing this term tile by tile (see tiling.py)."""
        how = f" ({self.option})" if self.option else ""
        raise TilingError(f"the {self.name} term{how} cannot be computed tile by tile")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weight={self.weight:g}, layers={self.layers})"


@torch.no_grad()
def features_of(net: Any, image: torch.Tensor, layers: Sequence[str], tile: Optional[TileSpec],
                grams: bool, masks: Optional[Dict[str, torch.Tensor]] = None) -> Feats:
    """Gram matrices (grams=True) or float32 feature maps of `image` at `layers`, whole or tile by tile.

    `masks`: for the Gram matrices of some layers, a weight per position at that layer's
    resolution (regions.layer_masks): guided Gram matrices (losses.gram).
    """
    masks = masks or {}
    if tile is not None:
        grid = tile_grid(image.shape[2], image.shape[3], tile.core, tile.margin)
        g, maps = tiled_grams(net, image, layers if grams else (), grid, keep=() if grams else layers, masks=masks)
        return g if grams else maps
    feats = net.features(image, layers)
    if not grams:
        return {n: feats[n].float() for n in layers}
    return {n: gram(feats[n], masks.get(n)) for n in layers}


def style_grams(net: Any, image: torch.Tensor, layers: Sequence[str], tile: Optional[TileSpec],
                cache: Optional[TargetCache], faces: str = "keep") -> Feats:
    """One style image's Gram matrices, from `cache` when the same pixels were seen with the same settings.

    `faces` "mask": the deep layers' are taken without the painting's faces (faces.py).
    """
    def compute() -> Feats:
        masks: Dict[str, torch.Tensor] = {}
        if faces == "mask" and any(deep(n) for n in layers):
            keep = keep_mask(face_boxes(image), image.shape[2], image.shape[3], image.device)
            if keep is not None:
                masks = layer_masks(keep, [n for n in layers if deep(n)])
        return features_of(net, image, layers, tile, grams=True, masks=masks)

    key = ("grams", getattr(net, "key", None), digest(image), tuple(layers), tile, faces)
    return _cached(cache, key, compute)


class ContentTerm(Term):
    """alpha * sum_l mean((F_l(x) - F_l(p))^2): the photo's activations (Gatys et al. 2016, Eq. 1)."""

    name = "content"

    def __init__(self, weight: float, layers: Sequence[str], image: torch.Tensor) -> None:
        super().__init__(weight)
        self.layers = tuple(layers)
        self.image = image
        self.target: Feats = {}

    @classmethod
    def build(cls, cfg: Any, src: Sources) -> Optional[Term]:
        if src.content is None or cfg.content_weight == 0:
            return None
        return cls(cfg.content_weight, cfg.content_layers, src.content)

    def prepare(self, net: Any, tile: Optional[TileSpec] = None, cache: Optional[TargetCache] = None) -> None:
        # Never cached: a content changes with every run, and its maps are large.
        self.target = features_of(net, self.image, self.layers, tile, grams=False)

    def loss(self, feats: Feats, x: torch.Tensor) -> torch.Tensor:
        return sum(content_loss(feats[n], self.target[n]) for n in self.layers) * self.weight

    def tiled(self) -> TiledTerm:
        return _TiledContent(self)


class _TiledContent(TiledTerm):
    """The content loss is a sum over positions: each tile's core adds its own squared error."""

    def __init__(self, term: ContentTerm) -> None:
        self.term, self.layers = term, term.layers

    def surrogate(self, view: TileView) -> Tuple[torch.Tensor, torch.Tensor]:
        s = torch.zeros(())
        for n in self.layers:
            target = self.term.target[n]
            f = view.core(n).float()
            s = s + (f - view.region(target, n)).pow(2).sum() * (self.term.weight / target.numel())
        return s, s.detach()


class GramStyleTerm(Term):
    """beta * sum_l w_l k_l mean((G_l(x) - T_l)^2), T_l = sum_k b_k G_l(a_k): blended Gram matrices (Eq. 4-5).

    k_l is 1 with norm "none" (the paper's balance); with "target" it is STYLE_NORM_REF / mean(T_l^2),
    which makes each layer's loss a relative error (losses.style_layer_scales says why).
    `weight` is beta times --style-strength.
    """

    name = "style"

    def __init__(self, weight: float, layers: Sequence[str], layer_weights: Optional[Sequence[float]],
                 styles: Sequence[torch.Tensor], blend: Sequence[float], norm: str = "none",
                 faces: str = "keep") -> None:
        super().__init__(weight)
        self.layers = tuple(layers)
        self.layer_weights = tuple(layer_weights or default_layer_weights(self.layers, norm))
        self.styles, self.blend = list(styles), list(blend)
        self.norm = norm
        self.faces = faces
        self.target: Feats = {}
        self.scales: Dict[str, float] = {}

    @classmethod
    def build(cls, cfg: Any, src: Sources) -> Optional[Term]:
        if not src.styles or src.masks is not None or cfg.style_weight_effective == 0:
            return None
        return cls(cfg.style_weight_effective, cfg.style_layers, cfg.style_layer_weights, src.styles, src.blend,
                   cfg.style_norm, cfg.style_faces)

    def prepare(self, net: Any, tile: Optional[TileSpec] = None, cache: Optional[TargetCache] = None) -> None:
        target: Feats = {}
        for style, b in zip(self.styles, self.blend):
            grams = style_grams(net, style, self.layers, tile, cache, self.faces)
            for n in self.layers:
                g = grams[n] * b
                target[n] = target[n] + g if n in target else g
        self.target = target
        self.scales = style_layer_scales(target, self.layers, self.norm)

    def scaled_weights(self) -> Tuple[float, ...]:
        """w_l * k_l, one per layer (after prepare)."""
        return tuple(w * self.scales[n] for n, w in zip(self.layers, self.layer_weights))

    def loss(self, feats: Feats, x: torch.Tensor) -> torch.Tensor:
        s = sum(w * style_loss(gram(feats[n]), self.target[n]) for n, w in zip(self.layers, self.scaled_weights()))
        return s * self.weight

    def tiled(self) -> TiledTerm:
        return _TiledGram(self)


class _TiledGram(TiledTerm):
    """Pass 1 sums F F^T over the cores into the global Gram G; pass 2 backpropagates <dL/dG, F F^T>."""

    def __init__(self, term: GramStyleTerm) -> None:
        self.term = term
        self.layers = self.gather_layers = term.layers
        self.sums: Feats = {}
        self.counts = {n: 0 for n in term.layers}
        self.dgram: Feats = {}

    def gather(self, view: TileView) -> None:
        for n in self.layers:
            f = view.core(n)
            s = gram_sum(f)
            self.sums[n] = self.sums[n] + s if n in self.sums else s
            self.counts[n] += f.shape[2] * f.shape[3]

    def settle(self) -> torch.Tensor:
        value = torch.zeros(())
        for n, lw in zip(self.layers, self.term.scaled_weights()):
            g = self.sums[n] / (self.sums[n].shape[-1] * self.counts[n])
            diff = g - self.term.target[n]
            w = self.term.weight * lw
            value = value + w * diff.pow(2).mean()
            self.dgram[n] = (2 * w / diff.numel()) * diff  # dL/dG of w * mean((G - T)^2)
        return value

    def surrogate(self, view: TileView) -> Tuple[torch.Tensor, torch.Tensor]:
        s = torch.zeros(())
        for n in self.layers:
            f = view.core(n)
            s = s + (self.dgram[n] * gram_sum(f)).sum() / (f.shape[1] * self.counts[n])
        return s, torch.zeros(())


@dataclass
class Region:
    """One style's share of the canvas (guided Gram matrices, Gatys et al. 2017, Sec. 3)."""

    weight: float  # blend weight x number of styles x the mask's area fraction
    grams: Feats  # the whole style image's Gram matrices
    masks: Feats = field(default_factory=dict)  # the region's mask at each style layer's resolution
    scales: Dict[str, float] = field(default_factory=dict)  # k_l of its own Gram matrices (style_norm)


class GuidedStyleTerm(GramStyleTerm):
    """Each style paints its masked region: sum_k r_k sum_l w_l mean((G_l(x; m_k) - G_l(a_k))^2)."""

    option = "--mask"

    def __init__(self, weight: float, layers: Sequence[str], layer_weights: Optional[Sequence[float]],
                 styles: Sequence[torch.Tensor], blend: Sequence[float], masks: Sequence[torch.Tensor],
                 norm: str = "none", faces: str = "keep") -> None:
        super().__init__(weight, layers, layer_weights, styles, blend, norm, faces)
        self.masks = list(masks)
        self.regions: List[Region] = []

    @classmethod
    def build(cls, cfg: Any, src: Sources) -> Optional[Term]:
        if not src.styles or src.masks is None or cfg.style_weight_effective == 0:
            return None
        return cls(cfg.style_weight_effective, cfg.style_layers, cfg.style_layer_weights, src.styles, src.blend,
                   src.masks, cfg.style_norm, cfg.style_faces)

    def prepare(self, net: Any, tile: Optional[TileSpec] = None, cache: Optional[TargetCache] = None) -> None:
        n = len(self.styles)
        self.regions = []
        for style, b, mask in zip(self.styles, self.blend, self.masks):
            # Weighted by area so that a region's pixels get the push an unmasked run would give them.
            area = float(mask.float().mean())
            grams = style_grams(net, style, self.layers, tile, cache, self.faces)
            self.regions.append(Region(b * n * area, grams, layer_masks(mask.float(), self.layers),
                                       style_layer_scales(grams, self.layers, self.norm)))

    def loss(self, feats: Feats, x: torch.Tensor) -> torch.Tensor:
        s = sum(
            r.weight * sum(w * r.scales[n] * style_loss(gram(feats[n], r.masks[n]), r.grams[n])
                           for n, w in zip(self.layers, self.layer_weights))
            for r in self.regions
        )
        return s * self.weight

    def tiled(self) -> TiledTerm:
        return Term.tiled(self)  # masked Grams over tiles would need per-region sums: refused


class TVTerm(Term):
    """tv_weight * total variation of the image (jcjohnson's TVLoss); across the seams too on a torus."""

    name = "tv"

    def __init__(self, weight: float, wrap: bool = False) -> None:
        super().__init__(weight)
        self.wrap = wrap

    @classmethod
    def build(cls, cfg: Any, src: Sources) -> Optional[Term]:
        return cls(cfg.tv_weight, src.wrap) if cfg.tv_weight != 0 else None

    def loss(self, feats: Feats, x: torch.Tensor) -> torch.Tensor:
        v = tv_loss(x) * self.weight
        return v + wrap_tv_loss(x) * self.weight if self.wrap else v

    def tiled(self) -> TiledTerm:
        return TiledPixels(self)


class TiledPixels(TiledTerm):
    """A pixel term (TV, video's temporal term) needs no network: tiled or not, it is computed on the whole image."""

    def __init__(self, term: Term) -> None:
        self.term = term

    def whole(self, x: torch.Tensor) -> torch.Tensor:
        return self.term.loss({}, x)


# The registry: build_terms() asks each class, in this order, for its term.
TERMS: Dict[str, type] = {
    "content": ContentTerm,
    "style": GramStyleTerm,
    "guided_style": GuidedStyleTerm,
    "tv": TVTerm,
}


def build_terms(cfg: Any, src: Sources, registry: Optional[Dict[str, type]] = None) -> List[Term]:
    """Every registered term that applies to `cfg` and `src` and weighs more than 0."""
    built = (cls.build(cfg, src) for cls in (registry or TERMS).values())
    return [t for t in built if t is not None]


class Objective:
    """The sum of `terms`, evaluated with one forward pass of `net` over the union of their layers.

    `net` is anything with `features(x, layers) -> {layer: tensor}` and a hashable `key`
    naming the network (engine.Painter).
    """

    def __init__(self, terms: Iterable[Term], net: Any) -> None:
        self.terms = list(terms)
        self.net = net
        names = [t.name for t in self.terms]
        if len(set(names)) != len(names):
            raise ValueError(f"terms must have distinct names, got {names}")
        self.layers = in_network_order(*(t.layers for t in self.terms))
        self.deepest = self.layers[-1] if self.layers else None

    def prepare(self, tile: Optional[TileSpec] = None, cache: Optional[TargetCache] = None) -> "Objective":
        for t in self.terms:
            t.prepare(self.net, tile, cache)
        return self

    def check_tileable(self) -> None:
        """Raise TilingError naming the first term that cannot be computed tile by tile."""
        for t in self.terms:
            t.tiled()

    def evaluate(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Each term's weighted value (0-d fp32 tensors with gradients) on the batch `x`."""
        feats = self.net.features(x, self.layers) if self.layers else {}
        return {t.name: t(feats, x) for t in self.terms}

    def loss_and_terms(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """(total loss, {term name: detached 0-d tensor}): no value read back from the device (the loop reads them once)."""
        values = self.evaluate(x)
        total = sum(values.values()) if values else x.sum() * 0.0
        return total, {k: v.detach() for k, v in values.items()}

    def __call__(self, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, float]]:
        """(total loss, {term name: value}) on the batch `x` (the network's input, RGB 0-255)."""
        total, values = self.loss_and_terms(x)
        return total, dict(zip(values, torch.stack(list(values.values())).tolist() if values else []))
