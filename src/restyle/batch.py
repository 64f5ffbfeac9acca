"""Batch mode: one result per (content, style) pair, each style's targets computed once per scale.

    results = run_batch(["a.jpg", "photos/"], ["starry.jpg", "scream.jpg"], "out/", StylizeConfig())

Folders are expanded to the images in them (sorted, non-recursive). Outputs are
named `{content_stem}__{style_stem}.png` in the output folder. Batch mode does
not blend styles: several styles give several results (blending stays the
single-run default of `restyle stylize CONTENT STYLE STYLE`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

from .config import StylizeConfig
from .engine import Painter, Result, make_painter, run
from .errors import InputError
from .images import PathLike, WRITE_SUFFIXES, check_output_path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")


def expand(paths: Sequence[PathLike], what: str) -> List[Path]:
    """Files as given, folders as their images (sorted by name)."""
    out: List[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"{what} folder {p} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            out += found
        elif not p.exists():
            raise InputError(f"{what} {p}: no such file")
        else:
            out.append(p)  # load_image() checks it is an image
    return out


def plan_pairs(contents: Sequence[Path], styles: Sequence[Path], out_dir: PathLike,
               suffix: str = ".png") -> List[Tuple[Path, Path, Path]]:
    """(content, style, output) for every pair; refuses name clashes and outputs that are inputs.

    `out_dir` may not exist yet (run_batch creates it), but must not be a file.
    """
    out_dir = Path(out_dir)
    if suffix not in WRITE_SUFFIXES:
        raise InputError(f"batch output suffix {suffix!r} is not one of {', '.join(WRITE_SUFFIXES)}")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"batch output {out_dir} is a file; give a folder (outputs are CONTENT__STYLE{suffix})")
    if not out_dir.exists() and out_dir.suffix.lower() in WRITE_SUFFIXES:
        raise InputError(f"batch output {out_dir} looks like an image file name; give a folder, created if "
                         f"missing (outputs are CONTENT__STYLE{suffix})")
    inputs = tuple(contents) + tuple(styles)
    pairs, seen = [], {}
    for c in contents:
        for s in styles:
            out = out_dir / f"{c.stem}__{s.stem}{suffix}"
            if out in seen:
                raise InputError(f"{c} x {s} and {seen[out][0]} x {seen[out][1]} would both be written to {out}; "
                                 "rename one of the inputs")
            seen[out] = (c, s)
            if out_dir.is_dir():  # a folder run_batch will create holds no inputs and no files yet
                check_output_path(out, inputs)
            pairs.append((c, s, out))
    return pairs


def run_batch(
    contents: Sequence[PathLike],
    styles: Sequence[PathLike],
    out_dir: PathLike,
    config: Optional[StylizeConfig] = None,
    *,
    suffix: str = ".png",
    weights: Optional[PathLike] = None,
    callback: Optional[Callable[[Any], None]] = None,
    on_result: Optional[Callable[[Path, Path, Path, Result], None]] = None,
    on_pair: Optional[Callable[[int, int, Path, Path], None]] = None,
    cancel: Any = None,
    painter: Optional[Painter] = None,
) -> List[Tuple[Path, Result]]:
    """Stylise every content after every style; `on_result(content, style, out, result)` saves each.

    Returns (output path, result) per pair. One Painter (network and style cache) serves all pairs,
    so a style's Gram matrices are computed once per scale, not once per content.
    """
    cfg = config or StylizeConfig()
    if cfg.style_blend_weights is not None:
        raise InputError("style_blend_weights has no meaning in batch mode (one result per style); drop it")
    pairs = plan_pairs(expand(contents, "content"), expand(styles, "style"), out_dir, suffix)
    painter = painter or make_painter(cfg, weights)
    Path(out_dir).mkdir(parents=True, exist_ok=True)  # only once every check has passed
    results = []
    for k, (c, s, out) in enumerate(pairs):
        if on_pair is not None:
            on_pair(k, len(pairs), c, s)
        r = run(c, [s], cfg, callback=callback, cancel=cancel, weights=weights, painter=painter)
        if on_result is not None:
            on_result(c, s, out, r)
        results.append((out, r))
    return results
