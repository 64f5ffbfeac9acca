"""Checking uploaded images: size cap, type sniffed from the bytes, decoded-pixel cap, corrupt files.

The file name a browser sends is never used for anything but display; the
stored file is named by us (`content.jpg`), its suffix from the sniffed type.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from PIL import Image, ImageOps, UnidentifiedImageError

from ..config import MIN_SIZE
from ..images import READ_FORMATS, fit_size
from ..optimiser.schedule import pyramid

# Magic numbers of the formats restyle reads, checked before Pillow sees the bytes.
SIGNATURES: Tuple[Tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"WEBP", 8, "WEBP"),  # RIFF....WEBP
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
)
SUFFIX = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}
MEDIA_TYPE = {".jpg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".gif": "image/gif",
              ".bmp": "image/bmp", ".tif": "image/tiff"}
ACCEPTED = "JPEG, PNG, WebP, GIF, BMP or TIFF"


class UploadError(Exception):
    """An upload breaks a rule; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400, headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.headers = headers  # e.g. Retry-After with a 503


@dataclass(frozen=True)
class CheckedImage:
    data: bytes
    format: str
    width: int
    height: int

    @property
    def suffix(self) -> str:
        return SUFFIX[self.format]


def sniff(data: bytes) -> str:
    for magic, offset, fmt in SIGNATURES:
        if data[offset:offset + len(magic)] == magic and (fmt != "WEBP" or data[:4] == b"RIFF"):
            return fmt
    return ""


def check_image(data: bytes, what: str, *, max_bytes: int, max_pixels: int) -> CheckedImage:
    """Return the checked upload or raise UploadError with a message for a person and a 4xx status."""
    if not data:
        raise UploadError(f"{what}: the file is empty", 400)
    if len(data) > max_bytes:
        raise UploadError(
            f"{what}: the file is larger than the limit of {max_bytes / 2**20:.0f} MB", 413
        )
    fmt = sniff(data)
    if not fmt:
        raise UploadError(
            f"{what}: this is not a {ACCEPTED} image (the file's content was checked, not its name)", 415
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.format not in READ_FORMATS:
                    raise UploadError(f"{what}: format {im.format} is not supported; use {ACCEPTED}", 415)
                pixels = im.width * im.height
                if pixels > max_pixels:
                    raise UploadError(
                        f"{what}: {im.width}x{im.height} is {pixels / 1e6:.0f} million pixels, over the limit of "
                        f"{max_pixels / 1e6:.0f} million; make it smaller first", 413,
                    )
                im.load()  # decodes every pixel: truncated and corrupt files fail here
                w, h = ImageOps.exif_transpose(im).size
                fmt = im.format
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(f"{what}: refused as a possible decompression bomb (too many pixels)", 413) from None
    except UnidentifiedImageError:
        raise UploadError(f"{what}: the file looks like {fmt} but cannot be read as an image", 400) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise UploadError(f"{what}: the image is corrupt or truncated ({e})", 400) from None
    if min(w, h) < 1:
        raise UploadError(f"{what}: the image has no pixels", 400)
    return CheckedImage(data, fmt, w, h)


def check_fits(img: CheckedImage, what: str, role: str, cfg: Any, *, max_size: int) -> None:
    """Refuse an image the painting would refuse later: too thin at the run's first (smallest) scale.

    The run resizes the content (and the style, times style_scale) to each scale's
    long side; VGG-19's five poolings need MIN_SIZE px on the short side.
    """
    first = pyramid(cfg.size, cfg.iterations, cfg.scales)[0].long_side
    long_side = first if role == "content" else max(1, round(first * cfg.style_scale))
    where = f"at {long_side} px on its long side" + (" (the first scale of the painting)" if role == "content" else
                                                      " (the style is matched at this size)")
    check_not_thin(img.width, img.height, long_side, what, "paint", where)


def check_not_thin(width: int, height: int, long_side: int, what: str, verb: str, where: str, *,
                   enlarge: bool = True) -> None:
    """Refuse (400) a width x height image whose short side is under MIN_SIZE px once its long side is `long_side`.

    `enlarge` False: a picture smaller than `long_side` keeps its size (a clip's frames); one
    whose short side is then under MIN_SIZE is too small, not too thin (cropping would not help).
    """
    if not enlarge and max(width, height) <= long_side:
        if min(width, height) >= MIN_SIZE:
            return
        raise UploadError(f"{what}: {width}x{height} is too small to {verb}: its short side must be at least "
                          f"{MIN_SIZE} px (it is never enlarged)", 400)
    w, h = fit_size(width, height, long_side)
    if min(w, h) >= MIN_SIZE:
        return
    raise UploadError(
        f"{what}: {width}x{height} is too long and thin to {verb}: {where} its short side would be "
        f"{min(w, h)} px, and it needs at least {MIN_SIZE} px. Crop it to {long_side / MIN_SIZE:g}:1 or squarer", 400)


def upload_name(upload: Any) -> Optional[str]:
    """The file name as the browser sent it, decoded as UTF-8 (what browsers send).

    Starlette falls back to Latin-1 for names that are not UTF-8, which turns a
    Shift-JIS or cp1252 name into mojibake; from the raw header, bytes that are
    not UTF-8 become one U+FFFD mark instead of wrong letters.
    """
    from python_multipart.multipart import parse_options_header  # the module name since 0.0.13

    raw = next((v for k, v in getattr(upload.headers, "raw", []) if k.lower() == b"content-disposition"), None)
    if raw is None:
        return upload.filename
    name = parse_options_header(raw)[1].get(b"filename")
    if name is None:
        return upload.filename
    return re.sub("\ufffd+", "\ufffd", name.decode("utf-8", errors="replace"))


def display_name(name: str | None, fallback: str) -> str:
    """A file name a person sent, cut down to something safe to show (templates escape it too)."""
    if not name:
        return fallback
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:80].strip()
    return name or fallback


async def image_from_form(form: Any, role: str, what: str, settings: Any) -> Tuple[bytes, str, str, Optional[CheckedImage]]:
    """(bytes, suffix, label, checked image) of the form's upload for `role`, else of its `{role}_example`.

    The checked image is None for an example (the server's own files). UploadError if neither is given.
    """
    import asyncio

    from starlette.datastructures import UploadFile

    from . import gallery

    upload = form.get(role)
    example_key = form.get(f"{role}_example") or ""
    if isinstance(upload, UploadFile) and (upload.filename or upload.size):
        data = await upload.read(settings.max_upload_bytes + 1)
        # Decoding a big photo takes a while: off the event loop, so other pages stay quick.
        img = await asyncio.to_thread(check_image, data, what, max_bytes=settings.max_upload_bytes,
                                      max_pixels=settings.max_pixels)
        return data, img.suffix, display_name(upload_name(upload), f"uploaded {role}"), img
    if isinstance(example_key, str) and example_key:
        ex = gallery.find(settings, example_key)
        if ex is None:
            raise UploadError(f"{what}: there is no example called {example_key[:40]!r}", 400)
        return ex.path.read_bytes(), ex.path.suffix.lower(), ex.title, None
    hint = "upload one or pick one of the examples" if role == "style" else "upload a photo"
    raise UploadError(f"{what} is missing: {hint}", 400)
