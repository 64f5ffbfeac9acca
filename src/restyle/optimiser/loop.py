"""The one optimisation loop: pixels (or any tensor) pushed down an objective, scale by scale.

    x = optimize(x0, objective, 100, OptimizerSettings("lbfgs"))           # one scale
    x = paint(steps, objective_at, start, resample, progress)             # a pyramid

`optimize` takes a starting image *tensor*, so a video's previous frame or a
feed-forward network's output can be the start. It knows nothing of files,
configs or front ends: it calls the objective, steps the optimiser, checks
for cancellation and reports each evaluation through `on_eval`. Stylize,
texture and explain all paint through `paint`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..errors import Cancelled, RestyleError
from ..events import Callback, Done, Iterate, Snapshot, StageStart
from .tiling import Tile, TileSpec, grid_align, random_offset, tile_grid, tiled_loss_and_grad

# Largest pixel change (0-255 scale) of L-BFGS's first step. torch's default first step
# has an L1 norm of lr (1e-5 per pixel at 512 px): the gradient difference it yields is
# rounding noise, the first curvature estimate is garbage and iteration 3 jumped to a loss
# of ~1e26 before recovering, ~10 iterations wasted. A step of a few grey levels gives a
# usable curvature pair at once. 0 restores torch's behaviour.
FIRST_STEP = 4.0

OnEval = Callable[[int, torch.Tensor, Dict[str, float], torch.Tensor], None]


@dataclass(frozen=True)
class OptimizerSettings:
    """How one scale is optimised."""

    name: str = "lbfgs"  # "lbfgs" or "adam"
    lr: float = 1.0
    history: int = 100  # L-BFGS pairs kept (the memory planner may shorten it)
    # None: fixed steps, each iteration exactly one evaluation (jcjohnson/neural-style);
    # "strong_wolfe": a line search (texture synthesis from noise needs it).
    line_search: Optional[str] = None
    first_step: float = FIRST_STEP  # see FIRST_STEP; used without a line search only


def is_cancelled(cancel: Any) -> bool:
    """`cancel` is None, an object with is_set() (threading.Event) or a callable returning a bool."""
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


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


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def optimize(
    x: torch.Tensor,
    objective: Callable[[torch.Tensor], Tuple[torch.Tensor, Dict[str, float]]],
    iterations: int,
    settings: OptimizerSettings = OptimizerSettings(),
    *,
    precision: str = "fp32",
    network_input: Callable[[torch.Tensor], torch.Tensor] = _identity,
    tiles: Optional[Callable[[], Sequence[Tile]]] = None,
    on_eval: Optional[OnEval] = None,
    cancel: Any = None,
) -> torch.Tensor:
    """Optimise `x` for `iterations` evaluations of `objective(network_input(x))`; returns it, detached.

    `tiles` (a function giving a fresh grid per evaluation) computes each evaluation tile by
    tile (tiling.py); `precision` "fp16" backpropagates through a LossScaler; `on_eval(i,
    loss, terms, x)` is called after each evaluation; `cancel` (see is_cancelled) stops the
    loop with Cancelled at the next evaluation.
    """
    x = x.detach().requires_grad_(True)
    scaler = LossScaler()
    i = 0

    def closure() -> torch.Tensor:
        nonlocal i
        if is_cancelled(cancel):
            raise Cancelled("cancelled")
        opt.zero_grad(set_to_none=True)
        if tiles is not None:
            # Tiles see the network's input; the chain rule takes the gradient back to x
            # (which is one luminance channel with --preserve-colors luminance).
            x_net = network_input(x)
            loss, terms, g_net = tiled_loss_and_grad(objective, x_net, tiles())
            x.grad = g_net if x_net is x else torch.autograd.grad(x_net, x, g_net)[0]
        else:
            loss, terms = objective(network_input(x))
            if precision == "fp16":
                x.grad = scaler.backward(loss, x, lambda: objective(network_input(x))[0])
            else:
                loss.backward()
            x.grad = x.grad.contiguous()  # NHWC in the network, but L-BFGS views it flat
        if not torch.isfinite(loss):
            raise RestyleError(
                f"the loss became {float(loss)} at iteration {i + 1} (precision {precision}); "
                "try --precision fp32 or a smaller --lr"
            )
        i += 1
        if on_eval is not None:
            on_eval(i, loss, terms, x)
        return loss

    if settings.name == "lbfgs":
        # One step() runs the whole scale; max_eval caps the evaluations, so `iterations`
        # counts them (without a line search each iteration is exactly one evaluation), and
        # tolerances of -1 never stop it early (jcjohnson/neural-style's tolX = tolFun = -1).
        opt = torch.optim.LBFGS(
            [x], lr=settings.lr, max_iter=iterations, max_eval=iterations, tolerance_grad=-1,
            tolerance_change=-1, history_size=settings.history, line_search_fn=settings.line_search,
        )
        if settings.first_step and settings.line_search is None and iterations > 1:
            lbfgs_with_first_step(opt, closure, iterations, settings.lr, settings.first_step)
        else:
            opt.step(closure)
    else:
        opt = torch.optim.Adam([x], lr=settings.lr)
        for _ in range(iterations):
            opt.step(closure)
            with torch.no_grad():
                x.clamp_(0, 255)
    return x.detach()


# --- the pyramid --------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One scale as it will be painted: size (w, h), iterations, optimiser, tiling."""

    size: Tuple[int, int]
    iterations: int
    optimizer: OptimizerSettings
    tile: Optional[TileSpec] = None


class Progress:
    """Counts evaluations over the pyramid and turns them into events and timings."""

    def __init__(self, emit: Optional[Callback], steps: Sequence[Step], snapshot_every: int = 0,
                 image: Optional[Callable[[torch.Tensor], Any]] = None, t_start: Optional[float] = None) -> None:
        self.emit = emit or (lambda event: None)
        self.steps = list(steps)
        self.total = sum(s.iterations for s in self.steps)
        self.snapshot_every = snapshot_every
        self.image = image
        self.t_start = time.perf_counter() if t_start is None else t_start
        self.step = 0
        self.terms: Dict[str, float] = {}
        self.timings: Dict[str, float] = {"setup": time.perf_counter() - self.t_start}

    def stage(self, k: int) -> OnEval:
        """Announce scale `k` and return the loop's on_eval for it."""
        st = self.steps[k]
        (w, h), n = st.size, len(self.steps)
        self.emit(StageStart(k, n, w, h, st.iterations))

        def on_eval(i: int, loss: torch.Tensor, terms: Dict[str, float], x: torch.Tensor) -> None:
            self.step += 1
            self.terms = dict(terms)
            self.emit(Iterate(k, n, w, h, i, st.iterations, self.step, self.total, loss.item(), dict(terms),
                              time.perf_counter() - self.t_start))
            if self.snapshot_every and self.step % self.snapshot_every == 0 and self.image is not None:
                self.emit(Snapshot(self.step, self.total, self.image(x)))

        return on_eval

    def stage_done(self, k: int, t_stage: float) -> None:
        w, h = self.steps[k].size
        self.timings[f"scale{k}_{w}x{h}"] = time.perf_counter() - t_stage

    def done(self) -> float:
        elapsed = time.perf_counter() - self.t_start
        self.timings["total"] = elapsed
        self.emit(Done(elapsed, dict(self.terms), dict(self.timings)))
        return elapsed


def tile_supplier(step: Step, deepest: Optional[str], seed: int) -> Optional[Callable[[], List[Tile]]]:
    """A fresh, randomly shifted grid at every evaluation: tile-edge effects never repeat in place."""
    if step.tile is None:
        return None
    (w, h), spec = step.size, step.tile
    rng = torch.Generator().manual_seed(seed)
    align = grid_align(deepest) if deepest else 1
    return lambda: tile_grid(h, w, spec.core, spec.margin, random_offset(rng, spec.core, align))


def paint(
    steps: Sequence[Step],
    objective_at: Callable[[int, Step], Any],
    start: Callable[[Step], torch.Tensor],
    resample: Callable[[torch.Tensor, Step], torch.Tensor],
    progress: Progress,
    *,
    precision: str = "fp32",
    network_input: Callable[[torch.Tensor], torch.Tensor] = _identity,
    cancel: Any = None,
    seed: int = 0,
) -> torch.Tensor:
    """Coarse to fine: at each step build the objective, start (or resample the previous scale), optimise."""
    x: Optional[torch.Tensor] = None
    for k, st in enumerate(steps):
        t_stage = time.perf_counter()
        objective = objective_at(k, st)
        x = start(st) if x is None else resample(x, st)
        x = optimize(
            x, objective, st.iterations, st.optimizer, precision=precision, network_input=network_input,
            tiles=tile_supplier(st, objective.deepest, seed + k) if st.tile else None,
            on_eval=progress.stage(k), cancel=cancel,
        )
        progress.stage_done(k, t_stage)
    assert x is not None
    return x
