"""What the sub-commands share: flags built from the config dataclasses, the Ray flags, and the
progress bars (one for a batch, one for a painting, one for a training)."""

from __future__ import annotations

import argparse
import sys
import time
import typing
from dataclasses import MISSING, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..config import StylizeConfig
from ..errors import InputError
from ..interrupts import stop_cleanly

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2  # and EXIT_INTERRUPTED, 130


def _list_of(item: Callable[[str], Any], what: str) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        try:
            return tuple(item(part.strip()) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {what}") from None

    return parse


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


def config_from_args(args: argparse.Namespace, cls: type = StylizeConfig, skip: Sequence[str] = (),
                     defaults: Mapping[str, Any] = {}) -> Any:
    """The config from the flags given; a --preset is applied first and the other flags override it.
    `defaults` (field -> value) replace the class's own defaults where no flag is given."""
    given = {**defaults,
             **{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name) and f.name not in skip}}
    return cls().replace(**given) if hasattr(cls, "from_preset") else cls(**given)


def add_ray_arguments(p: argparse.ArgumentParser, work: str, copy: bool = False,
                      workers: str = "at most N workers", shared_paths: bool = True) -> None:
    """--ray [ADDRESS], --ray-workers (alias --workers), --ray-cpus-per-worker (and --ray-copy): the same on
    every command; `workers` says what N means there, `shared_paths` whether every node must see its files."""
    ray = p.add_argument_group("on a Ray cluster (pip install 'restyle[ray]')")
    ray.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                     help=f"run {work} on Ray workers: alone, a Ray instance started on this machine; "
                          "'auto', HOST:6379 or ray://HOST:10001 joins a running cluster"
                          + (" (paths must be shared by every node)" if shared_paths else ""))
    ray.add_argument("--ray-workers", "--workers", dest="ray_workers", type=int, default=None, metavar="N",
                     help=f"{workers} (default: one per GPU, else one per --ray-cpus-per-worker cores)")
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
    from ..batch.cluster import check_address

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


class Bar:
    """The CLI's one progress bar: a tqdm bar on stderr, opened when the first event gives the total.

    Every command's bar is this class (or a subclass that turns one family of events
    into updates): `open` is the one place a tqdm is made, `write` puts a line above
    the bar (or prints it when there is none), `close` ends it however the command
    ends; as a context manager it closes itself. tqdm stays here, out of the library.
    """

    def __init__(self, quiet: bool = False, file: Any = None) -> None:
        self.quiet = quiet
        self.file = file if file is not None else sys.stderr
        self.bar: Any = None

    def open(self, **options: Any) -> Any:
        from tqdm import tqdm

        self.bar = tqdm(dynamic_ncols=True, file=self.file, **options)
        return self.bar

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.file)
        else:
            print(line, file=self.file)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _BatchBar(Bar):
    """One bar for a whole batch (tasks done / total, tasks per minute, ETA), local or on Ray."""

    def __init__(self, quiet: bool = False, unit: str = "pair") -> None:
        super().__init__(quiet)
        self.unit = unit

    def __call__(self, event: Any) -> None:
        from ..events import BatchProgress, PairStarted

        if self.quiet:
            return
        if self.bar is None and isinstance(event, (BatchProgress, PairStarted)):
            self.open(total=event.total, unit=self.unit,
                      bar_format="{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}, {rate_fmt}]")
        if isinstance(event, PairStarted) and event.attempt > 1:
            self.bar.write(f"again: {event.label} (attempt {event.attempt}) on {event.host}", file=self.file)
        elif isinstance(event, BatchProgress):
            self.bar.update(event.done - self.bar.n)
            if event.outcome is not None and event.outcome.status == "failed":
                self.bar.write(f"failed: {event.outcome.task.label}: {event.outcome.error}", file=self.file)


class TrainProgress(Bar):
    """A training run on stderr (events.Train*): one bar, a line per checkpoint; previews go to `save_preview`.

    Use it as a context manager around the training call: the bar is closed however it ends.
    """

    def __init__(self, quiet: bool, save_preview: Callable[[Any], None]) -> None:
        super().__init__(quiet)
        self.save_preview = save_preview

    def __call__(self, event: Any) -> None:
        from ..events import TrainCheckpoint, TrainDone, TrainPreview, TrainStart, TrainStep

        if isinstance(event, TrainPreview):
            self.save_preview(event)
        elif self.quiet:
            return
        elif isinstance(event, TrainStart):
            print(f"training on {event.photos} photos, {event.precision}; held aside for previews: "
                  f"{', '.join(event.held_out) or 'none'}", file=self.file)
            self.open(total=event.steps, initial=event.start_step, unit="step")
        elif isinstance(event, TrainStep) and self.bar is not None:
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in event.terms.items()}, refresh=False)
            self.bar.update(1)
        elif isinstance(event, TrainCheckpoint) and self.bar is not None:
            self.bar.write(f"checkpoint at step {event.step}: {event.path}", file=self.file)
        elif isinstance(event, TrainDone):
            self.close()


class _ProgressBar(Bar):
    """The run's progress on stderr, fed by engine events.

    One bar for the whole run, measured in pixel-iterations: the bar, its percentage
    and the time left (progress.eta_seconds) count a 512 px step as four 256 px ones,
    and the description names the scale being painted. Before the first scale it
    prints the plan and the memory estimate, after the first iterations the estimated
    total time; a run longer than progress.LONG_RUN_S gets a warning even with --quiet.
    """

    def __init__(self, show: bool = True, file: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(not show, file)
        self.show = show
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
            self.write(line)

    def __call__(self, event: Any) -> None:
        from ..events import Estimate, Iterate, Planned, StageStart
        from ..optimiser.progress import duration

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
                    self.open(total=1, bar_format="{desc}{postfix} {percentage:3.0f}%|{bar}|")
                self.bar.total = _work_done(self.work, None)
                self.bar.set_description_str(f"scale {event.scale + 1}/{event.scales} {event.width}x{event.height}",
                                             refresh=False)
        elif isinstance(event, Iterate) and self.bar is not None:
            self.bar.set_postfix_str(self.status(event), refresh=False)
            self.bar.update(_work_done(self.work, event.step) - self.bar.n)

    def status(self, event: Any) -> str:
        """'110/138 it [00:10<00:10, 11.0 it/s] content=.., style=.., tv=..', the time left by pixels."""
        from tqdm import tqdm

        from ..optimiser.progress import eta_seconds

        now = self.clock()
        eta = eta_seconds(self.work, event.step, now - (self.t0 if self.t0 is not None else now))
        rate = event.i / max(now - self.t_stage, 1e-9)
        pace = f"{rate:.2f} it/s" if rate >= 1 else f"{1 / rate:.2f} s/it"
        left = "?" if eta is None else tqdm.format_interval(eta)
        terms = ", ".join(f"{k}={v:.3g}" for k, v in event.terms.items())
        return f"{event.step}/{event.steps} it [{tqdm.format_interval(event.elapsed)}<{left}, {pace}] {terms}"

    def close(self) -> None:
        super().close()
        self.reset()


def _work_done(work: Sequence[Tuple[int, int]], step: Optional[int]) -> int:
    from ..optimiser.progress import work_done

    return work_done(work, sum(n for _, n in work) if step is None else step)


_PARSERS: Dict[Any, Callable[[str], Any]] = {
    int: int,
    float: float,
    str: str,
    typing.Tuple[int, ...]: _list_of(int, "integers"),
    typing.Tuple[float, ...]: _list_of(float, "numbers"),
    typing.Tuple[str, ...]: _list_of(str, "names"),
}
