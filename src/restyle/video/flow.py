"""Optical flow, warping and the occlusion check that temporal consistency rests on.

Flow comes from OpenCV's DIS (Kroeger et al., ECCV 2016): classical, fast on a CPU,
no weights to download. Conventions: a flow `f` from frame a to frame b says where
each pixel p of a went, a(p) ~ b(p + f(p)); `warp(b, f)` samples b at p + f(p), so it
looks like a.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Tuple

import numpy as np

FLOW_PRESETS = ("ultrafast", "fast", "medium")


def _cv2():
    try:
        import cv2
    except ImportError as e:  # pragma: no cover - the video extra installs it
        from ..errors import InputError

        raise InputError(f"video needs its extra packages ({e.name} is missing): pip install 'restyle[video]'") from None
    return cv2


def gray(rgb: np.ndarray) -> np.ndarray:
    return _cv2().cvtColor(rgb, _cv2().COLOR_RGB2GRAY)


class FlowEstimator:
    """DIS flow, forward and backward, between consecutive frames."""

    def __init__(self, preset: str = "medium") -> None:
        cv2 = _cv2()
        self.dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}"))

    def flow(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(H, W, 2) float32 flow from grey frame a to grey frame b."""
        return self.dis.calc(a, b, None)

    def backward_and_mask(self, prev_gray: np.ndarray, cur_gray: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The flow from the current frame back to the previous one, and where it can be trusted."""
        bwd = self.flow(cur_gray, prev_gray)
        fwd = self.flow(prev_gray, cur_gray)
        return bwd, reliable(bwd, fwd)


@lru_cache(maxsize=4)
def _grid(h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (x, y), float32; cached (every frame of a clip has one size), read-only."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


def warp(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """`img` sampled at p + flow(p) (bilinear); float32 out.

    Beyond the edge the image is mirrored, not replicated: a strip entering the frame
    then starts from stylized texture instead of streaks of the edge's colours (it is
    marked unreliable, so the style loss alone repaints it).
    """
    cv2 = _cv2()
    h, w = flow.shape[:2]
    xs, ys = _grid(h, w)
    return cv2.remap(img.astype(np.float32, copy=False), xs + flow[..., 0], ys + flow[..., 1],
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def reliable(bwd: np.ndarray, fwd: np.ndarray) -> np.ndarray:
    """1 where the backward flow can be trusted, 0 at occlusions, motion boundaries and the frame's edge.

    Ruder, Dosovitskiy & Brox (GCPR 2016), Sec. 3.1, with w = bwd (current -> previous)
    and w^ = fwd (previous -> current) sampled where w points:
      disocclusion: |w~ + w|^2 > 0.01 (|w~|^2 + |w|^2) + 0.5, with w~(p) = w^(p + w(p));
      motion boundary: |grad u|^2 + |grad v|^2 > 0.01 |w|^2 + 0.002.
    Pixels whose source p + w(p) lies outside the previous frame are new: 0 as well.
    """
    h, w = bwd.shape[:2]
    back = warp(fwd, bwd)  # w~: the forward flow where each pixel came from
    s = back + bwd
    bwd2 = (bwd * bwd).sum(-1)
    occluded = (s * s).sum(-1) > 0.01 * ((back * back).sum(-1) + bwd2) + 0.5
    du_y, du_x = np.gradient(bwd[..., 0])
    dv_y, dv_x = np.gradient(bwd[..., 1])
    boundary = du_x * du_x + du_y * du_y + dv_x * dv_x + dv_y * dv_y > 0.01 * bwd2 + 0.002
    xs, ys = _grid(h, w)
    sx, sy = xs + bwd[..., 0], ys + bwd[..., 1]
    outside = (sx < 0) | (sx > w - 1) | (sy < 0) | (sy > h - 1)
    return (~(occluded | boundary | outside)).astype(np.float32)
