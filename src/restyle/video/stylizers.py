"""How one frame is painted, in each engine, given what the previous frame left.

- NetworkFrames: a feed-forward network's output, blended on reliable pixels with the
  previous result warped by the flow (temporal_blend).
- OptimiserFrames: Gatys et al.'s optimisation per frame; Ruder et al. (2016): each frame
  after the first starts from the previous result warped by the flow, with the temporal
  term holding its reliable pixels there, and needs far fewer iterations.

temporal_weight 0 paints every frame on its own (per-frame stylization).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

import torch

from ..config import StylizeConfig
from ..errors import InputError
from ..images import PathLike, load_image, resize, to_pil
from ..images import to_tensor as pil_to_tensor
from .background import cpu_cores
from .pipeline import Previous
from .temporal import TemporalTerm, temporal_blend

if TYPE_CHECKING:
    from ..optimiser.loop import Step
    from ..optimiser.objective import Term

# Defaults of --temporal-weight, one per engine; measured with benchmarks/video.py on the
# pan clip (see README): the smallest weights that cut the warping error >= 5x.
NETWORK_TEMPORAL_WEIGHT = 4.0
OPTIMISER_TEMPORAL_WEIGHT = 30.0
# Later frames start from the warped previous result and need only touch-ups (Ruder et
# al. used half as many; a third or less is the bar we hold ourselves to).
LATER_FRACTION = 4


def file_digest(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


class NetworkFrames:
    """A feed-forward network's frames.

    `threads`: torch's intra-op threads while the clip runs (default: half the cores).
    The other cores decode, compute the flow and encode the neighbouring frames at the
    same time (restyle.video.background); on a 2-core CPU one thread each is ~4x faster
    than letting torch and OpenCV both start a thread per core.
    """

    def __init__(self, stylize_tensor: Callable[[torch.Tensor], torch.Tensor], temporal_weight: float = NETWORK_TEMPORAL_WEIGHT,
                 *, name: str = "network", threads: Optional[int] = None) -> None:
        if not (temporal_weight >= 0):
            raise InputError(f"temporal-weight {temporal_weight} must be >= 0")
        if threads is not None and threads < 1:
            raise InputError(f"threads {threads} must be >= 1")
        self.stylize_tensor = stylize_tensor
        self.temporal_weight = float(temporal_weight)
        self.name = name
        self.threads = threads if threads is not None else max(1, cpu_cores() // 2)

    def key(self) -> Dict[str, Any]:
        return {"engine": "network", "model": self.name, "temporal_weight": self.temporal_weight}

    def check_size(self, width: int, height: int) -> None:
        """Refuse frames the network cannot paint here (StyleModel.check_size), before the first frame."""
        model = getattr(self.stylize_tensor, "__self__", None)  # a StyleModel's bound stylize_tensor
        if hasattr(model, "check_size"):
            model.check_size(width, height)

    def __call__(self, frame: torch.Tensor, prev: Optional[Previous]) -> torch.Tensor:
        return self.blend(self.raw(frame), prev)

    @torch.no_grad()
    def raw(self, frame: torch.Tensor) -> torch.Tensor:
        """The network's picture of the frame alone: the costly part, the same for any previous frame."""
        return self.stylize_tensor(frame).float().clamp(0, 255)

    @torch.no_grad()
    def blend(self, out: torch.Tensor, prev: Optional[Previous]) -> torch.Tensor:
        """The frame's result: `out` held to the previous result on reliable pixels (cheap, done in order)."""
        if prev is not None:
            out = temporal_blend(out, prev.warped, prev.mask, self.temporal_weight)
        return out


class OptimiserFrames:
    """One run of the engine's stage per frame, at the clip's size (one scale: no pyramid, video frames are
    small). The memory planner picks the optimiser, the L-BFGS history and tiling for that size, as for a
    picture: a frame too large for the memory is painted tile by tile (the temporal term, a pixel term, whole)."""

    def __init__(self, styles: Sequence[PathLike], cfg: StylizeConfig, *, temporal_weight: float = OPTIMISER_TEMPORAL_WEIGHT,
                 later_iterations: Optional[int] = None, weights: Optional[PathLike] = None) -> None:
        from ..optimiser.engine import normalised_blend, painter_for

        if not (temporal_weight >= 0):
            raise InputError(f"temporal-weight {temporal_weight} must be >= 0")
        for name, value in (("mask", cfg.mask), ("preserve_colors", cfg.preserve_colors != "none")):
            if value:
                raise InputError(f"{name} is not available for video yet")
        self.later = later_iterations if later_iterations is not None else max(1, cfg.iterations // LATER_FRACTION)
        if not 1 <= self.later:
            raise InputError(f"frame-iterations {self.later} must be >= 1")
        self.cfg = cfg
        self.temporal_weight = float(temporal_weight)
        self.style_paths = [Path(s) for s in styles]
        self.styles = [load_image(s, max_pixels=cfg.max_input_pixels) for s in styles]
        self.blend = normalised_blend(cfg, len(self.styles))
        self.painter, self.vgg = painter_for(cfg, weights)
        self.weights = weights
        self.cancel: Any = None  # a threading.Event or callable; the driver's cancel stops a frame midway
        self.iterations: List[int] = []  # per frame, for the report and the benchmark

    def key(self) -> Dict[str, Any]:
        return {"engine": "optimiser", "styles": [file_digest(p) for p in self.style_paths],
                "config": self.cfg.to_dict(), "temporal_weight": self.temporal_weight,
                "later_iterations": self.later, "network": [str(k) for k in self.painter.key],
                "threads": torch.get_num_threads()}  # L-BFGS on the CPU is bit-exact for one thread count

    def __call__(self, frame: torch.Tensor, prev: Optional[Previous]) -> torch.Tensor:
        """The frame painted by the engine's own stage (engine.paint_pyramid with one scale): the memory
        planner picks the optimiser, its L-BFGS history and tiling for the frame's size, as for a picture."""
        from ..optimiser.engine import initial_image, paint_pyramid
        from ..optimiser.objective import Sources, build_terms
        from ..optimiser.schedule import Stage

        cfg, painter = self.cfg, self.painter
        device = painter.device
        h, w = frame.shape[2:]
        style_long = max(1, round(max(w, h) * cfg.style_scale))
        iterations = cfg.iterations if prev is None else self.later

        def terms_at(k: int, stage: Stage, step: Step) -> List[Term]:
            styles = [pil_to_tensor(resize(s, style_long), device) for s in self.styles]
            terms = build_terms(cfg, Sources(frame.to(device), styles, self.blend))
            if prev is not None:  # the temporal term holds the reliable pixels to the warped previous result
                terms.append(TemporalTerm(self.temporal_weight, prev.warped.to(device), prev.mask.to(device)))
            return terms  # the style Gram matrices come from the painter's cache after the first frame

        def start(step: Step) -> torch.Tensor:
            if prev is not None:
                return prev.warped.to(device)
            return initial_image(cfg.init, to_pil(frame), (w, h), cfg.seed, device,
                                 palette=[resize(s, style_long) for s in self.styles])

        done = paint_pyramid(cfg, painter, [Stage(max(w, h), iterations)], [(w, h)], terms_at, start,
                             style_layers=cfg.style_layers, content_layers=cfg.content_layers, weights=self.vgg,
                             cancel=self.cancel)
        self.iterations.append(iterations)
        return done.x.clamp(0, 255).cpu()
