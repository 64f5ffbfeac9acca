"""Issue 27 (hardening, round three): what a day of hostile use found in training, model files,
sizes, video timing and Ray, each as a test that failed before the fix.

Ctrl-C during a training is in test_interrupts.py (it needs a real process and a real signal).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from restyle.cli.main import main
from restyle.errors import InputError
from restyle.networks.style_training import TrainConfig, checkpoint_path, train
from tinynets import STYLE_TRAIN, style_train_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


# --- 2. --resume with another painting or other photos is refused ----------------------------------


def test_resume_refuses_another_painting_and_other_photos(tmp_path, photos, tiny_weights):
    out = tmp_path / "m.pt"
    starry, scream = EXAMPLES / "starry_night.jpg", tmp_path / "the_scream.png"
    Image.open(starry).convert("RGB").rotate(90).save(scream)
    train(starry, photos, out, style_train_config(steps=2), weights=tiny_weights)
    before = checkpoint_path(out).read_bytes()
    with pytest.raises(InputError, match=r"trained on painting starry_night.jpg .*not the_scream.png"):
        train(scream, photos, out, style_train_config(steps=4), weights=tiny_weights, resume=True)
    Image.open(photos / "p0.jpg").rotate(180).save(photos / "p0.jpg")  # same names, another picture
    with pytest.raises(InputError, match="other photos"):
        train(starry, photos, out, style_train_config(steps=4), weights=tiny_weights, resume=True)
    assert checkpoint_path(out).read_bytes() == before  # nothing was written


def test_cli_resume_with_another_painting_exits_2_in_one_line(tmp_path, photos, tiny_weights, capsys):
    out = tmp_path / "m.pt"
    scream = tmp_path / "scream.png"
    Image.open(EXAMPLES / "starry_night.jpg").convert("RGB").rotate(90).save(scream)
    common = ["--photos", str(photos), "-o", str(out), "--weights", str(tiny_weights), "--size", "32",
              "--batch-size", "2", "--style-size", "48", "--holdout", "1", "--preview-every", "0",
              "--widths", "4,8", "--res-blocks", "1", "--precision", "fp32", "--quiet"]
    assert main(["train", str(EXAMPLES / "starry_night.jpg"), *common, "--steps", "2"]) == 0
    capsys.readouterr()
    assert main(["train", str(scream), *common, "--steps", "4", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "starry_night.jpg" in err and "scream.png" in err, err


# --- 5, 9 and 13: model files and weights that are not what they claim: one line, exit 2 -------------


class _Payload:
    """Pickled as a call to open(MARKER, "w"): loading it with pickle would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _tiny_style_model(path: Path) -> Path:
    from restyle.models.modelfile import model_payload, save_model_file
    from restyle.models.transformer import TransformerConfig, TransformerNet

    torch.manual_seed(0)
    net = TransformerNet(TransformerConfig((4, 8), 1, 3))
    return save_model_file(model_payload(net, style={"name": "tiny", "sha256": "0" * 64}, training={}), path)


def _tiny_upscaler(path: Path, kind: str = "model") -> Path:
    from restyle.models.modelfile import model_payload, save_model_file
    from restyle.models.upscaler import Upscaler, UpscalerConfig

    extra = {"optimizer": {}, "scheduler": None} if kind == "checkpoint" else {}
    return save_model_file(model_payload(Upscaler(UpscalerConfig(2, 4, 1)), family="upscaler", kind=kind,
                                         training={}, extra=extra), path)


@pytest.fixture
def photo(tmp_path):
    p = tmp_path / "photo.png"
    Image.open(EXAMPLES / "tubingen.jpg").convert("RGB").resize((64, 48)).save(p)
    return p


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def _commands(path: Path, photo: Path, tmp_path: Path):
    """Every command that reads a model file, a checkpoint or weights, reading `path`."""
    out = tmp_path / "out.png"
    photos = tmp_path / "ph"
    photos.mkdir(exist_ok=True)
    for i in range(3):
        Image.open(photo).save(photos / f"p{i}.png")
    ckpt_out = tmp_path / "up.pt"
    return {
        "stylize --weights": ["stylize", str(photo), str(photo), "-o", str(out), "--weights", str(path)],
        "stylize --model": ["stylize", str(photo), "--model", str(path), "-o", str(out)],
        "export": ["export", str(path), "-o", str(tmp_path / "m.onnx")],
        "upscale --model": ["upscale", str(photo), "-o", str(out), "--scale", "2", "--model", str(path)],
        "train-upscaler --resume": ["train-upscaler", "--photos", str(photos), "-o", str(ckpt_out), "--resume",
                                    "--steps", "2", "--crop", "16"],
    }


def _place(command: str, path: Path, tmp_path: Path) -> None:
    if command == "train-upscaler --resume":  # the file is the checkpoint it resumes
        (tmp_path / "up.ckpt.pt").write_bytes(path.read_bytes())


@pytest.mark.parametrize("command", ["stylize --weights", "stylize --model", "export", "upscale --model",
                                     "train-upscaler --resume"])
def test_a_file_holding_code_is_refused_in_one_line_without_torchs_advice(tmp_path, photo, capsys, command):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "restyle.feedforward", "state_dict": _Payload(marker)}, evil)
    _place(command, evil, tmp_path)
    assert main(_commands(evil, photo, tmp_path)[command]) == 2
    err = _one_line(capsys)
    assert "it holds code or objects restyle does not load" in err, err
    assert "weights_only" not in err and "arbitrary code" not in err
    assert not marker.exists() and not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("command", ["stylize --model", "export", "upscale --model", "train-upscaler --resume"])
def test_a_truncated_model_or_checkpoint_says_so(tmp_path, photo, capsys, command):
    good = tmp_path / "good.pt"
    (_tiny_upscaler if command in ("upscale --model", "train-upscaler --resume") else _tiny_style_model)(good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:-30])  # torch: "[Errno 22] Invalid argument"
    _place(command, cut, tmp_path)
    assert main(_commands(cut, photo, tmp_path)[command]) == 2
    err = _one_line(capsys)
    assert "truncated or damaged" in err and "Errno" not in err, err


def test_nan_weights_are_refused_when_loading(tmp_path, photo, capsys):
    from restyle.networks.feedforward import load_model
    from restyle.networks.upscale import load_upscaler
    from restyle.models.weights import load_weights
    from conftest import tiny_torchvision_state

    style = _tiny_style_model(tmp_path / "style.pt")
    payload = torch.load(style, weights_only=True)
    key = next(k for k in payload["state_dict"] if k.endswith("weight"))
    payload["state_dict"][key][0] = float("nan")
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(InputError, match=f"tensor state_dict.{key} holds NaN"):
        load_model(tmp_path / "nan.pt")
    assert main(["stylize", str(photo), "--model", str(tmp_path / "nan.pt"), "-o", str(tmp_path / "o.png")]) == 2
    assert "NaN" in _one_line(capsys) and not (tmp_path / "o.png").exists()

    up = torch.load(_tiny_upscaler(tmp_path / "up.pt"), weights_only=True)
    next(iter(up["state_dict"].values())).fill_(float("inf"))
    torch.save(up, tmp_path / "inf_up.pt")
    with pytest.raises(InputError, match="NaN or infinite"):
        load_upscaler(str(tmp_path / "inf_up.pt"))

    vgg = tiny_torchvision_state()
    vgg["features.0.bias"][1] = float("nan")
    torch.save(vgg, tmp_path / "nan_vgg.pth")
    with pytest.raises(InputError, match="features.0.bias holds NaN"):
        load_weights(tmp_path / "nan_vgg.pth")


# --- 6. sizes and memory on the network path, upscale and video: refused before any allocation ------


@pytest.mark.parametrize("size", ["100000", "20000", "31", "0"])
def test_network_size_rule_is_the_optimisers(tmp_path, photo, capsys, size):
    model = _tiny_style_model(tmp_path / "m.pt")
    folder = tmp_path / "folder"
    folder.mkdir()
    Image.open(photo).save(folder / "a.png")
    for source, out in ((photo, tmp_path / "o.png"), (folder, tmp_path / "outs")):
        assert main(["stylize", str(source), "--model", str(model), "--size", size, "-o", str(out)]) == 2
        err = _one_line(capsys)
        assert f"size {size} is out of range; it must be an integer in [32, 8192]" in err, err
        assert not out.exists()


@pytest.fixture
def small_budget(monkeypatch):
    """A machine whose planner budget (85% of what is available) leaves 250 MB beside the runtime."""
    import restyle.optimiser.memory as memory

    available = int((memory.RUNTIME_BASE + 250 * 2**20) / memory.BUDGET_FRACTION)
    monkeypatch.setattr(memory, "available_bytes", lambda device_type="cpu": available)


def test_network_memory_estimate_refuses_what_cannot_fit(tmp_path, capsys, small_budget):
    from restyle.errors import ResourceError
    from restyle.networks.feedforward import load_model
    from restyle.optimiser.memory import network_estimate

    model = load_model(_tiny_style_model(tmp_path / "m.pt"))
    big = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000), "gray").save(big)
    with pytest.raises(ResourceError, match=r"3000x2000 through the network needs about .* GB, over the memory budget"):
        model.check_size(3000, 2000)
    assert main(["stylize", str(big), "--model", str(model.path), "-o", str(tmp_path / "o.png")]) == 1
    assert "over the memory budget" in _one_line(capsys)
    model.check_size(400, 300)  # small pictures still fit
    # Tiled, the network's part stops growing with the picture; the picture's buffers do not.
    assert network_estimate(8000, 8000, (12, 24, 48), 1200**2) < network_estimate(4000, 4000, (12, 24, 48), 4000**2)


def test_upscale_memory_estimate_refuses_before_allocating(tmp_path, capsys, small_budget):
    big = tmp_path / "big.png"
    Image.new("RGB", (2000, 1500), "gray").save(big)
    assert main(["upscale", str(big), "-o", str(tmp_path / "o.png"), "--scale", "4"]) == 1
    err = _one_line(capsys)
    assert "2000x1500 enlarged 4x needs about" in err and "use a smaller picture" in err, err


def test_video_with_a_model_checks_the_frame_size_before_any_frame(tmp_path, capsys, small_budget):
    pytest.importorskip("av")
    from videoutil import make_clip, pan_frames

    clip = make_clip(tmp_path / "c.mp4", frames=pan_frames(width=2400, height=1800, frames=2, step=8), audio=False)
    out = tmp_path / "o.mp4"
    model = _tiny_style_model(tmp_path / "m.pt")
    assert main(["video", str(clip), "--model", str(model), "-o", str(out), "--size", "2400"]) == 1
    assert "2400x1800 through the network needs about" in _one_line(capsys)
    assert not out.exists() and not (tmp_path / "o.mp4.frames").exists()


# --- 7. pictures too small for the network: the rule, exit 2, InputError in Python ------------------


@pytest.mark.parametrize("size", [(1, 1), (300, 1), (40, 20)])
def test_a_picture_too_small_for_the_network_is_refused_with_the_rule(tmp_path, capsys, size):
    import restyle

    tiny = tmp_path / "tiny.png"
    Image.new("RGB", size, "red").save(tiny)
    model_path = _tiny_style_model(tmp_path / "m.pt")
    assert main(["stylize", str(tiny), "--model", str(model_path), "-o", str(tmp_path / "o.png")]) == 2
    err = _one_line(capsys)
    assert f"{size[0]}x{size[1]} px is too small" in err and "at least 32 px on the short side" in err, err
    model = restyle.load_model(model_path)
    with pytest.raises(InputError, match="at least 32 px"):
        model(tiny)
    with pytest.raises(InputError, match="at least 32 px"):
        model.stylize_tensor(torch.zeros(1, 3, size[1], size[0]))


# --- 3 and 4. a clip's timing is kept: no --fps re-timing, variable rates and GIF pauses survive -----


def _vfr_mkv(path: Path, frames, gaps_ms) -> Path:
    import av
    from fractions import Fraction

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as box:
        v = box.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.codec_context.time_base = Fraction(1, 1000)
        t = 0
        for rgb, gap in zip(frames, gaps_ms):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts, f.time_base = t, Fraction(1, 1000)
            box.mux(v.encode(f))
            t += gap
        box.mux(v.encode(None))
    return path


def _shown_ms(path: Path):
    """Each decoded frame's time in ms from the first."""
    import av

    with av.open(str(path)) as box:
        s = box.streams.video[0]
        ts = [float(f.pts * s.time_base) for f in box.decode(s)]
    return [round((t - ts[0]) * 1000) for t in ts]


@pytest.fixture
def network(tmp_path):
    return str(_tiny_style_model(tmp_path / "net.pt"))


def test_fps_is_refused_for_a_clip_and_kept_for_frame_folders(tmp_path, network, capsys):
    pytest.importorskip("av")
    from videoutil import clip_stats, make_clip, pan_frames

    clip = make_clip(tmp_path / "c.mp4", frames=pan_frames(64, 48, 20), fps=10)  # 2 s with 2 s of sound
    assert main(["video", str(clip), "--model", network, "-o", str(tmp_path / "o.mp4"), "--fps", "5"]) == 2
    err = _one_line(capsys)
    assert "fps 5 is for a folder of frames" in err and "c.mp4 is a clip" in err, err
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "o.mp4.frames").exists()
    # Without --fps the clip keeps its length and its sound.
    assert main(["video", str(clip), "--model", network, "-o", str(tmp_path / "o.mp4"), "--quiet"]) == 0
    n, fps, dur, audio, secs = clip_stats(tmp_path / "o.mp4")
    assert n == 20 and fps == 10 and abs(secs - 2.0) < 0.1


def test_variable_frame_rate_is_kept(tmp_path, network):
    pytest.importorskip("av")
    from videoutil import pan_frames

    gaps = [20, 100] * 10  # 20 frames alternating 20 and 100 ms
    src = _vfr_mkv(tmp_path / "vfr.mkv", pan_frames(64, 48, 20), gaps)
    want = _shown_ms(src)
    assert want[:4] == [0, 20, 120, 140]
    for suffix in (".mp4", ".webm"):
        out = tmp_path / f"o{suffix}"
        assert main(["video", str(src), "--model", network, "-o", str(out), "--quiet"]) == 0
        got = _shown_ms(out)
        assert len(got) == 20 and max(abs(a - b) for a, b in zip(got, want)) <= 1, (suffix, got)


def test_a_gifs_pause_is_kept(tmp_path, network):
    pytest.importorskip("av")
    from restyle.video import NetworkFrames, VideoConfig, stylize_video
    from videoutil import pan_frames

    gif = tmp_path / "pause.gif"
    ims = [Image.fromarray(f) for f in pan_frames(64, 48, 10)]
    ims[0].save(gif, save_all=True, append_images=ims[1:], duration=[70] * 5 + [200] + [70] * 4, loop=0)
    want = _shown_ms(gif)
    assert want[6] - want[5] == 200
    # The library (as the web app calls it) and the CLI.
    import restyle

    model = restyle.load_model(network)
    stylize_video(gif, tmp_path / "lib.mp4", NetworkFrames(model.stylize_tensor), VideoConfig())
    assert main(["video", str(gif), "--model", network, "-o", str(tmp_path / "cli.mp4"), "--quiet"]) == 0
    for out in ("lib.mp4", "cli.mp4"):
        got = _shown_ms(tmp_path / out)
        assert got == want, (out, got, want)


# --- 13. small messages: the API's train() and TrainConfig, upscale --tile ----------------------------


@pytest.mark.parametrize("args, words", [
    ((EXAMPLES / "starry_night.jpg", "PHOTOS", "OUT", None), "photos"),  # None: the defaults, then the photos
    ((EXAMPLES / "starry_night.jpg", "PHOTOS", "OUT", {"size": 64, "bogus": 1}), "bogus"),
    ((EXAMPLES / "starry_night.jpg", "PHOTOS", "OUT", "fast"), "must be a TrainConfig, a dict"),
    ((123, "PHOTOS", "OUT"), "style 123 must be a path"),
])
def test_train_api_refuses_bad_arguments_with_input_error(tmp_path, args, words):
    import restyle

    args = tuple(tmp_path / "nowhere" if a == "PHOTOS" else tmp_path / "m.pt" if a == "OUT" else a for a in args)
    with pytest.raises(InputError, match=words):
        restyle.train(*args)


def test_train_api_takes_a_dict_config(tmp_path, photos, tiny_weights):
    import restyle

    cfg = dict(STYLE_TRAIN, steps=1, widths=[4, 8])  # as JSON gives it: a list
    assert restyle.train(EXAMPLES / "starry_night.jpg", photos, tmp_path / "m.pt", cfg, weights=tiny_weights).is_file()


@pytest.mark.parametrize("kw", [dict(size=1_000_000), dict(style_size=100_000), dict(size=31), dict(style_size=0)])
def test_train_config_sizes_follow_the_optimisers_rule(kw):
    with pytest.raises(InputError, match=r"must be an integer in \[32, 8192\]"):
        TrainConfig(**kw)


def test_upscale_tile_0_names_the_tile_not_an_overlap(tmp_path, photo, capsys):
    assert main(["upscale", str(photo), "-o", str(tmp_path / "o.png"), "--tile", "0"]) == 2
    err = _one_line(capsys)
    assert "tile 0 is too small; it must be at least 16 px" in err and "overlap" not in err, err


# --- 8. an unreachable --ray address: one line, exit 2, in seconds -----------------------------------


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_unreachable_ray_address_is_one_line_in_seconds(tmp_path, photo, capsys, scheme):
    import socket
    import time

    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"{scheme}127.0.0.1:{port}"
    model = _tiny_style_model(tmp_path / "m.pt")
    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(photo).save(folder / "a.png")
    t0 = time.monotonic()
    assert main(["stylize", str(folder), "--model", str(model), "-o", str(tmp_path / "out"), "--ray", address]) == 2
    assert time.monotonic() - t0 < 15
    err = _one_line(capsys)
    assert f"cannot reach a Ray cluster at {address}" in err and "192.0.2" not in err, err


def test_an_address_that_does_not_answer_times_out(monkeypatch):
    import socket

    from restyle.batch.cluster import check_reachable

    def silent(addr, timeout):
        raise socket.timeout("timed out")

    monkeypatch.setattr(socket, "create_connection", silent)
    with pytest.raises(InputError, match=r"cannot reach a Ray cluster at 192.0.2.1:6379 \(no answer within 5 s\)"):
        check_reachable("192.0.2.1:6379")
