"""A painting's faces, kept out of its deep layers' style statistics: paint the style, not the sitter.

The units of VGG-19's blocks 4 and 5 see 90-200 px of the painting and answer to object
parts: eyes, a nose, a mouth. The Gram matrices of a portrait's deep layers record that
those parts occur together, and the optimiser meets them the cheapest way it can: it paints
the sitter's face into the photo's sky (issue 25). So the painting's faces are found, and
the deep layers' Gram matrices are taken over the rest of the painting (guided Gram
matrices, as --mask uses: regions.layer_masks, losses.gram with a weight per position). Its brushwork, palette,
light and ground stay the target; the face does not. The shallow layers (blocks 1-3: colour,
strokes, the skin's texture) keep the whole painting.

The finder is dlib's HOG frontal face detector (the dlib-bin wheel carries its model:
nothing is downloaded), run at a permissive score threshold, because a painted face scores
lower than a photographed one. It finds frontal and three-quarter faces; a profile it misses
keeps its place in the statistics. The public pairs' paintings (Starry Night, The Scream,
Seated Nude, The Shipwreck) have none it finds, so they are painted exactly as without this.
"""

from __future__ import annotations

import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from ..models.layers import LAYERS

DEEP_BLOCK = 4  # blocks 4 and 5: units that see object parts
THRESHOLD = -0.5  # the detector's score threshold (dlib's default is 0; painted faces score lower)
DETECT_SIDE = 512  # the painting is searched at this long side (faces down to ~40 px there)
# A detector box covers brows to chin; the head around it (hair, a hat's brim, the ears, the
# neck) is as much the sitter: the box grows by these fractions of its size on each side.
GROW_SIDES, GROW_UP, GROW_DOWN = 0.3, 0.6, 0.5

Box = Tuple[float, float, float, float]  # left, top, right, bottom as fractions of the width and height


def deep(layer: str) -> bool:
    """Whether the faces are kept out of this layer's statistics."""
    return LAYERS[layer].block >= DEEP_BLOCK


def face_boxes(image: torch.Tensor) -> List[Box]:
    """The heads in `image` ((1, 3, H, W) in 0-255), grown around the detector's faces, as fractions.

    No faces (and a RuntimeWarning, shown once) where dlib is not installed: nothing is masked then.
    """
    try:
        import dlib
    except ImportError:
        warnings.warn("dlib is not installed (pip install dlib-bin): faces in the painting are not kept out of "
                      "the style", RuntimeWarning, stacklevel=2)
        return []
    arr = image[0].detach().float().clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    im = Image.fromarray(np.ascontiguousarray(arr))
    im.thumbnail((DETECT_SIDE, DETECT_SIDE), Image.Resampling.LANCZOS)
    rects, _, _ = dlib.get_frontal_face_detector().run(np.asarray(im), 1, THRESHOLD)
    boxes = []
    for r in rects:
        w, h = r.right() - r.left(), r.bottom() - r.top()
        boxes.append((max(0.0, (r.left() - GROW_SIDES * w) / im.width), max(0.0, (r.top() - GROW_UP * h) / im.height),
                      min(1.0, (r.right() + GROW_SIDES * w) / im.width),
                      min(1.0, (r.bottom() + GROW_DOWN * h) / im.height)))
    return boxes


def keep_mask(boxes: Sequence[Box], height: int, width: int, device: torch.device) -> Optional[torch.Tensor]:
    """(1, 1, height, width): 0 over the heads, 1 elsewhere; None without boxes (or if they cover all)."""
    if not boxes:
        return None
    m = torch.ones(1, 1, height, width, device=device)
    for left, top, right, bottom in boxes:
        m[:, :, round(top * height):round(bottom * height), round(left * width):round(right * width)] = 0
    return m if float(m.sum()) > 0 else None

