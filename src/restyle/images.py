"""Reading and writing pictures, and moving them between PIL and tensors.

Tensors in restyle are RGB, float32, shape (1, 3, H, W), values 0-255 (the
scale the Caffe VGG-19 was trained on, so learning rates and the TV weight
keep the meaning they have in the classic tools).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import MAX_INPUT_PIXELS, MIN_SIZE
from .errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch  # imported where used: the CLI checks paths before it loads torch

PathLike = Union[str, os.PathLike]
ImageLike = Union[PathLike, Image.Image, np.ndarray, "torch.Tensor"]
READ_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "MPO", "GIF")
# The pictures a folder is read for (photos, paintings, training photos, video frames): the one list.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
WRITE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


def load_image(source: "ImageLike", *, max_pixels: int = MAX_INPUT_PIXELS) -> Image.Image:
    """Open an image as 8-bit RGB, upright.

    `source` is a path, a PIL image or an array (see `from_array`).

    - EXIF orientation is applied, so phone photos are the right way up.
    - Grayscale, palette, CMYK and 16-bit images are converted to RGB.
    - Alpha is composited onto white (a transparent background becomes paper,
      not black, which is what people expect of a painting).
    - Files over `max_pixels` decoded pixels, truncated or corrupt files and
      non-images raise InputError naming the file and the rule.
    """
    if isinstance(source, Image.Image):
        return _to_rgb(ImageOps.exif_transpose(source))
    if is_array(source):
        img = from_array(source)
        if img.width * img.height > max_pixels:
            raise InputError(f"image array of {img.width}x{img.height} pixels exceeds the limit of {max_pixels} pixels")
        return img
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(
            f"image {_describe(source)} is not a path, a PIL image, a numpy array (HxWx3) or a torch tensor (3xHxW)"
        )
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.format not in READ_FORMATS:
                    raise InputError(
                        f"{path}: format {im.format} is not supported; use one of {', '.join(READ_FORMATS)}"
                    )
                pixels = im.width * im.height
                if pixels > max_pixels:
                    raise InputError(
                        f"{path}: {im.width}x{im.height} = {pixels} pixels exceeds the limit of "
                        f"{max_pixels} pixels"
                    )
                im.load()
                img = ImageOps.exif_transpose(im)
                img = _to_rgb(img)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputError(f"{path}: refused as a possible decompression bomb ({e})") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file (or a format Pillow cannot read)") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{path}: corrupt or truncated image ({e})") from None
    if min(img.size) < 1:
        raise InputError(f"{path}: image has no pixels")
    return img


def is_array(value: Any) -> bool:
    """True for a numpy array or a torch tensor (torch is not imported to find out)."""
    if isinstance(value, np.ndarray):
        return True
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"of shape {tuple(shape)} and dtype {getattr(value, 'dtype', '?')}"
    text = repr(value)
    return f"{text[:60]}..." if len(text) > 60 else text


def from_array(value: Any) -> Image.Image:
    """A numpy array or torch tensor as an 8-bit RGB PIL image.

    numpy: H x W x 3 (channels last, the layout of PIL, OpenCV after BGR->RGB, imageio).
    torch: 3 x H x W or 1 x 3 x H x W (channels first, torchvision's layout).
    uint8 values are 0-255; float values must lie in [0, 1] (both libraries' float
    convention). Anything else raises InputError naming the shape, dtype and rule.
    """
    rule = ("a numpy image must be HxWx3 and a torch image 3xHxW or 1x3xHxW, "
            "uint8 (0-255) or float (0-1)")
    if isinstance(value, np.ndarray):
        arr = value
    else:
        t = value.detach()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3 or t.shape[0] != 3:
            raise InputError(f"image tensor {_describe(value)}: {rule}")
        if t.is_floating_point():
            t = t.float()  # bf16 has no numpy dtype
        arr = t.permute(1, 2, 0).cpu().numpy()
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"image array {_describe(value)}: {rule}")
    if min(arr.shape[:2]) < 1:
        raise InputError(f"image array {_describe(value)} has no pixels")
    if arr.dtype == np.uint8:
        return Image.fromarray(np.ascontiguousarray(arr), "RGB")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"image array {_describe(value)}: {rule}")
    lo, hi = float(np.min(arr)), float(np.max(arr))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError(f"image array {_describe(value)} contains NaN or infinite values")
    if lo < 0 or hi > 1:
        raise InputError(
            f"image array {_describe(value)} has values in [{lo:.4g}, {hi:.4g}]; float images must lie in [0, 1] "
            "(pass uint8 for 0-255)"
        )
    return Image.fromarray(np.round(arr.astype(np.float32) * 255).astype(np.uint8), "RGB")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale (Pillow may open it as "I"): scale 0-65535 to 0-255, not clip.
        img = img.convert("I").point(lambda v: v / 256).convert("L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def fit_size(width: int, height: int, long_side: int) -> Tuple[int, int]:
    """Size with the given long side and the same aspect ratio (short side >= 1)."""
    if width >= height:
        return long_side, max(1, round(height * long_side / width))
    return max(1, round(width * long_side / height)), long_side


def check_size(name: str, width: int, height: int) -> None:
    if min(width, height) < MIN_SIZE:
        raise InputError(
            f"{name} would be {width}x{height} px; VGG-19's five poolings need at least "
            f"{MIN_SIZE} px on the short side (raise --size or use a less elongated image)"
        )


def resize(img: Image.Image, long_side: int) -> Image.Image:
    size = fit_size(img.width, img.height, long_side)
    if size == img.size:
        return img
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def to_tensor(img: Image.Image, device: Union[str, "torch.device"] = "cpu") -> "torch.Tensor":
    """PIL RGB -> float32 tensor (1, 3, H, W) in 0-255."""
    import torch

    t = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).unsqueeze(0)
    return t.to(device=device, dtype=torch.float32)


def to_pil(t: "torch.Tensor") -> Image.Image:
    """Float tensor (1, 3, H, W) in 0-255 -> PIL RGB (rounded and clamped)."""
    import torch

    arr = t.detach()[0].float().clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).cpu()
    return Image.fromarray(arr.contiguous().numpy())


def check_output_path(out: PathLike, inputs: Tuple[PathLike, ...] = (),
                      suffixes: Tuple[str, ...] = WRITE_SUFFIXES) -> Path:
    """Refuse an output path that is an input, has a suffix not in `suffixes`, or sits in a missing folder."""
    out = Path(out)
    if out.suffix.lower() not in suffixes:
        raise InputError(f"output {out}: suffix {out.suffix!r} is not one of {', '.join(suffixes)}")
    if not out.parent.exists():
        raise InputError(f"output {out}: folder {out.parent} does not exist")
    if out.is_dir():
        raise InputError(f"output {out}: is a folder, give a file name")
    for path in inputs:
        if out.resolve() == Path(path).resolve():
            raise InputError(f"output {out} is the same file as input {path}; refusing to overwrite an input")
    return out


def sidecar_path(output: PathLike) -> Path:
    """Where a result's settings and figures go: OUTPUT.json beside OUTPUT."""
    output = Path(output)
    return output.with_name(output.name + ".json")


@contextmanager
def _atomic(out: Path, mode: str) -> Iterator[IO]:
    """A temporary file beside `out`, renamed onto it on success and removed on failure.

    Created with os.open(..., 0o666) rather than tempfile.mkstemp (always 0600), so
    the result honours the umask like any other file the user writes.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = out.parent / f".{out.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 32 random bits
        raise FileExistsError(f"no free temporary name beside {out}")
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as fh:
            yield fh
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_atomic(img: Image.Image, out: PathLike, **params) -> Path:
    """Write to a temporary file beside `out`, then rename: never a half-written file."""
    out = Path(out)
    fmt = Image.registered_extensions().get(out.suffix.lower())
    with _atomic(out, "wb") as fh:
        img.save(fh, format=fmt, **params)
    return out


def write_text_atomic(text: str, out: PathLike) -> Path:
    out = Path(out)
    with _atomic(out, "w") as fh:
        fh.write(text)
    return out


def write_bytes_atomic(data: bytes, out: PathLike) -> Path:
    out = Path(out)
    with _atomic(out, "wb") as fh:
        fh.write(data)
    return out


def write_picture(img: Union[Image.Image, bytes], out: PathLike,
                  sidecar: Optional[Union[Dict[str, Any], str, Callable[[Path], Dict[str, Any]]]] = None,
                  *, sidecar_to: Optional[PathLike] = None, **params) -> Path:
    """Write a result picture atomically, then its JSON sidecar (OUTPUT.json, or `sidecar_to`).

    The one home of "an image and its sidecar" for every front end and batch. The
    sidecar comes after the image, so a sidecar always vouches for a complete picture;
    `sidecar` may be a function of the written picture's path, for figures about its
    bytes (a checksum), or JSON text already made (a Ray worker's). `img` is a PIL image,
    saved with Pillow's `params`, or the bytes of a file already encoded (a Ray worker's),
    written as they are. Returns the picture's path.
    """
    out = write_bytes_atomic(img, out) if isinstance(img, bytes) else save_atomic(img, out, **params)
    if sidecar is not None:
        report = sidecar(out) if callable(sidecar) else sidecar
        text = report if isinstance(report, str) else json.dumps(report, indent=2, default=str) + "\n"
        write_text_atomic(text, sidecar_path(out) if sidecar_to is None else sidecar_to)
    return out
