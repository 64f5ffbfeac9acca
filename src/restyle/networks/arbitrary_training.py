"""Train the any-painting network (models/arbitrary.py) on a corpus of paintings and photos.

The loss is the per-painting networks' (style_training.py), which is the optimiser's:
VGG-19 content at relu2_2, normalised Gram style at relu1_1 ... relu4_1 (each layer a
relative error, losses.style_layer_scales), TV. What changes is where the painting
comes from: each step draws `paintings_per_step` paintings and paints
`photos_per_painting` random photo crops in each.

Every painting's targets are computed once, before the first step, and kept (and
saved beside the checkpoint as OUT.styles.pt, so a resumed run skips it): for each
training painting, `crops_per_painting` views (the whole painting, then random crops
of 35-100 % of its area), each with its Gram targets at `style_size` and its
feature statistics at `encode_size` (what the network reads at run time). The
crops multiply the styles the predictor sees (Ghiasi et al. trained on 80k
paintings; we have a few hundred) and teach it that a detail of a painting is
a style of its own.

Held aside, never trained on: every `holdout_every`-th painting by sorted name,
and `holdout` photos (training.split_photos). They make the preview grid and
the benchmark (benchmarks/arbitrary.py).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from PIL import Image

from ..config.train import ArbitraryTrainConfig
from ..device import autocast, network, resolve_device, resolve_precision
from ..errors import InputError
from ..events import TrainEvent
from ..hashing import sha256sum
from ..images import load_image, resize, to_tensor
from ..models.arbitrary import ArbitraryConfig, ArbitraryNet, feature_stats
from ..models.layers import deepest_layer
from ..models.modelfile import build_network, model_payload, read_model_file, resolve_model, save_model_file
from ..models.weights import load_weights
from ..optimiser.engine import Painter
from ..optimiser.losses import STYLE_NORM_REF, content_loss, gram, style_loss, tv_loss
from .training import (
    Recipe, TrainState, check_output, checkpoint_path, data_fingerprint, fit, grid, list_photos, load_photos, seeded,
    split_photos, step_generator,
)

HISTORY_EVERY = 10
FAMILY = "arbitrary"


# ---- data ---------------------------------------------------------------------------------------


def split_paintings(paintings: Sequence[Path], every: int) -> Tuple[List[Path], List[Path]]:
    """(training, held aside): every `every`-th painting by sorted name (the 10th, 20th, ...) is held aside."""
    held = [p for i, p in enumerate(paintings) if i % every == every - 1]
    return [p for p in paintings if p not in held], held


def painting_views(img: Image.Image, n: int, g: torch.Generator) -> List[Image.Image]:
    """The whole painting, then n - 1 random crops of 35-100 % of its area (aspect within 0.75-1.33 of it)."""
    views = [img]
    for _ in range(n - 1):
        area = 0.35 + 0.65 * float(torch.rand((), generator=g))
        aspect = 0.75 ** (1 - 2 * float(torch.rand((), generator=g)))
        w = min(img.width, round(img.width * (area * aspect) ** 0.5))
        h = min(img.height, round(img.height * (area / aspect) ** 0.5))
        left = int(torch.randint(img.width - w + 1, (1,), generator=g))
        top = int(torch.randint(img.height - h + 1, (1,), generator=g))
        views.append(img.crop((left, top, left + w, top + h)))
    return views


@torch.no_grad()
def style_targets(painter: Painter, img: Image.Image, cfg: ArbitraryTrainConfig,
                  layers: Sequence[str]) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    """(Gram targets (C, C) at style_size, feature stats (D,) at encode_size) of one painting view."""
    big = painter.features(to_tensor(resize(img, cfg.style_size), painter.device), layers)
    small = painter.features(to_tensor(resize(img, cfg.encode_size), painter.device), layers)
    return {n: gram(big[n])[0].cpu() for n in layers}, feature_stats(small, layers)[0].cpu()


def random_crops(photos: Sequence[torch.Tensor], n: int, size: int, max_scale: float,
                 g: torch.Generator) -> torch.Tensor:
    """(n, 3, size, size) float 0-255: random photo, scale, crop and flip (style_training.sample_batch's draw)."""
    out = []
    for _ in range(n):
        img = photos[int(torch.randint(len(photos), (1,), generator=g))]
        h, w = img.shape[-2:]
        short = size * (1.0 + (max_scale - 1.0) * float(torch.rand((), generator=g)))
        s = max(short / min(h, w), size / min(h, w))
        nh, nw = max(size, round(h * s)), max(size, round(w * s))
        x = F.interpolate(img[None].float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top = int(torch.randint(nh - size + 1, (1,), generator=g))
        left = int(torch.randint(nw - size + 1, (1,), generator=g))
        x = x[..., top : top + size, left : left + size]
        if float(torch.rand((), generator=g)) < 0.5:
            x = x.flip(-1)
        out.append(x)
    return torch.cat(out).clamp(0, 255)


# ---- the recipe ---------------------------------------------------------------------------------


def gram_power(grams: Dict[str, torch.Tensor], layers: Sequence[str]) -> Dict[str, torch.Tensor]:
    """Each view's mean squared Gram entry, per layer: (V,) a layer."""
    return {n: grams[n].float().pow(2).mean(dim=(1, 2)) for n in layers}


def layer_floors(power: Dict[str, torch.Tensor], floor: float = 0.05) -> Dict[str, float]:
    """`floor` x the corpus median of each layer's gram_power: the least magnitude a view's scale assumes."""
    return {n: floor * float(p.median()) for n, p in power.items()}


def view_scales(grams: Dict[str, torch.Tensor], layers: Sequence[str], floor: float = 0.05,
                floors: Optional[Dict[str, float]] = None,
                power: Optional[Dict[str, torch.Tensor]] = None) -> List[Dict[str, float]]:
    """Each painting view's per-layer style scales (losses.style_layer_scales, "target"), the Gram
    magnitude floored at `floor` x the corpus median of that layer (or at `floors`, the training
    corpus's, for held-aside views); `power`: gram_power(grams), when already computed.

    A relative error has no ceiling: a nearly black crop's relu1_1 Gram is ~1000x below the
    median, and one such view in a batch blew the loss up 1000-fold and the network with it
    (a first run collapsed to grey at step 250).
    """
    power = gram_power(grams, layers) if power is None else power
    if floors is None:
        floors = layer_floors(power, floor)
    return [{n: STYLE_NORM_REF / max(float(power[n][v]), floors[n], 1e-12) for n in layers}
            for v in range(len(power[layers[0]]))]


def best_path(out: Path) -> Path:
    """Where the training of `out` keeps the network that measured best on the held-aside paintings."""
    return out.with_name(out.stem + ".best" + out.suffix)


class ClippedAdam(torch.optim.Adam):
    """Adam whose step is taken on a gradient clipped to `ratio` x the running mean of its norm.

    Paintings differ: a step with two unusual ones can bring a gradient many times the usual
    size. The running mean lives in the parameter group, so checkpoints carry it (exact resume).
    """

    def __init__(self, params: Any, lr: float, ratio: float = 3.0, decay: float = 0.98) -> None:
        super().__init__(params, lr=lr)
        for group in self.param_groups:
            group.update(clip_ratio=ratio, clip_decay=decay, clip_mean=0.0)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            norm = float(torch.nn.utils.clip_grad_norm_(params, float("inf")))
            mean, cap = group["clip_mean"], group["clip_ratio"] * group["clip_mean"]
            if mean > 0 and norm > cap:
                for p in params:
                    p.grad.mul_(cap / norm)
                norm = cap
            group["clip_mean"] = norm if mean == 0 else group["clip_decay"] * mean + (1 - group["clip_decay"]) * norm
        return super().step(closure)


class ArbitraryRecipe(Recipe):
    """ArbitraryNet on the per-painting loss, a few paintings per step."""

    history_every = HISTORY_EVERY

    def __init__(self, cfg: ArbitraryTrainConfig, net: ArbitraryNet, painter: Painter, styles: Dict[str, Any],
                 data: List[torch.Tensor], held_photos: List[torch.Tensor], held_paintings: List[Image.Image],
                 info: Dict[str, Any]) -> None:
        self.cfg, self.painter, self.device, self.precision = cfg, painter, painter.device, painter.precision
        self.net = net.to(self.device).train()
        if self.device.type == "cpu":
            self.net = self.net.to(memory_format=torch.channels_last)
        self.optimizer = ClippedAdam(self.net.parameters(), lr=cfg.lr)
        self.layers = tuple(ArbitraryConfig.style_layers)
        self.feature_layers = tuple(dict.fromkeys(self.layers + tuple(cfg.content_layers)))  # what loss() reads
        self.grams: Dict[str, torch.Tensor] = styles["grams"]  # layer -> (V, C, C)
        self.stats: torch.Tensor = styles["stats"]  # (V, D)
        power = gram_power(self.grams, self.layers)  # once: relu4_1's Grams of every view are ~0.8 GB
        self.floors = layer_floors(power)  # the training corpus's, for the held-aside paintings too
        self.scales = view_scales(self.grams, self.layers, floors=self.floors, power=power)
        self.data, self.held, self.held_paintings, self.info = data, held_photos, held_paintings, info
        self.photos, self.held_out = info["photos"], tuple(info["held_out"])
        self.output: Optional[Path] = None  # set by arbitrary_recipe: where OUT.best.pt goes
        self.held_loss: List[List[float]] = [list(r) for r in info.get("held_loss", [])]  # [step, content, style, tv]
        self._held_targets: Optional[Tuple[Dict[str, torch.Tensor], torch.Tensor, List[Dict[str, float]]]] = None

    def batch(self, step: int) -> Tuple[List[int], torch.Tensor]:
        g = step_generator(self.cfg.seed, step)
        views = torch.randperm(len(self.stats), generator=g)[: self.cfg.paintings_per_step].tolist()
        x = random_crops(self.data, len(views) * self.cfg.photos_per_painting, self.cfg.size, self.cfg.max_scale, g)
        x = x.to(self.device)
        return views, x.contiguous(memory_format=torch.channels_last) if self.device.type == "cpu" else x

    def shard(self, batch: Tuple[List[int], torch.Tensor], part: int,
              parts: int) -> Tuple[Tuple[List[int], torch.Tensor], float]:
        """Part `part` of `parts` of a step's batch (whole paintings, each with its photo crops) and its share.

        Every term of loss() is a mean over the paintings of the batch (content and TV over
        their crops, photos_per_painting each), so the batch's loss is the sum over the parts
        of share x the part's loss: data-parallel workers (batch/data_parallel.py) add up
        share x their gradients and take the step the whole batch would give.
        """
        views, x = batch
        if not 0 < parts <= len(views):
            raise InputError(f"{parts} workers for {len(views)} paintings a step: each worker needs at least one "
                             "(raise paintings_per_step or lower the workers)")
        lo, hi = len(views) * part // parts, len(views) * (part + 1) // parts
        k = self.cfg.photos_per_painting
        return (views[lo:hi], x[lo * k : hi * k]), (hi - lo) / len(views)

    def loss(self, batch: Tuple[List[int], torch.Tensor]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        views, x = batch
        cfg, k = self.cfg, self.cfg.photos_per_painting
        codes = self.net.encode(self.stats[views].to(self.device))
        with autocast(self.device, self.precision):
            y = torch.cat([self.net(xi, c) for xi, c in zip(x.split(k), codes.split(1))])
        feats = self.painter.features(y, self.feature_layers)
        with torch.no_grad():
            target = self.painter.features(x, cfg.content_layers)
        style = sum(self._style({n: feats[n][i * k : (i + 1) * k] for n in self.layers},
                                {n: self.grams[n][v] for n in self.layers}, self.scales[v])
                    for i, v in enumerate(views)) * cfg.style_weight / len(views)
        content, tv = self._content(feats, target), tv_loss(y) * cfg.tv_weight
        return content + style + tv, {"content": content, "style": style, "tv": tv}

    def _content(self, feats: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The content term, weighted."""
        return sum(content_loss(feats[n], target[n]) for n in self.cfg.content_layers) * self.cfg.content_weight

    def _style(self, feats: Dict[str, torch.Tensor], grams: Dict[str, torch.Tensor],
               scale: Dict[str, float]) -> torch.Tensor:
        """One painting's style term before style_weight: its pictures' Gram losses, scaled, layer-averaged."""
        return sum(scale[n] / len(self.layers) * style_loss(gram(feats[n]), grams[n].to(self.device))
                   for n in self.layers)

    def preview(self) -> Optional[Image.Image]:
        """Rows: one held-aside painting each (its thumbnail, then the held-aside photos painted in it)."""
        if not self.held or not self.held_paintings:
            return None
        from .style_training import square

        side = self.cfg.size
        photos = torch.cat([square(h, side) for h in self.held[:4]]).to(self.device)
        rows = [[torch.full((1, 3, side, side), 255.0)] + list(photos.cpu().split(1))]
        for painting in self.held_paintings[:4]:
            feats = self.painter.features(to_tensor(resize(painting, self.cfg.encode_size), self.device), self.layers)
            code = self.net.encode(feature_stats(feats, self.layers))
            with autocast(self.device, self.precision):
                out = self.net(photos, code).float().clamp(0, 255).cpu()
            thumb = to_tensor(resize(painting, side))
            rows.append([thumb] + list(out.split(1)))
        return grid(rows, gap=2)

    def held_targets(self) -> Tuple[Dict[str, torch.Tensor], torch.Tensor, List[Dict[str, float]]]:
        """The held-aside paintings' Gram targets, feature stats and style scales (whole paintings), made once."""
        if self._held_targets is None:
            targets = [style_targets(self.painter, p, self.cfg, self.layers) for p in self.held_paintings]
            grams = {n: torch.stack([t[0][n] for t in targets]) for n in self.layers}
            stats = torch.stack([t[1] for t in targets])
            self._held_targets = grams, stats, view_scales(grams, self.layers, floors=self.floors)
        return self._held_targets

    def validate(self, state: TrainState) -> None:
        """The loss on the held-aside paintings x photos, recorded (held_loss); the best network so far
        to OUT.best.pt. The training loss falls on the paintings it sees; this says when the network
        stops getting better on the ones it never sees (a run resumed to 6250 steps got worse there)."""
        if not self.held or not self.held_paintings:
            return
        cfg, (grams, stats, scales) = self.cfg, self.held_targets()
        from .style_training import square

        x = torch.cat([square(h, cfg.size) for h in self.held[:4]]).to(self.device)
        target = self.painter.features(x, cfg.content_layers)
        codes = self.net.encode(stats.to(self.device))
        totals = torch.zeros(3)
        for v in range(len(stats)):
            with autocast(self.device, self.precision):
                y = self.net(x, codes[v : v + 1]).float()
            feats = self.painter.features(y, self.feature_layers)
            style = self._style(feats, {n: grams[n][v] for n in self.layers}, scales[v]) * cfg.style_weight
            totals += torch.stack([self._content(feats, target).float().cpu(), style.float().cpu(),
                                   (tv_loss(y) * cfg.tv_weight).cpu()])
        row = [state.step, *(round(float(t) / len(stats), 2) for t in totals)]
        best = min((sum(r[1:]) for r in self.held_loss if r[0] < state.step), default=math.inf)
        self.held_loss = [r for r in self.held_loss if r[0] < state.step] + [row]
        if self.output is not None and sum(row[1:]) < best:
            self.save("model", best_path(self.output), state)

    def history_row(self, step: int, loss: float, terms: Dict[str, float]) -> Tuple[float, ...]:
        return (step, *(round(terms[k], 2) for k in ("content", "style", "tv")))

    def save(self, kind: str, path: Path, state: TrainState) -> Path:
        info = dict(self.info, steps_done=state.step, wall_s=round(state.wall_s, 1),
                    history=[list(h) for h in state.history], held_loss=[list(r) for r in self.held_loss])
        extra = {"optimizer": state.optimizer, "step": state.step} if kind == "checkpoint" else None
        payload = model_payload(self.net, family=FAMILY, training=info, style={"name": "any painting"}, kind=kind,
                                extra=extra)
        return save_model_file(payload, path)

    def sidecar(self, path: Path, state: TrainState, steps_per_s: float) -> Dict[str, Any]:
        side = {k: v for k, v in read_model_file(path).items() if k != "state_dict"}
        side.update(model_file=path.name, model_sha256=sha256sum(path), session_steps_per_s=round(steps_per_s, 4))
        return side


def styles_path(out: Path) -> Path:
    return out.with_name(out.stem + ".styles.pt")


def prepare_styles(painter: Painter, paintings: Sequence[Path], cfg: ArbitraryTrainConfig, cache: Path,
                   log: Callable[[str], None]) -> Dict[str, Any]:
    """Every view's Gram targets and stats, from `cache` when it was made from the same paintings and settings."""
    key = {"fingerprint": data_fingerprint(paintings),
           "settings": [cfg.style_size, cfg.encode_size, cfg.crops_per_painting, cfg.seed],
           "weights": getattr(painter, "key", None) and str(painter.key[0])}
    if cache.is_file():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        if saved.get("key") == key:
            return saved
    layers = ArbitraryConfig.style_layers
    grams: Dict[str, List[torch.Tensor]] = {n: [] for n in layers}
    stats, names = [], []
    g = torch.Generator().manual_seed(cfg.seed)
    for i, p in enumerate(paintings):
        for v, view in enumerate(painting_views(load_image(p), cfg.crops_per_painting, g)):
            gr, st = style_targets(painter, view, cfg, layers)
            for n in layers:
                grams[n].append(gr[n])
            stats.append(st)
            names.append(f"{p.name}#{v}")
        log(f"styles: {i + 1}/{len(paintings)} paintings")
    out = {"key": key, "grams": {n: torch.stack(v) for n, v in grams.items()}, "stats": torch.stack(stats),
           "names": names}
    torch.save(out, cache)
    return out


def style_channels(weights: Any) -> Tuple[int, ...]:
    """Channels of relu1_1 ... relu4_1 in these VGG weights (64, 128, 256, 512 for the real VGG-19)."""
    from ..models.vgg import weights_widths

    return tuple(weights_widths(weights)[: len(ArbitraryConfig.style_layers)])


@dataclass
class ArbitraryRun:
    """What a training run of the any-painting network starts from: the checked inputs and the style targets."""

    output: Path
    train_p: List[Path]
    held_p: List[Path]
    train_x: List[Path]
    held_x: List[Path]
    device: torch.device
    precision: str
    painter: Painter
    styles: Dict[str, Any]
    weights: Any


def prepare_run(paintings: Union[str, os.PathLike], photos: Sequence[Union[str, os.PathLike]],
                output: Union[str, os.PathLike], cfg: ArbitraryTrainConfig, *, device: Union[str, torch.device],
                weights: Optional[os.PathLike], log: Callable[[str], None]) -> ArbitraryRun:
    """Check the inputs, build VGG-19 and compute (or read from OUT.styles.pt) every painting view's targets."""
    output = check_output(output)
    all_paintings = list_photos(paintings)
    train_p, held_p = split_paintings(all_paintings, cfg.holdout_every)
    if len(train_p) < 2:
        raise InputError(f"paintings {paintings}: found {len(all_paintings)} pictures; need at least "
                         f"{cfg.holdout_every} so that some are held aside and two remain to train on")
    all_photos = [p for d in photos for p in list_photos(d)]
    train_x, held_x = split_photos(all_photos, cfg.holdout)
    if not train_x:
        raise InputError(f"photos {', '.join(map(str, photos))}: found {len(all_photos)}; need at least {cfg.holdout + 1}")
    device = resolve_device(str(device))
    precision = resolve_precision(cfg.precision, device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    w = load_weights(weights)
    deepest = deepest_layer(cfg.content_layers, ArbitraryConfig.style_layers)
    painter = Painter(network(w, deepest, "max", device), device, precision, key=(w.sha256, deepest))
    styles = prepare_styles(painter, train_p, cfg, styles_path(output), log)
    return ArbitraryRun(output, train_p, held_p, train_x, held_x, device, precision, painter, styles, w)


def checkpoint_state(payload: Dict[str, Any]) -> TrainState:
    """Where the run of a checkpoint's payload stands (its step, history, wall time, optimiser)."""
    t = payload["training"]
    return TrainState(int(payload["step"]), [tuple(h) for h in t.get("history", [])], float(t.get("wall_s", 0.0)),
                      payload["optimizer"])


def arbitrary_recipe(paintings: Union[str, os.PathLike], photos: Sequence[Union[str, os.PathLike]], run: ArbitraryRun,
                     cfg: ArbitraryTrainConfig, *,
                     resume: bool = False) -> Tuple[ArbitraryRecipe, Optional[TrainState]]:
    """The recipe of `run` (a fresh network from the seed, or OUT's checkpoint with `resume`) and where it stands."""
    styles, state = run.styles, None
    if resume:
        ckpt = checkpoint_path(run.output)
        if not ckpt.is_file():
            raise InputError(f"--resume: no checkpoint at {ckpt}")
        payload = read_model_file(ckpt, FAMILY)
        if payload.get("kind") != "checkpoint":
            raise InputError(f"--resume: {ckpt} is not a checkpoint")
        saved = payload["training"]["config"]
        differ = [k for k, v in cfg.to_dict().items()
                  if k not in ("steps", "preview_every", "checkpoint_every", "threads") and saved.get(k) != v]
        if differ:
            raise InputError(f"--resume: settings {', '.join(differ)} differ from checkpoint {ckpt}")
        if payload["training"].get("data_fingerprint") != styles["key"]["fingerprint"]:
            raise InputError(f"--resume: the paintings differ from those checkpoint {ckpt} was trained on")
        net = build_network(payload, ckpt).train()
        state = checkpoint_state(payload)
    else:
        with seeded(cfg.seed):
            net = ArbitraryNet(cfg.network_config(style_channels(run.weights)))
        if cfg.init_from:
            start = read_model_file(resolve_model(cfg.init_from), "style")
            try:
                net.body.load_state_dict(start["state_dict"], strict=True)
            except RuntimeError:
                raise InputError(f"init_from {cfg.init_from}: its network is not shaped like "
                                 f"widths {cfg.widths}, {cfg.res_blocks} residual blocks") from None
            net.reset_heads()
        net.set_stats_normalisation(styles["stats"])

    info = {
        "config": cfg.to_dict(),
        "size": cfg.size,
        "paintings_dir": str(Path(paintings)),
        "paintings": len(run.train_p),
        "held_out_paintings": [p.name for p in run.held_p],
        "data_fingerprint": styles["key"]["fingerprint"],
        "photos_dirs": [str(Path(d)) for d in photos],
        "photos": len(run.train_x),
        "held_out": [p.name for p in run.held_x],
        "photos_fingerprint": data_fingerprint(run.train_x),
        "precision": run.precision,
        "device": run.device.type,
    }
    if resume:  # the held-aside measures so far travel with the checkpoint
        info["held_loss"] = payload["training"].get("held_loss", [])
    recipe = ArbitraryRecipe(cfg, net, run.painter, styles, load_photos(run.train_x, long_side=640),
                             load_photos(run.held_x), [load_image(p) for p in run.held_p], info)
    recipe.output = run.output
    return recipe, state


def train_arbitrary(
    paintings: Union[str, os.PathLike],
    photos: Sequence[Union[str, os.PathLike]],
    output: Union[str, os.PathLike],
    config: ArbitraryTrainConfig = ArbitraryTrainConfig(),
    *,
    resume: bool = False,
    device: Union[str, torch.device] = "auto",
    weights: Optional[os.PathLike] = None,
    callback: Optional[Callable[[TrainEvent], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    log: Callable[[str], None] = lambda s: None,
) -> Path:
    """Train the any-painting network on the paintings in `paintings` and the photos in the folders `photos`.

    (batch/data_parallel.py trains the same recipe on Ray Train workers, each a share of every step.)
    """
    cfg = config
    run = prepare_run(paintings, photos, output, cfg, device=device, weights=weights, log=log)
    recipe, state = arbitrary_recipe(paintings, photos, run, cfg, resume=resume)
    fit(recipe, run.output, steps=cfg.steps, checkpoint_every=cfg.checkpoint_every, preview_every=cfg.preview_every,
        resume=state, callback=callback, should_stop=should_stop)
    return run.output
