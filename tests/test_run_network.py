"""One way to run a trained network (networks.feedforward.run_network): every front end gives
the same pixels for the same photo, with the same device and precision choice ("auto": bf16
where the hardware runs it natively); the --preset size and --init-model's --device and
--precision are honoured."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import restyle
from restyle.cli.main import main
from restyle.networks import feedforward

ROOT = Path(__file__).resolve().parents[1]
MODEL = "starry_night"  # the bundled network: the web app's stylize job takes bundled names
SIZE = 64


@pytest.fixture
def one_thread():
    """CPU results depend on the thread count; a Ray worker runs one (test_ray.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def photo_dir(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.open(ROOT / "examples" / "tubingen.jpg").convert("RGB").resize((120, 90)).save(folder / "p.png")
    return folder


def pixels(path_or_image):
    img = Image.open(path_or_image) if isinstance(path_or_image, Path) else path_or_image
    return np.asarray(img.convert("RGB"))


def web_stylize_job(folder, content_file, size):
    """The web app's stylize job (web/tasks.run_stylize) on a job folder, without the server around it."""
    from restyle.web.tasks import run_stylize

    finished = {}
    run = SimpleNamespace(
        job=SimpleNamespace(id="j", params={"model": MODEL, "size": size}, content_file=content_file),
        folder=folder, settings=SimpleNamespace(default_size=512), progress={}, device="auto",
        write=lambda **kw: None,
        sink=SimpleNamespace(model_file=lambda key: None, progress=lambda *a: None,
                             end=lambda state, report: finished.update(report)),
    )
    run_stylize(run)
    return folder / "result.png", finished


def test_every_front_end_gives_the_same_pixels(tmp_path, photo_dir, one_thread):
    photo = photo_dir / "p.png"
    api = pixels(restyle.run_network(MODEL, photo, size=SIZE))
    assert api.shape == (48, 64, 3)
    model = feedforward.open_model(MODEL)
    assert model.precision == restyle.device.resolve_precision("auto", model.device)  # "auto", as the CLI
    assert np.array_equal(pixels(feedforward.run_network(model, photo, size=SIZE)), api)

    assert main(["stylize", str(photo), "--model", MODEL, "-o", str(tmp_path / "cli.png"), "--size", str(SIZE),
                 "--quiet"]) == 0
    assert np.array_equal(pixels(tmp_path / "cli.png"), api)

    assert main(["stylize", str(photo_dir), "--model", MODEL, "-o", str(tmp_path / "batch"), "--size", str(SIZE),
                 "--quiet"]) == 0
    assert np.array_equal(pixels(tmp_path / "batch" / f"p__{MODEL}.png"), api)

    job = tmp_path / "job"
    job.mkdir()
    Image.open(photo).save(job / "content.png")
    result, report = web_stylize_job(job, "content.png", SIZE)
    assert np.array_equal(pixels(result), api) and report["size"] == SIZE


def test_a_changed_precision_changes_the_pixels(photo_dir, one_thread):
    """The comparison above can fail: fp32 and bf16 pictures differ where bf16 is native."""
    photo = photo_dir / "p.png"
    fp32 = pixels(restyle.run_network(MODEL, photo, size=SIZE, precision="fp32"))
    bf16 = pixels(restyle.run_network(MODEL, photo, size=SIZE, precision="bf16"))
    assert not np.array_equal(fp32, bf16)


def test_preset_size_is_honoured_with_a_model(tmp_path, photo_dir):
    """--preset fast paints at 256 px with --model as without it; --size still wins; neither: the photo's size."""
    big = tmp_path / "big.png"
    Image.open(photo_dir / "p.png").resize((400, 300)).save(big)
    assert main(["stylize", str(big), "--model", MODEL, "--preset", "fast", "-o", str(tmp_path / "a.png"),
                 "--quiet"]) == 0
    assert Image.open(tmp_path / "a.png").size == (256, 192)
    assert main(["stylize", str(big), "--model", MODEL, "--preset", "fast", "--size", "80",
                 "-o", str(tmp_path / "b.png"), "--quiet"]) == 0
    assert Image.open(tmp_path / "b.png").size == (80, 60)
    assert main(["stylize", str(big), "--model", MODEL, "-o", str(tmp_path / "c.png"), "--quiet"]) == 0
    assert Image.open(tmp_path / "c.png").size == (400, 300)


def test_init_model_honours_device_precision_and_preset_size(tmp_path, photo_dir, tiny_weights, monkeypatch):
    opened = []
    real = feedforward.open_model

    def spy(name, **kw):
        opened.append(kw)
        return real(name, **kw)

    monkeypatch.setattr(feedforward, "open_model", spy)
    style = tmp_path / "s.png"
    Image.open(ROOT / "examples" / "starry_night.jpg").convert("RGB").resize((48, 48)).save(style)
    big = tmp_path / "big.png"
    Image.open(photo_dir / "p.png").resize((400, 300)).save(big)
    out = tmp_path / "h.png"
    assert main(["stylize", str(big), str(style), "--init-model", MODEL, "-o", str(out),
                 "--preset", "fast", "--scales", "1", "--iterations", "1", "--weights", str(tiny_weights),
                 "--device", "cpu", "--precision", "fp32", "--quiet"]) == 0
    assert opened == [{"device": "cpu", "precision": "fp32", "weights": str(tiny_weights)}]
    assert Image.open(out).size == (256, 192)
    side = json.loads((tmp_path / "h.png.json").read_text())
    assert side["config"]["size"] == 256 and side["config"]["precision"] == "fp32"
