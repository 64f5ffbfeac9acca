"""Batch mode on a local Ray cluster: a head and one more node on this machine, one CPU each.

The cluster starts once for the module (about 10-20 s); every pair uses the tiny random
network at 80x64 px, and the reference is the local loop at the actors' thread count (1),
since CPU results depend on the number of threads.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

ray = pytest.importorskip("ray")

from restyle.batch.local import run_batch  # noqa: E402
from restyle.cli.main import main  # noqa: E402
from restyle.config import StylizeConfig  # noqa: E402
from restyle.batch.distributed import plan_workers, run_batch_ray  # noqa: E402
from restyle.events import BatchProgress, PairStarted  # noqa: E402
from tinynets import style_model_file, style_train_config  # noqa: E402

pytestmark = pytest.mark.ray

STORE = 80 * 2**20  # bytes of object store per node (Ray's floor is 75 MB)
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CFG = StylizeConfig(size=80, iterations=24, scales=(40, 80))


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True,
                head_node_args={"num_cpus": 1, "object_store_memory": STORE, "include_dashboard": False})
    c.add_node(num_cpus=1, object_store_memory=STORE)
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def batch_root(tmp_path_factory):
    """Four 80x64 crops of the example photo, a corrupt 'photo' and two styles."""
    root = tmp_path_factory.mktemp("batch")
    src = Image.open(EXAMPLES / "tubingen.jpg").convert("RGB")
    (root / "photos").mkdir()
    for i in range(4):
        src.crop((i * 60, 0, i * 60 + 400, 320)).resize((80, 64)).save(root / "photos" / f"p{i}.png")
    (root / "photos" / "broken.jpg").write_bytes(b"not a jpeg")
    style = Image.open(EXAMPLES / "starry_night.jpg").convert("RGB").resize((64, 64))
    style.save(root / "s1.png")
    style.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "s2.png")
    return root


@pytest.fixture(scope="module")
def local_run(batch_root, tiny_weights):
    """The reference: the local loop with one thread, as each Ray worker has."""
    out = batch_root / "local"
    out.mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = run_batch([batch_root / "photos"], [batch_root / "s1.png", batch_root / "s2.png"], out, CFG,
                           weights=tiny_weights)
    finally:
        torch.set_num_threads(threads)
    return out, report


def pngs(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def main_on_one_thread(argv):
    """The CLI here with one torch thread, each Ray worker's thread count (CPU results depend on it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(argv)
    finally:
        torch.set_num_threads(threads)


def test_plan_workers_one_per_gpu_else_per_n_cores():
    assert plan_workers([{"CPU": 16, "GPU": 2}, {"CPU": 8, "GPU": 1}]) == (3, 8, 1)  # the cores shared by the GPUs
    assert plan_workers([{"CPU": 16, "GPU": 2}], cpus_per_worker=4, workers=1) == (1, 4, 1)
    assert plan_workers([{"CPU": 16}, {"CPU": 6}]) == (5, 4, 0)  # 4 + 1 workers of 4 cores
    assert plan_workers([{"CPU": 1}, {"CPU": 1}]) == (2, 1, 0)
    assert plan_workers([{"CPU": 16}], cpus_per_worker=2, workers=3) == (3, 2, 0)
    with pytest.raises(Exception, match="no node with 8"):
        plan_workers([{"CPU": 4}], cpus_per_worker=8)


def test_killed_worker_retried_and_outputs_identical_to_local(cluster, batch_root, tiny_weights, local_run):
    ref_dir, ref = local_run
    assert ref.count("done") == 8 and ref.count("failed") == 2
    out = batch_root / "ray"
    out.mkdir()
    killed, starts, armed = [], [], [True]  # killed: the PairStarted events whose worker was killed

    def kill_one_mid_batch(event):
        if isinstance(event, PairStarted):
            starts.append(event)
            if armed[0] and event.index >= 2 and event.attempt == 1:  # a pair mid-batch, as it starts
                armed[0] = False
                killed.append(event)
                os.kill(event.pid, signal.SIGKILL)
        elif isinstance(event, BatchProgress) and event.outcome is not None and killed:
            # That pair was done before the kill landed (the worker died idle): try the next one.
            if event.outcome.task.index == killed[-1].index and event.outcome.attempts == 1 and len(killed) < 4:
                armed[0] = True

    report = run_batch_ray([batch_root / "photos"], [batch_root / "s1.png", batch_root / "s2.png"], out, CFG,
                           weights=tiny_weights, callback=kill_one_mid_batch)

    # Every output there and byte-identical to the local run's; the corrupt photo failed once, alone.
    assert pngs(ref_dir) and pngs(out) == pngs(ref_dir)
    assert {o.task.label: o.status for o in report.outcomes} == {o.task.label: o.status for o in ref.outcomes}
    failed = report.failed
    assert [o.task.label for o in failed] == ["broken.jpg x s1.png", "broken.jpg x s2.png"]
    assert all("broken.jpg: not an image file" in o.error and "\n" not in o.error and o.attempts == 1
               for o in failed)
    assert report.exit_code == 2
    # The kill was seen, reported, and the pair ran again; nothing half-written.
    assert killed and len(report.lost) == 1 and f"pid {killed[-1].pid}" in report.lost[0]
    assert [o.attempts for o in report.outcomes].count(2) == 1
    assert any(s.attempt == 2 for s in starts)
    assert not list(out.glob(".*")), "temporary files left behind"
    # Sidecars say which node and process made each; both nodes worked.
    sides = [json.loads(p.read_text()) for p in sorted(out.glob("*.png.json"))]
    assert len(sides) == 8 and all(s["node"]["ray_node"] and s["node"]["pid"] for s in sides)
    assert len({s["node"]["ray_node"] for s in sides}) == 2
    again = [s for s in sides if s["attempt"] == 2]
    assert len(again) == 1 and again[0]["node"]["pid"] not in {k.pid for k in killed}
    summary = "\n".join(report.summary())
    assert "8 painted" in summary and "2 failed" in summary and "1 worker(s) lost" in summary

    # A rerun skips every complete output and leaves the files alone.
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    rerun = run_batch_ray([batch_root / "photos"], [batch_root / "s1.png", batch_root / "s2.png"], out, CFG,
                          weights=tiny_weights)
    assert rerun.count("skipped") == 8 and rerun.count("failed") == 2 and rerun.count("done") == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


def test_copy_mode_sends_files_through_the_object_store_and_writes_here(cluster, batch_root, tiny_weights, local_run):
    """--ray-copy: for workers that cannot see the driver's folders; same files, same skip rule."""
    ref_dir, _ = local_run
    out = batch_root / "copied"
    out.mkdir()
    report = run_batch_ray([batch_root / "photos"], [batch_root / "s1.png"], out, CFG, weights=tiny_weights, copy=True)
    assert report.count("done") == 4 and [o.task.label for o in report.failed] == ["broken.jpg x s1.png"]
    assert "broken.jpg: not an image file" in report.failed[0].error
    assert pngs(out) == {n: b for n, b in pngs(ref_dir).items() if n.endswith("__s1.png")}
    side = json.loads((out / "p0__s1.png.json").read_text())  # the user's names, not the worker's copies
    assert side["content"] == str(batch_root / "photos" / "p0.png") and side["output"] == str(out / "p0__s1.png")
    assert not list(out.glob(".*"))
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    rerun = run_batch_ray([batch_root / "photos"], [batch_root / "s1.png"], out, CFG, weights=tiny_weights, copy=True)
    assert rerun.count("skipped") == 4 and {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


def test_cli_ray_flag_runs_the_batch_on_the_cluster(cluster, batch_root, tiny_weights, local_run, capsys):
    ref_dir, _ = local_run
    out = batch_root / "cli"
    out.mkdir()
    code = main(["stylize", str(batch_root / "photos" / "p1.png"), str(batch_root / "s2.png"), "-o", str(out), "--ray",
                 "--weights", str(tiny_weights), "--size", "80", "--iterations", "24", "--scales", "40,80"])
    assert code == 0, capsys.readouterr().err
    assert pngs(out) == {"p1__s2.png": (ref_dir / "p1__s2.png").read_bytes()}
    assert "1 painted, 0 complete already, 0 failed" in capsys.readouterr().out


def test_cli_ray_alone_starts_a_ray_instance_here(batch_root, tiny_weights, local_run, tmp_path):
    """`--ray` with no address: the command starts (and stops) its own Ray, beside the test cluster."""
    ref_dir, _ = local_run
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    env.pop("RAY_ADDRESS", None)
    p = subprocess.run([sys.executable, "-m", "restyle", "stylize", str(batch_root / "photos" / "p2.png"),
                        str(batch_root / "s1.png"), "-o", str(tmp_path), "--ray", "--ray-cpus-per-worker", "1",
                        "--weights", str(tiny_weights), "--size", "80", "--iterations", "24", "--scales", "40,80"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "1 painted, 0 complete already, 0 failed" in p.stdout
    assert pngs(tmp_path) == {"p2__s1.png": (ref_dir / "p2__s1.png").read_bytes()}


def test_cli_ctrl_c_in_a_ray_batch_says_interrupted_once_without_ray_retries(cluster, batch_root, tiny_weights,
                                                                            tmp_path):
    """Issue 27, item 13: Ctrl-C mid-batch is one line and exit 130, not Ray's "will be retried" chatter.

    Killing the workers with their pairs in flight made Ray rerun (and announce) each pair; its
    lines, on stdout, broke the progress bar onto a new line. Stdout and stderr share one pipe
    here, as they share a terminal, and the whole process group gets SIGINT, as from a terminal.
    """
    (tmp_path / "in").mkdir()
    for name in ("p0.png", "p1.png"):  # a pair for each worker, none that fails (its line would cut the bar)
        (tmp_path / "in" / name).write_bytes((batch_root / "photos" / name).read_bytes())
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen(
        [sys.executable, "-m", "restyle", "stylize", str(tmp_path / "in"), str(batch_root / "s1.png"), "-o",
         str(tmp_path / "out"), "--ray", cluster.address, "--ray-cpus-per-worker", "1", "--weights", str(tiny_weights),
         "--size", "64", "--scales", "64", "--iterations", "100000"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    seen, started = [], threading.Event()

    def read():
        while chunk := proc.stdout.read1(4096):
            seen.append(chunk)
            if b"pair" in b"".join(seen[-2:]):  # the batch's bar: the pairs were handed out
                started.set()
        started.set()  # the command ended (the assertion below says how)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert started.wait(300) and proc.poll() is None, b"".join(seen).decode(errors="replace")[-2000:]
        time.sleep(1.0)  # the workers are painting
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    out = b"".join(seen).decode(errors="replace")
    lines = [line for line in out.split("\n") if line.strip()]
    assert not [line for line in lines if "retried" in line or "Task " in line or "(raylet)" in line], out
    assert len([line for line in lines if "pair" in line]) == 1, out  # the bar redrawn in place, never re-started
    assert lines[-1] == "restyle: interrupted", out
    assert not list((tmp_path / "out").glob("*.png"))


def test_cli_ray_refuses_bad_addresses_and_orphan_flags(batch_root, tiny_weights, tmp_path, capsys):
    base = [str(batch_root / "photos"), str(batch_root / "s1.png"), "-o", str(tmp_path), "--weights", str(tiny_weights)]
    assert main(["stylize", *base, "--ray", "photos/"]) == 2
    assert "ray address 'photos/' is not one of: local, auto, ray://HOST:PORT" in capsys.readouterr().err
    assert main(["stylize", *base, "--ray-workers", "2"]) == 2
    assert "need --ray" in capsys.readouterr().err
    assert main(["stylize", *base, "--ray-copy"]) == 2
    assert "--ray-copy need --ray" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_ray_without_ray_installed_says_how_to_install(batch_root, tiny_weights, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    code = main(["stylize", str(batch_root / "photos"), str(batch_root / "s1.png"), "-o", str(tmp_path), "--ray",
                 "--weights", str(tiny_weights)])
    assert code == 2 and "pip install 'restyle[ray]'" in capsys.readouterr().err


# ---- feed-forward models on Ray: photos through one network, one network per style ---------------


@pytest.fixture(scope="module")
def tiny_style_model(batch_root):
    return style_model_file(batch_root / "tiny.pt")


@pytest.fixture(scope="module")
def model_local(batch_root, tiny_style_model):
    """The reference: the local `stylize PHOTOS --model` loop with one thread, as each Ray worker has."""
    from restyle.networks.feedforward import load_model
    from restyle.batch.model_batch import run_model_batch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return batch_root / "model_local", run_model_batch([batch_root / "photos"], load_model(tiny_style_model), batch_root / "model_local")
    finally:
        torch.set_num_threads(threads)


def test_model_batch_on_ray_matches_the_local_run_and_skips_on_rerun(cluster, batch_root, tiny_style_model, model_local, capsys):
    from restyle.batch.distributed import run_model_batch_ray

    local, ref = model_local
    out = batch_root / "model_ray"
    events = []
    report = run_model_batch_ray([batch_root / "photos"], str(tiny_style_model), out, device="cpu", precision="fp32",
                                 callback=events.append)
    assert ref.count("done") == report.count("done") == 4
    assert pngs(out) == pngs(local) and len(pngs(out)) == 4 and "p0__tiny.png" in pngs(out)
    assert [o.task.label for o in report.failed] == ["broken.jpg"]
    assert "broken.jpg: not an image file" in report.failed[0].error and report.exit_code == 2
    sides = [json.loads(p.read_text()) for p in sorted(out.glob("*.png.json"))]
    assert len(sides) == 4 and all(s["node"]["ray_node"] and s["mode"] == "feedforward" for s in sides)
    assert len({s["node"]["ray_node"] for s in sides}) == 2  # both nodes worked
    assert [e.done for e in events if isinstance(e, BatchProgress)][-1] == 5
    assert not list(out.glob(".*"))
    # The command line reruns it: every complete output skipped, the files left alone.
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    assert main(["stylize", str(batch_root / "photos"), "--model", str(tiny_style_model), "-o", str(out), "--ray",
                 "--device", "cpu", "--precision", "fp32"]) == 2
    err = capsys.readouterr().err
    assert "0 painted, 4 complete already, 1 failed" in err and "failed: broken.jpg: " in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    assert main(["stylize", str(batch_root / "photos"), "--model", str(tiny_style_model), "-o", str(out), "--ray",
                 "--ray-copy"]) == 2
    assert "--ray-copy is not available with --model" in capsys.readouterr().err


def test_cli_train_one_model_per_style_on_ray(cluster, batch_root, tiny_weights, tmp_path, capsys):
    """Two paintings and a broken one: two models, identical to a local training; one failure, said once."""
    from restyle.models.modelfile import read_model_file
    from restyle.networks.style_training import train

    train_photos = tmp_path / "train"
    train_photos.mkdir()
    for i in range(4):
        (train_photos / f"p{i}.png").write_bytes((batch_root / "photos" / f"p{i}.png").read_bytes())
    (tmp_path / "bad.png").write_bytes(b"not a png")
    models = tmp_path / "models"
    args = ["train", str(batch_root / "s1.png"), str(batch_root / "s2.png"), str(tmp_path / "bad.png"),
            "--photos", str(train_photos), "-o", str(models), "--ray", "--weights", str(tiny_weights),
            "--steps", "4", "--size", "32", "--batch-size", "2", "--style-size", "48", "--holdout", "1",
            "--preview-every", "4", "--checkpoint-every", "0", "--widths", "4,8", "--res-blocks", "1",
            "--precision", "fp32", "--lr", "0.01", "--threads", "1", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "2 trained, 0 complete already, 1 failed" in err
    failures = [line for line in err.splitlines() if "failed: bad.png" in line]
    assert len(failures) == 1 and "bad.png: not an image file" in failures[0]
    assert sorted(p.name for p in models.glob("*.pt")) == ["s1.ckpt.pt", "s1.pt", "s2.ckpt.pt", "s2.pt"]
    sides = [json.loads((models / f"{s}.json").read_text()) for s in ("s1", "s2")]
    assert all(s["node"]["ray_node"] and s["attempt"] == 1 and s["style"]["file"] == f"s{i + 1}.png"
               for i, s in enumerate(sides))
    assert (models / "s1_previews" / "step000004.png").is_file()

    # The same weights as a local training of that painting with the same settings and thread count.
    local = train(batch_root / "s2.png", train_photos, tmp_path / "local.pt",
                  style_train_config(steps=4, preview_every=4, lr=0.01), weights=tiny_weights)
    a, b = read_model_file(models / "s2.pt")["state_dict"], read_model_file(local)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # A rerun (here, without Ray: the same rule) skips the complete models and leaves them alone.
    stamps = {p.name: p.stat().st_mtime_ns for p in models.iterdir()}
    assert main([a for a in args if a != "--ray"]) == 2
    assert "0 trained, 2 complete already, 1 failed" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in models.iterdir()} == stamps


@pytest.fixture(scope="module")
def video_local(batch_root, tiny_style_model):
    """A 20-frame clip and the local `video --model` run's frames (one thread, as each Ray worker has)."""
    pytest.importorskip("av")
    pytest.importorskip("cv2")
    from videoutil import make_clip, pan_frames

    root = batch_root / "video"
    root.mkdir()
    clip = make_clip(root / "in.mp4", pan_frames(width=64, height=48, frames=20, step=2))
    base = ["video", str(clip), "--model", str(tiny_style_model), "--keep-frames", "--quiet"]
    assert main_on_one_thread(base + ["-o", str(root / "local.mp4")]) == 0
    return base, root / "local.mp4"


def test_cli_video_with_a_model_on_ray_gives_the_local_frames(cluster, video_local, tmp_path, capsys):
    """20 frames in chunks of 8 on two workers: every frame, blended across the chunk borders, is the local run's."""
    from videoutil import clip_stats

    base, local_mp4 = video_local
    clip = base[1]
    assert main(base + ["-o", str(tmp_path / "ray.mp4"), "--ray"]) == 0, capsys.readouterr().err
    assert "lost" not in capsys.readouterr().err

    local, distributed = local_mp4.with_name("local.mp4.frames"), tmp_path / "ray.mp4.frames"
    assert len(pngs(local)) == 20 and pngs(distributed) == pngs(local)
    assert (distributed / "manifest.json").read_text() == (local / "manifest.json").read_text()
    assert clip_stats(tmp_path / "ray.mp4") == clip_stats(local_mp4)  # frames, fps, duration, audio
    # The blend did carry across the borders: frame 8 is not the network's picture alone.
    assert main(base + ["-o", str(tmp_path / "alone.mp4"), "--temporal-weight", "0"]) == 0
    assert (tmp_path / "alone.mp4.frames" / "000008.png").read_bytes() != (local / "000008.png").read_bytes()

    # A run stopped after frame 12 resumes mid-chunk on Ray and still gives the local frames.
    for p in sorted(distributed.glob("*.png"))[13:]:
        p.unlink()
    assert main(base + ["-o", str(tmp_path / "again.mp4"), "--work-dir", str(distributed), "--ray"]) == 0
    assert pngs(distributed) == pngs(local)
    assert main(["video", clip, "a.png", "-o", str(tmp_path / "o.mp4"), "--ray"]) == 2
    assert "give --model" in capsys.readouterr().err


def test_cli_video_on_ray_loses_workers_mid_clip_and_still_gives_the_local_frames(cluster, video_local, tmp_path,
                                                                                    capsys, monkeypatch):
    """The batch driver's rules for a clip's chunks: chunk 1's worker dies (Ray restarts it and runs the
    chunk again), chunk 2's worker exits for good (the driver queues the chunk for the other worker);
    both losses are reported and every frame is the local run's."""
    from restyle.video import on_ray

    base, local_mp4 = video_local
    die, retire = tmp_path / "die", tmp_path / "retire"  # each claimed once, by whichever worker unlinks it
    die.touch()
    retire.touch()

    class LosingWorker(on_ray.ChunkWorker):  # defined here, so Ray sends the class itself to the workers
        def work(self, chunk, attempt, callback):
            import ray as ray_here

            def claim(marker):
                try:
                    marker.unlink()
                except FileNotFoundError:
                    return False
                return True

            if chunk.index == 1 and claim(die):
                os._exit(1)  # mid-clip, mid-chunk: the process is gone
            if chunk.index == 2 and claim(retire):
                ray_here.actor.exit_actor()  # gone for good: Ray does not restart it
            return super().work(chunk, attempt, callback)

    monkeypatch.setattr(on_ray, "ChunkWorker", LosingWorker)
    assert main(base + ["-o", str(tmp_path / "ray.mp4"), "--ray"]) == 0
    err = capsys.readouterr().err

    assert not die.exists() and not retire.exists()
    distributed = tmp_path / "ray.mp4.frames"
    assert pngs(distributed) == pngs(local_mp4.with_name("local.mp4.frames")) and len(pngs(distributed)) == 20
    assert (tmp_path / "ray.mp4").read_bytes() == local_mp4.read_bytes()
    lost = [line for line in err.splitlines() if line.strip().startswith("lost:")]
    assert "2 worker(s) lost mid-chunk, their chunks ran again" in err and len(lost) == 2, err
    assert any("died making frames 8-15 (attempt 1); ran it again" in line for line in lost), err
    assert any("died making frames 16-19 (attempt 1)" in line and "worker retired, chunk queued for the others"
               in line for line in lost), err


def test_model_batch_on_ray_gives_the_one_runners_pixels(cluster, batch_root, tmp_path):
    """A Ray batch through the bundled network (device and precision "auto") paints what
    restyle.run_network paints here at the worker's thread count (test_run_network.py: the CLI,
    a local batch and the web job paint the same)."""
    import numpy as np

    import restyle
    from restyle.batch.distributed import run_model_batch_ray

    report = run_model_batch_ray([batch_root / "photos" / "p0.png"], "starry_night", tmp_path, "none", 48)
    assert report.count("done") == 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = restyle.run_network("starry_night", batch_root / "photos" / "p0.png", size=48)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "p0__starry_night.png").convert("RGB")), np.asarray(here))



def test_any_painting_at_a_strength_on_ray_paints_what_it_paints_here(cluster, tiny_weights, tmp_path, capsys):
    """`--style-strength` with the any-painting network on Ray: the workers get the network with the
    painting's code and strength in one file and make each photo's own network, as a local run does."""
    from tinynets import arbitrary_model_file, make_corpus

    corpus = make_corpus(tmp_path)
    arb = arbitrary_model_file(tmp_path / "arb.pt")
    args = ["stylize", str(corpus / "photos"), str(corpus / "paintings" / "p3.png"), "--model", str(arb),
            "--style-strength", "0.5", "--weights", str(tiny_weights), "--precision", "fp32", "--device", "cpu",
            "--quiet"]
    assert main_on_one_thread(args + ["-o", str(tmp_path / "here")]) == 0
    assert main(args + ["-o", str(tmp_path / "ray"), "--ray"]) == 0, capsys.readouterr().err
    here, there = pngs(tmp_path / "here"), pngs(tmp_path / "ray")
    assert len(here) == 5 and here == there
    assert not list((tmp_path / "ray").glob(".restyle-arbitrary-*"))  # the file for the workers, removed
