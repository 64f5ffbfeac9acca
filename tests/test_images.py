import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from restyle.errors import InputError
from restyle.images import (
    check_output_path, fit_size, load_image, save_atomic, sidecar_path, to_pil, to_tensor, write_picture,
)


def gradient(size=(40, 30)):
    im = Image.new("RGB", size)
    im.putdata([(x * 6 % 256, y * 8 % 256, (x + y) * 3 % 256) for y in range(size[1]) for x in range(size[0])])
    return im


@pytest.mark.parametrize("suffix, fmt", [(".jpg", "JPEG"), (".png", "PNG"), (".webp", "WEBP"), (".tif", "TIFF"), (".bmp", "BMP")])
def test_reads_each_format_as_rgb(tmp_path, suffix, fmt):
    p = tmp_path / f"img{suffix}"
    gradient().save(p, format=fmt)
    im = load_image(p)
    assert im.mode == "RGB" and im.size == (40, 30)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "I;16", "1"])
def test_converts_modes_to_rgb(tmp_path, mode):
    src = gradient()
    if mode == "I;16":
        arr = np.asarray(src.convert("L"), dtype=np.uint16) * 257
        p = tmp_path / "img16.png"
        Image.fromarray(arr).save(p)
        assert Image.open(p).mode in ("I;16", "I", "I;16B")
    elif mode == "CMYK":
        p = tmp_path / "cmyk.jpg"
        src.convert("CMYK").save(p)
    else:
        p = tmp_path / f"img_{mode}.png"
        src.convert(mode).save(p)
    im = load_image(p)
    assert im.mode == "RGB" and im.size == (40, 30)
    if mode == "I;16":  # scaled down to 8 bits, not clipped to white
        ref = gradient().convert("L")
        assert abs(im.convert("L").getpixel((20, 15)) - ref.getpixel((20, 15))) <= 2


def test_alpha_is_composited_on_white(tmp_path):
    im = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    im.paste((0, 0, 255, 255), (0, 0, 16, 32))
    p = tmp_path / "a.png"
    im.save(p)
    out = load_image(p)
    assert out.getpixel((5, 5)) == (0, 0, 255)
    assert out.getpixel((25, 5)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    im = gradient((40, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    p = tmp_path / "rot.jpg"
    im.save(p, exif=exif.tobytes())
    assert Image.open(p).size == (40, 30)
    assert load_image(p).size == (30, 40)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_directory(tmp_path):
    with pytest.raises(InputError, match="not a regular file"):
        load_image(tmp_path)


def test_not_an_image(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("hello, I am text")
    with pytest.raises(InputError, match="notes.png: not an image"):
        load_image(p)


def test_truncated_image(tmp_path):
    buf = io.BytesIO()
    gradient((200, 200)).save(buf, format="JPEG")
    p = tmp_path / "cut.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(InputError, match="cut.jpg: corrupt or truncated"):
        load_image(p)


def test_pixel_limit(tmp_path):
    p = tmp_path / "big.png"
    gradient((100, 100)).save(p)
    with pytest.raises(InputError, match="10000 pixels exceeds the limit of 5000"):
        load_image(p, max_pixels=5000)


def test_tensor_round_trip_is_exact():
    im = gradient()
    t = to_tensor(im)
    assert t.shape == (1, 3, 30, 40) and t.dtype == torch.float32 and t.max() <= 255
    assert to_pil(t).tobytes() == im.tobytes()


def test_to_pil_clamps():
    t = torch.full((1, 3, 4, 4), 300.0)
    t[..., 0, 0] = -5
    out = to_pil(t)
    assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((1, 1)) == (255, 255, 255)


def test_fit_size_keeps_aspect():
    assert fit_size(1024, 768, 512) == (512, 384)
    assert fit_size(768, 1024, 512) == (384, 512)


def test_output_checks(tmp_path):
    inp = tmp_path / "in.png"
    gradient().save(inp)
    with pytest.raises(InputError, match="same file as input"):
        check_output_path(inp, (inp,))
    with pytest.raises(InputError, match="suffix '.txt'"):
        check_output_path(tmp_path / "out.txt")
    with pytest.raises(InputError, match="does not exist"):
        check_output_path(tmp_path / "nope" / "out.png")
    assert check_output_path(tmp_path / "out.png", (inp,)) == tmp_path / "out.png"


def test_save_atomic_leaves_no_temporary_files(tmp_path):
    out = save_atomic(gradient(), tmp_path / "o.png")
    assert out.exists() and [p.name for p in tmp_path.iterdir()] == ["o.png"]
    assert Image.open(out).size == (40, 30)


def test_save_atomic_keeps_old_file_when_writing_fails(tmp_path):
    out = tmp_path / "o.png"
    out.write_bytes(b"old")
    with pytest.raises(Exception):
        save_atomic(gradient(), out, optimize="not-a-bool", compress_level="x")
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]


def test_write_picture_writes_the_image_then_the_sidecar_as_before(tmp_path):
    report = {"iterations": 3, "path": tmp_path, "seconds": 1.5}
    out = write_picture(gradient(), tmp_path / "o.png", report)
    assert out == tmp_path / "o.png" and Image.open(out).size == (40, 30)
    # The text the CLI and batches wrote before write_picture: indent 2, str() for the rest, a newline.
    assert sidecar_path(out).read_text(encoding="utf-8") == json.dumps(report, indent=2, default=str) + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png", "o.png.json"]


def test_write_picture_sidecar_from_the_written_file_and_elsewhere(tmp_path):
    out = write_picture(gradient(), tmp_path / "result.png", lambda p: {"bytes": p.stat().st_size},
                        sidecar_to=tmp_path / "report.json")
    assert json.loads((tmp_path / "report.json").read_text(encoding="utf-8")) == {"bytes": out.stat().st_size}
    assert not sidecar_path(out).exists()


def test_write_picture_without_sidecar_leaves_a_users_json_alone(tmp_path):
    side = tmp_path / "o.png.json"
    side.write_text("mine", encoding="utf-8")  # --no-sidecar never touched OUTPUT.json
    write_picture(gradient(), tmp_path / "o.png", None)
    assert side.read_text(encoding="utf-8") == "mine"


def test_write_picture_failing_image_keeps_old_files_and_writes_no_sidecar(tmp_path):
    out, side = tmp_path / "o.png", tmp_path / "o.png.json"
    out.write_bytes(b"old")
    side.write_text("old", encoding="utf-8")
    with pytest.raises(Exception):
        write_picture(gradient(), out, {"new": 1}, optimize="not-a-bool", compress_level="x")
    assert out.read_bytes() == b"old" and side.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png", "o.png.json"]
