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

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..device import cuda_settings, synchronize
from ..errors import Cancelled, RestyleError
from ..events import Callback, Done, Iterate, Snapshot, StageStart
from .tiling import Tile, TileSpec, grid_align, random_offset, tile_grid, tiled_loss_and_grad

# Largest pixel change (0-255 scale) of L-BFGS's first step. torch's default first step
# has an L1 norm of lr (1e-5 per pixel at 512 px): the gradient difference it yields is
# rounding noise, the first curvature estimate is garbage and iteration 3 jumped to a loss
# of ~1e26 before recovering, ~10 iterations wasted. A step of a few grey levels gives a
# usable curvature pair at once. 0 restores torch's behaviour.
FIRST_STEP = 4.0

OnEval = Callable[[int, float, Dict[str, float], torch.Tensor], None]  # (i, loss, terms, x)


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


class LBFGS:
    """L-BFGS on one tensor with a fixed step (no line search) whose arithmetic never waits for the device.

    The iterates are torch.optim.LBFGS's with tolerance_grad = tolerance_change = -1 and
    line_search_fn None (Nocedal & Wright, Algorithm 7.4, the two-loop recursion), with
    our first step (FIRST_STEP). torch's version reads its scalars back to Python:
    `add_(..., alpha=<0-d tensor>)` twice per history pair, the curvature test, the
    first step's size and the tolerance checks, ~2 * history + 11 host syncs per
    iteration, each of which drains a GPU's queue. Here every scalar stays a 0-d tensor
    on the device (`addcmul_` takes it as a factor) and the one value the algorithm must
    see on the host, the curvature y.s of the newest pair, travels with the evaluation's
    loss and terms in a single read per evaluation (`report`).

    Where torch would differ: its checks `gtd > 1` (not a descent direction; impossible
    with the positive-curvature pairs kept) and the tolerances at -1 never fire and are
    not made; a first gradient of L1 norm <= 1 or all zeros takes torch's first step
    directly rather than a second evaluation.
    """

    CURVATURE_MIN = 1e-10  # pairs with y.s at or below it are skipped, as torch does

    def __init__(self, x: torch.Tensor, lr: float = 1.0, history: int = 100, first_step: float = FIRST_STEP) -> None:
        self.x, self.lr, self.history, self.first_step = x, lr, history, first_step
        self.dirs: List[torch.Tensor] = []  # y_i = g_{i+1} - g_i
        self.steps: List[torch.Tensor] = []  # s_i = t_i d_i
        self.ro: List[torch.Tensor] = []  # 1 / (y_i . s_i)
        self.h_diag: Any = 1.0  # the initial inverse Hessian's scale, y.s / y.y of the newest pair

    def first_t(self, g: torch.Tensor) -> torch.Tensor:
        """The first step's size: its largest pixel change is first_step (0: torch's lr * min(1, 1 / |g|_1))."""
        l1 = g.abs().sum()
        torch_t = torch.clamp(1.0 / l1, max=1.0) * self.lr
        if not self.first_step:
            return torch_t
        peak = g.abs().max()
        # torch's step is lr_0 g / |g|_1 for |g|_1 > 1: lr_0 = first_step |g|_1 / peak moves the largest entry by first_step.
        return torch.where((peak > 0) & (l1 > 1), self.first_step / peak, torch_t)

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        """-H g by the two-loop recursion over the pairs kept; no value leaves the device."""
        m = len(self.dirs)
        al: List[Any] = [None] * m
        q = g.neg()
        for i in range(m - 1, -1, -1):
            al[i] = self.steps[i].dot(q) * self.ro[i]
            q.addcmul_(self.dirs[i], al[i], value=-1)
        r = q.mul_(self.h_diag)
        for i in range(m):
            be_i = self.dirs[i].dot(r) * self.ro[i]
            r.addcmul_(self.steps[i], al[i] - be_i)
        return r

    def remember(self, y: torch.Tensor, s: torch.Tensor, ys: torch.Tensor) -> None:
        if len(self.dirs) == self.history:
            self.dirs.pop(0), self.steps.pop(0), self.ro.pop(0)
        self.dirs.append(y)
        self.steps.append(s)
        self.ro.append(1.0 / ys)
        self.h_diag = ys / y.dot(y)

    @torch.no_grad()
    def run(self, evaluate: Callable[[], torch.Tensor], iterations: int, report: Callable[[List[float]], None]) -> None:
        """`iterations` evaluations; the last one's point is where x is left (as torch leaves it).

        evaluate() sets x.grad and returns a 1-D tensor of values (the loss first); report()
        gets them on the host, once per evaluation, and may raise to stop.
        """
        x = self.x
        d: Optional[torch.Tensor] = None
        t: Any = None
        prev_g: Optional[torch.Tensor] = None
        for k in range(iterations):
            with torch.enable_grad():
                values = evaluate()
            g = x.grad.reshape(-1)
            pair = None
            if k > 0 and k < iterations - 1:  # the newest pair, unless no step follows this evaluation
                assert prev_g is not None and d is not None
                y, s = g - prev_g, d * t
                pair = (y, s, y.dot(s))
                values = torch.cat([values, pair[2].reshape(1).to(values.dtype)])
            host = values.tolist()  # the one host sync of the evaluation
            report(host if pair is None else host[:-1])
            if iterations == 1:  # torch steps once after its only evaluation
                x.add_((-g * torch.clamp(1.0 / g.abs().sum(), max=1.0) * self.lr).view_as(x))
                return
            if k == iterations - 1:
                return
            if k == 0:
                d, t = g.neg(), self.first_t(g)
            else:
                if pair is not None and host[-1] > self.CURVATURE_MIN:
                    self.remember(*pair)
                d, t = self.direction(g), self.lr
            if prev_g is None:
                prev_g = g.clone()
            else:
                prev_g.copy_(g)
            x.add_((d * t).view_as(x))


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

    def gradient(self, attempt: Callable[[float], Tuple[Any, torch.Tensor]]) -> Tuple[Any, torch.Tensor]:
        """attempt(scale) -> (anything, the gradient of scale * loss divided by scale, fp32); retried until finite.

        The untiled loop backpropagates one scaled loss; the tiled one each tile's scaled
        surrogate (tiling.tiled_loss_and_grad's loss_scale). One host sync: the overflow test.
        """
        while True:
            result, grad = attempt(self.scale)
            if bool(torch.isfinite(grad).all()):
                self.clean += 1
                if self.clean >= self.GROW_AFTER:
                    self.scale, self.clean = min(self.scale * 2, 1.0), 0
                return result, grad
            if self.scale <= self.MIN_SCALE:
                raise RestyleError("the fp16 gradient overflows at every loss scale; use --precision bf16 or fp32")
            self.scale, self.clean = self.scale / 2.0**8, 0

    def backward(self, loss: torch.Tensor, x: torch.Tensor, recompute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The fp32 gradient of `loss` with respect to `x`; `recompute()` gives the loss again after an overflow."""
        losses = [loss]

        def attempt(scale: float) -> Tuple[None, torch.Tensor]:
            x.grad = None
            (losses.pop() if losses else recompute()).mul(scale).backward()
            return None, x.grad.float() / scale

        return self.gradient(attempt)[1]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _terms_of(objective: Any, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """(loss, {term: 0-d tensor or float}): objective.Objective's tensors without a host read, or any callable's."""
    f = getattr(objective, "loss_and_terms", None)
    return f(x) if f is not None else objective(x)


def _values(loss: torch.Tensor, terms: Dict[str, Any]) -> torch.Tensor:
    """The loss and every term that is still a tensor, as one fp32 vector on the loss's device (one read later)."""
    parts = [loss.detach().float().reshape(())]
    parts += [v.detach().float().reshape(()).to(loss.device) for v in terms.values() if isinstance(v, torch.Tensor)]
    return torch.stack(parts)


def optimize(
    x: torch.Tensor,
    objective: Callable[[torch.Tensor], Tuple[torch.Tensor, Dict[str, Any]]],
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
    tile (tiling.py); `precision` "fp16" backpropagates through a LossScaler, tiled or not;
    `on_eval(i, loss, terms, x)` (floats) is called after each evaluation; `cancel` (see
    is_cancelled) stops the loop with Cancelled at the next evaluation.

    Host syncs: one read per evaluation (the loss and terms, with L-BFGS's curvature), plus
    fp16's overflow test; nothing else waits for the device (tests/test_gpu.py counts them).
    """
    x = x.detach().requires_grad_(True)
    scaler = LossScaler()
    i = 0
    names: List[str] = []
    floats: Dict[str, float] = {}

    def evaluate() -> torch.Tensor:
        """Loss and gradient at x (into x.grad); returns the values to read (loss, then the tensor terms)."""
        if is_cancelled(cancel):
            raise Cancelled("cancelled")
        x.grad = None
        if tiles is not None:
            loss, terms, grad = _tiled_gradient(objective, x, network_input, tiles, precision, scaler)
        else:
            loss, terms = _terms_of(objective, network_input(x))
            if precision == "fp16":
                grad = scaler.backward(loss, x, lambda: _terms_of(objective, network_input(x))[0])
            else:
                loss.backward()
                grad = x.grad
        x.grad = grad.contiguous()  # NHWC in the network, but L-BFGS views it flat
        names[:] = [k for k, v in terms.items() if isinstance(v, torch.Tensor)]
        floats.clear()
        floats.update((k, float(v)) for k, v in terms.items() if not isinstance(v, torch.Tensor))
        return _values(loss, terms)

    def report(host: List[float]) -> None:
        nonlocal i
        loss = host[0]
        if not math.isfinite(loss):
            raise RestyleError(
                f"the loss became {loss} at iteration {i + 1} (precision {precision}); "
                "try --precision fp32 or a smaller --lr"
            )
        i += 1
        if on_eval is not None:
            terms = dict(floats, **dict(zip(names, host[1:])))
            on_eval(i, loss, terms, x)

    def closure() -> torch.Tensor:  # for torch's optimisers
        values = evaluate()
        report(values.tolist())
        return values[0]

    with cuda_settings(x.device, precision, benchmark=tiles is None):  # tiles move: their shapes change
        _run_optimizer(x, settings, iterations, evaluate, report, closure)
    return x.detach()


def _tiled_gradient(objective: Callable, x: torch.Tensor, network_input: Callable[[torch.Tensor], torch.Tensor],
                    tiles: Callable[[], Sequence[Tile]], precision: str,
                    scaler: LossScaler) -> Tuple[Any, Dict[str, Any], torch.Tensor]:
    """(loss, terms, gradient at x) computed tile by tile over a fresh grid from `tiles`, through `scaler` at fp16.

    Tiles see the network's input; the chain rule takes the gradient back to x
    (which is one luminance channel with --preserve-colors luminance).
    """
    x_net = network_input(x)
    grid = tiles()

    def attempt(scale: float) -> Tuple[Any, torch.Tensor]:
        loss, terms, g = tiled_loss_and_grad(objective, x_net.detach(), grid, loss_scale=scale)
        return (loss, terms), g

    if precision == "fp16":
        (loss, terms), g_net = scaler.gradient(attempt)
    else:
        (loss, terms), g_net = attempt(1.0)
    return loss, terms, g_net if x_net is x else torch.autograd.grad(x_net, x, g_net)[0]


def _run_optimizer(x: torch.Tensor, settings: OptimizerSettings, iterations: int, evaluate: Callable[[], torch.Tensor],
                   report: Callable[[List[float]], None], closure: Callable[[], torch.Tensor]) -> None:
    if settings.name == "lbfgs" and settings.line_search is None:
        # Fixed steps, each iteration exactly one evaluation (jcjohnson/neural-style), no early
        # stop (its tolX = tolFun = -1): our LBFGS, whose arithmetic never waits for the device.
        LBFGS(x, settings.lr, settings.history, settings.first_step).run(evaluate, iterations, report)
    elif settings.name == "lbfgs":
        # A line search (texture from noise) reads values on the host by nature: torch's.
        # max_eval caps the evaluations, so `iterations` counts them.
        opt = torch.optim.LBFGS(
            [x], lr=settings.lr, max_iter=iterations, max_eval=iterations, tolerance_grad=-1,
            tolerance_change=-1, history_size=settings.history, line_search_fn=settings.line_search,
        )
        opt.step(closure)
    else:
        opt = torch.optim.Adam([x], lr=settings.lr)
        for _ in range(iterations):
            opt.step(closure)
            with torch.no_grad():
                x.clamp_(0, 255)


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

        def on_eval(i: int, loss: float, terms: Dict[str, float], x: torch.Tensor) -> None:
            self.step += 1
            self.terms = dict(terms)
            self.emit(Iterate(k, n, w, h, i, st.iterations, self.step, self.total, float(loss), dict(terms),
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
        synchronize(x.device)  # the scale's time is its work's, not its queueing's
        progress.stage_done(k, t_stage)
    assert x is not None
    return x
