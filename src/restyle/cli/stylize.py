"""`restyle stylize` (one picture or a batch, with the optimiser, a trained network or both),
`restyle texture`, `restyle presets` and `restyle explain`."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Dict

from ..config import ExplainConfig
from ..errors import InputError
from ..interrupts import stop_cleanly
from . import upscale as cli_upscale
from .common import EXIT_OK, Bar, _ProgressBar, config_from_args, ray_options, run_batch_command
from .models import stylize_hybrid, stylize_with_model


# Settings that mean nothing without a content image.
TEXTURE_SKIPS = ("size", "content_layers", "content_weight", "init", "preserve_colors", "mask")


def _wxh(text: str) -> tuple:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size WxH such as 512x512") from None
    return w, h


def snapshot_path(output: Path, step: int) -> Path:
    return output.with_name(f"{output.stem}.step{step:05d}{output.suffix}")


def cmd_stylize(args: argparse.Namespace) -> int:
    if args.model:
        return stylize_with_model(args)
    if not args.styles:
        raise InputError("stylize needs at least one style image (or --model MODEL for a trained network)")
    if args.init_model:
        return stylize_hybrid(args, cmd_stylize)
    if args.batch or args.ray is not None or Path(args.content).is_dir() or any(Path(s).is_dir() for s in args.styles):
        return cmd_batch(args)
    cfg = config_from_args(args)  # bad values fail here, before numpy, Pillow and torch are imported
    from ..images import check_output_path, sidecar_path

    if args.save_every < 0:
        raise InputError(f"save-every {args.save_every} must be >= 0")
    inputs = (args.content, *args.styles) + ((cfg.init,) if Path(cfg.init).is_file() else ())
    out = check_output_path(args.output, inputs)
    if not args.no_sidecar:
        check_output_path(out.with_suffix(".png"), inputs)  # folder and input checks
        for path in inputs:
            if sidecar_path(out).resolve() == Path(path).resolve():
                raise InputError(f"sidecar {sidecar_path(out)} is the same file as input {path}; refusing")
    from ..optimiser.engine import run

    return _paint_and_save(
        args, out, cli_upscale.upscaled(args, cfg, lambda c, **kw: run(args.content, args.styles, c, weights=args.weights, **kw)),
        content=str(args.content), styles=[str(s) for s in args.styles], **getattr(args, "hybrid", {}),
    )


def _paint_and_save(args: argparse.Namespace, out: Path, paint: Callable[..., Any], **recorded: Any) -> int:
    """Run `paint(callback=, snapshot_every=)` with a progress bar and snapshots; write the image and sidecar."""
    from ..events import Snapshot
    from ..images import save_atomic, write_picture

    progress = _ProgressBar(show=not args.quiet)

    def callback(event: Any) -> None:
        progress(event)
        if isinstance(event, Snapshot):
            save_atomic(event.image, snapshot_path(out, event.step))

    with stop_cleanly():
        try:
            result = paint(callback=callback, snapshot_every=args.save_every)
        finally:
            progress.close()
        report = None
        if not args.no_sidecar:
            report = dict(result.report, **recorded, output=str(out))
            if "init_model" in recorded:  # the hybrid's start was a temporary picture of this model
                report["config"] = dict(report["config"], init="init_model")
        write_picture(result.image, out, report)
    if not args.quiet:
        t = result.report["timings_s"]["total"]
        print(f"wrote {out} ({result.image.width}x{result.image.height}, {result.report['iterations']} iterations, {t:.1f} s)")
    return EXIT_OK


def cmd_texture(args: argparse.Namespace) -> int:
    from ..images import check_output_path

    cfg = config_from_args(args, skip=TEXTURE_SKIPS)
    if args.save_every < 0:
        raise InputError(f"save-every {args.save_every} must be >= 0")
    out = check_output_path(args.output, (args.style,))
    from ..optimiser.texture import synthesize
    return _paint_and_save(
        args, out,
        lambda **kw: synthesize(args.style, args.size, cfg, tile=args.tile, weights=args.weights, **kw),
        style=str(args.style),
    )


def cmd_presets(args: argparse.Namespace) -> int:
    from ..config import PRESET_HELP, PRESETS

    for name, values in PRESETS.items():
        print(f"{name}: {PRESET_HELP[name]}")
        for key, value in values.items():
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
            print(f"    --{key.replace('_', '-')} {shown}")
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    from ..optimiser.explain import Progress, explain

    given = {f.name: getattr(args, f.name) for f in fields(ExplainConfig) if hasattr(args, f.name)}
    cfg = ExplainConfig.quick(**given) if args.quick else ExplainConfig(**given)
    bar = Bar(args.quiet)

    def callback(event: Progress) -> None:
        if bar.quiet:
            return
        if bar.bar is None:
            bar.open(total=event.steps, unit="step")
        bar.bar.set_description(event.label, refresh=False)
        bar.bar.update(event.step - bar.bar.n)

    try:
        with stop_cleanly():
            report = explain(args.content, args.style, args.output, cfg, images=args.images,
                             weights=args.weights, callback=callback)
    finally:
        bar.close()
    if not args.quiet:
        print(f"wrote {report.index} ({report.timings_s['total']:.0f} s)")
    return EXIT_OK


def cmd_batch(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.save_every:
        raise InputError("--save-every is not available in batch mode")
    if getattr(args, "upscale", None):
        raise InputError("--upscale is not available in batch mode")
    kw: Dict[str, Any] = {"weights": args.weights, "sidecar": not args.no_sidecar}
    ray = ray_options(args)
    if ray is not None:
        from ..batch.distributed import run_batch_ray as batch

        kw.update(ray)
    else:
        from ..batch.local import run_batch as batch
    return run_batch_command(lambda bar: batch([args.content], args.styles, args.output, cfg, callback=bar, **kw),
                             args.output, args.quiet)
