"""Video: I/O round trips on tiny generated clips, resume after a kill, bad inputs, the temporal term."""

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("av")
pytest.importorskip("cv2")

from restyle.cli.main import main  # noqa: E402
from restyle.errors import InputError  # noqa: E402
from restyle.video import NetworkFrames, OptimiserFrames, VideoConfig, stylize_video  # noqa: E402
from restyle.video.flow import FlowEstimator, gray, reliable, warp  # noqa: E402
from restyle.video.io import probe, read_frames  # noqa: E402
from restyle.video.temporal import TemporalTerm, temporal_blend, temporal_loss  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from tinynets import frame_net  # noqa: E402
from videoutil import clip_stats, make_clip, pan_frames  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_roundtrip_keeps_frames_fps_duration_and_audio(clip, tmp_path):
    src = clip_stats(clip)
    out = tmp_path / "out.mp4"
    events = []
    r = stylize_video(clip, out, NetworkFrames(frame_net(), 4.0), callback=events.append)
    n, fps, dur, audio, secs = clip_stats(out)
    assert (n, fps, audio) == (10, Fraction(10), "aac") == (src[0], src[1], src[3])
    assert abs(dur - src[2]) <= 1 / 10 and abs(secs - src[4]) < 0.03
    assert r.frames == 10 and not (tmp_path / "out.mp4.frames").exists()  # work folder removed on success
    done = [e for e in events if type(e).__name__ == "FrameDone"]
    assert [e.index for e in done] == list(range(10)) and type(events[-1]).__name__ == "VideoDone"


def test_webm_output_reencodes_audio_to_opus(clip, tmp_path):
    out = tmp_path / "out.webm"
    stylize_video(clip, out, NetworkFrames(frame_net(), 0.0))
    n, fps, dur, audio, secs = clip_stats(out)
    assert (n, fps, audio) == (10, Fraction(10), "opus") and abs(dur - 1.0) <= 0.1 and abs(secs - 1.0) < 0.05


def test_start_duration_and_size(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", pan_frames(96, 64, 20))
    out = tmp_path / "cut.mp4"
    stylize_video(clip, out, NetworkFrames(frame_net(), 4.0), VideoConfig(size=75, start=0.5, duration=0.8))
    n, fps, dur, audio, secs = clip_stats(out)
    assert n == 8 and fps == 10 and abs(dur - 0.8) <= 0.1 and abs(secs - 0.8) < 0.05
    with __import__("av").open(str(out)) as box:
        v = box.streams.video[0]
        assert (v.width, v.height) == (74, 50)  # long side 75 -> even sides for 4:2:0


@pytest.mark.parametrize("suffix,codec", [(".mov", "libx264"), (".mkv", "libx264"), (".avi", "mpeg4"),
                                          (".webm", "libvpx-vp9")])
def test_reads_containers(tmp_path, suffix, codec):
    clip = make_clip(tmp_path / f"in{suffix}", codec=codec, audio=suffix != ".avi",
                     audio_codec="libopus" if suffix == ".webm" else "aac")
    info = probe(clip)
    assert (info.width, info.height) == (64, 48)
    assert len(list(read_frames(info, info.out_size()))) == 10


def test_reads_animated_gif_and_frame_folder(tmp_path):
    frames = pan_frames(frames=6)
    gif = tmp_path / "in.gif"
    Image.fromarray(frames[0]).save(gif, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]],
                                    duration=100, loop=0)
    out = tmp_path / "gif.mp4"
    stylize_video(gif, out, NetworkFrames(frame_net(), 4.0))
    assert clip_stats(out)[:2] == (6, Fraction(10))
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, f in enumerate(frames):  # frame_2 must come before frame_10: numeric order, not text order
        Image.fromarray(f).save(folder / f"frame_{k * 5}.png")
    info = probe(folder)
    assert [p.name for p in info.frame_files][:3] == ["frame_0.png", "frame_5.png", "frame_10.png"]
    got = list(read_frames(info, info.out_size()))
    assert len(got) == 6 and np.array_equal(got[2], frames[2])
    out = tmp_path / "folder.webm"
    stylize_video(folder, out, NetworkFrames(frame_net(), 0.0), VideoConfig(fps=12))
    n, fps, _, audio, _ = clip_stats(out)
    assert (n, fps, audio) == (6, 12, None)


RESUME_SCRIPT = """
import sys, time, torch
sys.path.insert(0, {tests!r})
from tinynets import frame_net
from restyle.video import NetworkFrames, VideoConfig, stylize_video
net = frame_net()
def slow(x):
    time.sleep(float(sys.argv[3]))
    return net(x)
stylize_video(sys.argv[1], sys.argv[2], NetworkFrames(slow, 4.0), VideoConfig(keep_frames=True))
"""


def test_resume_after_kill_gives_identical_frames(clip, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT.format(tests=str(Path(__file__).parent)))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out = tmp_path / "killed.mp4"
    work = tmp_path / "killed.mp4.frames"
    proc = subprocess.Popen([sys.executable, str(script), str(clip), str(out), "0.4"], env=env)
    deadline = time.time() + 300  # a loaded machine takes a while to import torch
    while len(list(work.glob("*.png"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(list(work.glob("0*.png")))
    assert 3 <= partial < 10 and not out.exists()
    events = []
    from restyle.video.pipeline import FrameDone

    r = stylize_video(clip, out, NetworkFrames(frame_net(), 4.0), VideoConfig(keep_frames=True), callback=events.append)
    assert r.resumed == partial and sum(e.resumed for e in events if isinstance(e, FrameDone)) == partial
    ref = tmp_path / "ref.mp4"
    stylize_video(clip, ref, NetworkFrames(frame_net(), 4.0), VideoConfig(keep_frames=True))
    for k in range(10):
        a = np.asarray(Image.open(work / f"{k:06d}.png"))
        b = np.asarray(Image.open(tmp_path / "ref.mp4.frames" / f"{k:06d}.png"))
        assert np.array_equal(a, b), f"frame {k} differs after resume"
    assert clip_stats(out) == clip_stats(ref)


def test_work_folder_of_another_run_is_refused(clip, tmp_path):
    out = tmp_path / "out.mp4"
    stylize_video(clip, out, NetworkFrames(frame_net(), 4.0), VideoConfig(keep_frames=True))
    with pytest.raises(InputError, match="another run.*temporal_weight|differs in: stylizer"):
        stylize_video(clip, out, NetworkFrames(frame_net(), 1.0))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not empty"):
        stylize_video(clip, tmp_path / "o2.mp4", NetworkFrames(frame_net(), 4.0), work_dir=foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


# --- bad input: one line, exit 2 ----------------------------------------------


def _bad_cases(tmp_path, clip):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    audio_only = tmp_path / "tone.mp4"
    import av

    with av.open(str(audio_only), "w") as box:
        a = box.add_stream("aac", rate=44100)
        a.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 44100, 0
        box.mux(a.encode(frame))
        box.mux(a.encode(None))
    empty = tmp_path / "empty"
    empty.mkdir()
    style = tmp_path / "s.png"
    Image.fromarray(pan_frames()[0]).save(style)
    o = str(tmp_path / "o.mp4")
    return {
        "not a video": ([str(text), str(style), "-o", o], "not a video"),
        "unknown input suffix": ([str(tmp_path / "s.png"), str(style), "-o", o], "not a video this reads"),
        "no video stream": ([str(audio_only), str(style), "-o", o], "no video stream"),
        "zero frames (empty folder)": ([str(empty), str(style), "-o", o], "no numbered frames"),
        "zero frames (start past the end)": ([str(clip), str(style), "-o", o, "--start", "5"], "past the end"),
        "size over the limit": ([str(clip), str(style), "-o", o, "--size", "10000"], "size 10000 is out of range"),
        "output is the input": ([str(clip), str(style), "-o", str(clip)], "same file as input"),
        "unknown output codec": ([str(clip), str(style), "-o", str(tmp_path / "o.ogv")], "suffix '.ogv'"),
        "missing input": ([str(tmp_path / "nope.mp4"), str(style), "-o", o], "no such file"),
        "no style and no model": ([str(clip), "-o", o], "style image"),
        "negative temporal weight": ([str(clip), str(style), "-o", o, "--temporal-weight", "-1"], "must be >= 0"),
    }


def test_bad_inputs_exit_2_with_one_line(clip, tmp_path, capsys):
    before = clip.read_bytes()
    for name, (argv, message) in _bad_cases(tmp_path, clip).items():
        code = main(["video", *argv, "--quiet"])
        err = capsys.readouterr().err
        assert code == 2, name
        assert err.count("\n") == 1 and message in err, (name, err)
    assert clip.read_bytes() == before and not (tmp_path / "o.mp4").exists()


# --- the threads: read ahead, write behind, the cores shared --------------------------


def test_read_ahead_keeps_order_passes_errors_and_stops_its_thread():
    import threading

    from restyle.video.background import ReadAhead

    with ReadAhead(iter(range(50)), depth=3) as items:
        assert list(items) == list(range(50))

    def failing():
        yield 1
        raise ValueError("decoder broke")

    with ReadAhead(failing()) as items:
        got = []
        with pytest.raises(ValueError, match="decoder broke"):
            for x in items:
                got.append(x)
        assert got == [1]

    closed = threading.Event()

    def endless():
        try:
            k = 0
            while True:
                yield k
                k += 1
        finally:
            closed.set()

    ahead = ReadAhead(endless(), depth=2)
    assert next(iter(ahead)) == 0
    ahead.close()  # the consumer stopped early: the producer is closed on its own thread
    assert closed.is_set() and not ahead._thread.is_alive()


def test_write_behind_runs_jobs_in_order_and_raises_a_failed_one():
    from restyle.video.background import WriteBehind

    done = []
    with WriteBehind(depth=2) as behind:
        for k in range(20):
            behind.submit(lambda k=k: (time.sleep(0.001 * (k % 3)), done.append(k)))
        behind.finish()
    assert done == list(range(20))

    def broken():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        with WriteBehind(depth=2) as behind:
            behind.submit(broken)
            for _ in range(5):
                time.sleep(0.01)
                behind.submit(lambda: None)
            behind.finish()


def test_thread_share_sets_and_restores_torch_and_opencv_threads():
    import cv2

    from restyle.video.background import cpu_cores, thread_share

    before = torch.get_num_threads(), cv2.getNumThreads()
    with thread_share(1):
        assert torch.get_num_threads() == 1 and cv2.getNumThreads() == max(1, cpu_cores() - 1)
    assert (torch.get_num_threads(), cv2.getNumThreads()) == before
    with thread_share(None):  # the optimiser engine: left alone
        assert (torch.get_num_threads(), cv2.getNumThreads()) == before
    assert NetworkFrames(frame_net(), threads=3).threads == 3
    assert NetworkFrames(frame_net()).threads == max(1, cpu_cores() // 2)
    with pytest.raises(InputError, match="threads 0 must be >= 1"):
        NetworkFrames(frame_net(), threads=0)


# --- flow, warping, the temporal term --------------------------------------------


def test_warp_undoes_a_known_shift_and_mask_flags_new_pixels():
    frames = pan_frames(64, 48, 2, step=3)
    a, b = frames  # the camera pans right: b(p) = a(p + (3, 0))
    flow = np.zeros((48, 64, 2), np.float32)
    flow[..., 0] = 3.0  # backward flow, from b to a
    assert np.array_equal(warp(a, flow)[:, :61], b[:, :61].astype(np.float32))
    m = reliable(flow, -flow)
    assert m[:, :61].all() and not m[:, 62:].any()  # the strip that enters the frame is new
    est = FlowEstimator()
    bwd, mask = est.backward_and_mask(gray(a), gray(b))
    assert abs(float(np.median(bwd[..., 0])) - 3.0) < 0.2


def test_temporal_loss_and_gradient_against_a_naive_reference():
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64) * 255).requires_grad_(True)
    w = torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64) * 255
    c = (torch.rand(2, 1, 4, 5, generator=g) > 0.4).double()
    loss = temporal_loss(x, w, c)
    loss.backward()
    n, ch, h, wd = x.shape
    ref, grad = 0.0, torch.zeros_like(x)
    for i in range(n):  # Ruder et al. Eq. 7 term by term, and its derivative 2 c (x - w) / D, batch mean
        for k in range(ch):
            for y in range(h):
                for xx in range(wd):
                    d = float(x[i, k, y, xx].detach() - w[i, k, y, xx])
                    ref += float(c[i, 0, y, xx]) * d * d / (ch * h * wd) / n
                    grad[i, k, y, xx] = 2 * float(c[i, 0, y, xx]) * d / (ch * h * wd) / n
    assert abs(loss.item() - ref) < 1e-6 * ref
    assert torch.allclose(x.grad.double(), grad, rtol=1e-5, atol=1e-9)
    assert torch.autograd.gradcheck(lambda t: temporal_loss(t, w, c), (x.detach().requires_grad_(),))
    assert temporal_loss(x.detach().bfloat16(), w.bfloat16(), c).dtype == torch.float32  # fp32 for bf16 inputs
    # As a term of the objective: no network layers, weight times the same value and gradient.
    from restyle.optimiser.objective import Objective

    objective = Objective([TemporalTerm(30.0, w, c)], net=None)
    x.grad = None
    total, parts = objective(x)
    total.backward()
    assert objective.layers == () and abs(parts["temporal"] - 30 * ref) < 1e-6 * 30 * ref
    assert torch.allclose(x.grad.double(), 30 * grad, rtol=1e-5, atol=1e-9)


def test_blend_is_the_minimiser_of_the_temporal_objective():
    g = torch.Generator().manual_seed(2)
    out, warped = torch.rand(1, 3, 4, 4, generator=g) * 255, torch.rand(1, 3, 4, 4, generator=g) * 255
    mask = (torch.rand(1, 1, 4, 4, generator=g) > 0.5).float()
    y = temporal_blend(out, warped, mask, 3.0).requires_grad_(True)
    (((y - out) ** 2).sum() + 3.0 * (mask * (y - warped) ** 2).sum()).backward()
    assert y.grad.abs().max() < 1e-3
    assert torch.equal(temporal_blend(out, warped, mask, 0.0), out)


def test_temporal_network_mode_cuts_flicker(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", pan_frames(64, 48, 8, step=2), audio=False)
    net = frame_net()
    flicker = torch.Generator().manual_seed(0)

    def noisy(x):  # a network whose output jumps from frame to frame
        return (net(x) + 40 * torch.randn(x.shape, generator=flicker)).clamp(0, 255)

    errors = {}
    for w in (0.0, 4.0):
        out = tmp_path / f"w{w}.mp4"
        stylize_video(clip, out, NetworkFrames(noisy, w), VideoConfig(keep_frames=True))
        f = [np.asarray(Image.open(p)).astype(np.float32) for p in sorted((tmp_path / f"w{w}.mp4.frames").glob("0*.png"))]
        # The pan is 2 px/frame leftwards: out_t(x) should equal out_{t-1}(x + 2); skip the entering edge.
        errors[w] = np.mean([np.abs(f[t][:, 4:-4] - f[t - 1][:, 6:-2]).mean() for t in range(1, len(f))])
    assert errors[4.0] < errors[0.0] / 2, errors


# --- the optimiser engine and the CLI ------------------------------------------


def test_optimiser_later_frames_start_warped_with_fewer_iterations(clip, tmp_path, tiny_weights):
    from restyle.config import StylizeConfig

    style = tmp_path / "s.png"
    Image.fromarray(pan_frames(seed=5)[0]).save(style)
    cfg = StylizeConfig(iterations=6, device="cpu", precision="fp32")
    s = OptimiserFrames([style], cfg, temporal_weight=50.0, weights=tiny_weights)
    stylize_video(clip, tmp_path / "o.mp4", s, VideoConfig(duration=0.4))
    assert s.iterations == [6, 1, 1, 1] and s.later <= 6 // 3
    per_frame = OptimiserFrames([style], cfg, temporal_weight=0.0, later_iterations=2, weights=tiny_weights)
    stylize_video(clip, tmp_path / "p.mp4", per_frame, VideoConfig(duration=0.3))
    assert per_frame.iterations == [6, 6, 6]  # per-frame: every frame from the content, all iterations


def test_optimiser_frames_are_planned_and_tiled_by_the_engines_stage(tmp_path, tiny_weights, monkeypatch):
    """Issue 21: a frame is painted by the engine's own stage (paint_pyramid), not a copy of it: the memory
    planner sees it (a --max-memory it cannot fit is refused before any work, as for a picture) and
    --tile-size tiles it, the temporal term (a pixel term) computed whole."""
    import restyle.optimiser.loop as loop
    from restyle.config import StylizeConfig
    from restyle.errors import ResourceError

    style = tmp_path / "s.png"
    Image.fromarray(pan_frames(seed=5)[0]).save(style)
    cores = []
    real = loop.tile_grid
    monkeypatch.setattr(loop, "tile_grid", lambda h, w, core, *a: cores.append(core) or real(h, w, core, *a))
    clip = make_clip(tmp_path / "wide.mp4", pan_frames(160, 96, 3), audio=False)
    cfg = StylizeConfig(iterations=4, device="cpu", precision="fp32", tile_size=64)
    tiled = OptimiserFrames([style], cfg, temporal_weight=30.0, weights=tiny_weights)
    stylize_video(clip, tmp_path / "t.mp4", tiled)
    assert tiled.iterations == [4, 1, 1] and cores and set(cores) == {64}  # 160x96 frames in 64 px tiles
    tiny = OptimiserFrames([style], cfg.replace(tile_size=0, max_memory=0.001), weights=tiny_weights)
    with pytest.raises(ResourceError, match="memory budget"):
        stylize_video(clip, tmp_path / "m.mp4", tiny)
    assert tiny.iterations == []


def test_optimiser_first_frame_starts_from_the_paintings_palette(tmp_path, tiny_weights, monkeypatch):
    """With the default --init palette, frame 0 starts from the frame recoloured to the painting, as stylize does."""
    import restyle.optimiser.engine as engine
    from restyle.config import StylizeConfig

    style = tmp_path / "s.png"
    Image.new("RGB", (64, 48), (200, 40, 20)).save(style)
    frame = torch.from_numpy(pan_frames(seed=5)[0]).permute(2, 0, 1)[None].float()
    starts = []
    real = engine.initial_image
    monkeypatch.setattr(engine, "initial_image", lambda *a, **k: starts.append(real(*a, **k)) or starts[-1])
    OptimiserFrames([style], StylizeConfig(iterations=1, device="cpu", precision="fp32"), weights=tiny_weights)(frame, None)
    r, g, b = starts[0][0].reshape(3, -1).mean(1)
    assert r > g + 50 and r > b + 50  # the painting's red; the frame's own colours are not red
    fr, fg, fb = frame[0].reshape(3, -1).mean(1)
    assert not (fr > fg + 50 and fr > fb + 50)


def test_cli_video_optimiser_and_model_flag(clip, tmp_path, tiny_weights, capsys):
    style = tmp_path / "s.png"
    Image.fromarray(pan_frames(seed=5)[0]).save(style)
    out = tmp_path / "o.webm"
    code = main(["video", str(clip), str(style), "-o", str(out), "--weights", str(tiny_weights), "--iterations", "3",
                 "--optimizer", "adam", "--lr", "2",
                 "--frame-iterations", "1", "--duration", "0.3", "--temporal-weight", "10", "--device", "cpu",
                 "--work-dir", str(tmp_path / "wd"), "--keep-frames", "--flow", "fast", "--crf", "40"])
    captured = capsys.readouterr()
    assert code == 0 and "3 frames" in captured.out and "frame" in captured.err  # the bar went to stderr
    assert clip_stats(out)[0] == 3 and len(list((tmp_path / "wd").glob("0*.png"))) == 3
    manifest = json.loads((tmp_path / "wd" / "manifest.json").read_text())
    assert manifest["stylizer"]["temporal_weight"] == 10.0 and manifest["stylizer"]["later_iterations"] == 1
    code = main(["video", str(clip), "--model", "nope", "-o", str(tmp_path / "m.mp4"), "--quiet"])
    assert code == 2


def test_cli_video_with_a_model(clip, tmp_path, monkeypatch, capsys):
    import types

    calls = []

    def load_model(spec, device, precision):
        calls.append((spec, str(device), precision))
        return types.SimpleNamespace(stylize_tensor=frame_net(), sha256="abc", precision=precision)

    monkeypatch.setattr("restyle.networks.feedforward.load_model", load_model)
    out = tmp_path / "m.mp4"
    code = main(["video", str(clip), "--model", "starry", "-o", str(out), "--keep-frames", "--quiet",
                 "--device", "cpu", "--precision", "fp32"])
    assert code == 0 and calls == [("starry", "cpu", "fp32")]
    assert clip_stats(out)[0] == 10 and clip_stats(out)[3] == "aac"
    manifest = json.loads((tmp_path / "m.mp4.frames" / "manifest.json").read_text())
    assert manifest["stylizer"] == {"engine": "network", "model": "starry sha256:abc", "temporal_weight": 4.0}
    code = main(["video", str(clip), str(tmp_path / "s.png"), "--model", "starry", "-o", str(out), "--quiet"])
    assert code == 2 and "not both" in capsys.readouterr().err
