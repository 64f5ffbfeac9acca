"""The coarse-to-fine pyramid: which sizes, how many iterations each. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from ..config import MIN_SIZE
from ..errors import InputError

COARSEST = 256  # the automatic pyramid starts near this long side
MAX_COUNT = 8  # `--scales N` with N <= MAX_COUNT means "N scales", larger is a size
ITER_DECAY = 0.25  # each finer scale (4x the pixels) runs this fraction of the previous one's iterations
MIN_ITERS = 20


@dataclass(frozen=True)
class Stage:
    long_side: int
    iterations: int


def scale_sizes(size: int, scales: Optional[Sequence[int]] = None) -> Tuple[int, ...]:
    """Long sides of the pyramid, ascending, ending at `size`.

    - None: halve from `size` while the result stays >= COARSEST (512 -> 256, 512).
    - (N,) with N <= MAX_COUNT: N scales, each twice the previous, ending at `size`.
    - otherwise explicit long sides, strictly ascending and <= size; `size` is
      appended if the list stops short of it.
    """
    if scales is None:
        sizes = [size]
        while sizes[0] // 2 >= COARSEST:
            sizes.insert(0, sizes[0] // 2)
        return tuple(sizes)
    scales = tuple(scales)
    if len(scales) == 1 and scales[0] <= MAX_COUNT:
        n = scales[0]
        sizes = tuple(max(MIN_SIZE, round(size / 2 ** (n - 1 - k))) for k in range(n))
        return tuple(sorted(set(sizes)))
    if any(b <= a for a, b in zip(scales, scales[1:])):
        raise InputError(f"scales {','.join(map(str, scales))} must be strictly ascending")
    if scales[-1] > size:
        raise InputError(f"scales {','.join(map(str, scales))}: the largest must not exceed size {size}")
    if scales[0] < MIN_SIZE:
        raise InputError(f"scales {','.join(map(str, scales))}: each must be at least {MIN_SIZE} px")
    return scales if scales[-1] == size else scales + (size,)


def pyramid(size: int, iterations: int, scales: Optional[Sequence[int]] = None) -> Tuple[Stage, ...]:
    """Stages of the run: the coarsest gets `iterations`, each finer one ITER_DECAY as many.

    Fine scales cost 4x more per iteration than the scale below and start from
    an already-styled image, so they need (and get) fewer iterations.
    """
    sizes = scale_sizes(size, scales)
    return tuple(
        Stage(s, iterations if k == 0 else max(min(MIN_ITERS, iterations), round(iterations * ITER_DECAY**k)))
        for k, s in enumerate(sizes)
    )
