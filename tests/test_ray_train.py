"""Data-parallel training of the any-painting network on Ray Train (batch/data_parallel.py), tiny network.

A local Ray instance with two CPUs: two workers of one core each, gloo. The reference is
the local run with one thread (each worker runs one), the same settings and seed.

Tolerance: the workers' sums (the loss's and each gradient's, over two halves of the
batch) are taken in another order than the local run's sum over the whole batch, so the
gradients differ by float32 rounding (~1e-6 relative). The networks then compute the same
pictures: max |output difference| on 0-255 after 4 steps at lr 1e-2, with a worker lost
after step 3, measured 4.3e-4 (the test allows 1e-2, a hundredth of an 8-bit level).
The weights are compared loosely: those whose exact gradient is 0 or nearly (e.g. the
conv biases an instance norm subtracts again) get float rounding noise as gradient, which
Adam divides by its own size, so they move by up to lr a step, differently in each run
(measured up to 0.07), without changing what the network computes.
"""

import functools
import json
import os
import sys

import pytest
import torch

ray = pytest.importorskip("ray")
pytest.importorskip("ray.train")

from restyle.batch.data_parallel import train_arbitrary_ray  # noqa: E402
from restyle.cli.main import main  # noqa: E402
from restyle.events import TrainCheckpoint, TrainPreview, TrainStep  # noqa: E402
from restyle.models.modelfile import build_network, read_model_file, sidecar_of  # noqa: E402
from restyle.networks.arbitrary_training import train_arbitrary  # noqa: E402
from restyle.networks.training import checkpoint_path  # noqa: E402
from tinynets import arbitrary_train_config  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # kill_once_at_step_3 runs on the workers

TOLERANCE = 1e-2  # max |output difference| on 0-255 against the local run, fp32 (see the module's docstring)


def ray_train_config(**kw):
    """tinynets.arbitrary_train_config for two one-thread workers, a checkpoint every other step."""
    return arbitrary_train_config(**{"steps": 4, "checkpoint_every": 2, "paintings_per_step": 3, "threads": 1, **kw})


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with two CPUs, for the module."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=80 * 2**20)
    yield
    ray.shutdown()


def test_cli_refuses_bad_workers_and_unreachable_clusters(corpus, tiny_weights, tmp_path, capsys):
    """Before the module's Ray instance starts (a process connected to Ray keeps its connection)."""
    assert not ray.is_initialized()
    base = ["train-arbitrary", "--paintings", str(corpus / "paintings"), "--photos", str(corpus / "photos"),
            "-o", str(tmp_path / "a.pt"), "--weights", str(tiny_weights), "--quiet", "--steps", "1"]
    assert main(base + ["--ray", "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--workers 0 must be in [1, 2]" in err and len(err.splitlines()) == 1
    assert main(base + ["--ray", "127.0.0.1:1", "--workers", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot reach a Ray cluster at 127.0.0.1:1" in err and len(err.splitlines()) == 1
    assert main(base + ["--workers", "2"]) == 2
    assert "need --ray" in capsys.readouterr().err
    assert not (tmp_path / "a.pt").exists()


def kill_once_at_step_3(flag, rank, event):
    """On a worker: worker 1's process dies after step 3, the first time only (the flag file says it did)."""
    if rank == 1 and isinstance(event, TrainStep) and event.step == 3 and not flag.exists():
        flag.touch()
        os._exit(1)


def test_two_workers_losing_one_give_the_local_runs_network(local_ray, corpus, tiny_weights, tmp_path):
    """4 steps on 2 workers, worker 1 killed after step 3: the group restarts from the step-2 checkpoint
    that worker 0 reported, and ends with the local run's network."""
    threads = torch.get_num_threads()
    seen = []  # the driver's callback: worker 0's events relayed
    local, out, flag = tmp_path / "local" / "arb.pt", tmp_path / "ray" / "arb.pt", tmp_path / "killed"
    local.parent.mkdir()
    out.parent.mkdir()
    try:
        train_arbitrary(corpus / "paintings", [corpus / "photos"], local, ray_train_config(preview_every=2), device="cpu",
                        weights=tiny_weights)
        train_arbitrary_ray(corpus / "paintings", [corpus / "photos"], out, ray_train_config(preview_every=2), device="cpu",
                            weights=tiny_weights, workers=2, cpus_per_worker=1, callback=seen.append,
                            on_worker=functools.partial(kill_once_at_step_3, flag))
    finally:
        torch.set_num_threads(threads)
    assert flag.is_file()  # a worker was lost
    a, b = read_model_file(local), read_model_file(out)
    diff = max(float((a["state_dict"][k].float() - b["state_dict"][k].float()).abs().max()) for k in a["state_dict"])
    # What the network computes: a painting's code and two photo crops, float output on 0-255.
    stats = torch.load(local.with_name("arb.styles.pt"), weights_only=True)["stats"][:2]
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255
    ys = []
    for payload, path in ((a, local), (b, out)):
        net = build_network(payload, path).eval()
        with torch.no_grad():
            ys.append(torch.cat([net(x[i : i + 1], net.encode(stats[i : i + 1])).float() for i in range(2)]))
    picture = float((ys[0] - ys[1]).abs().max())
    print(f"2 Ray Train workers vs local: max |output difference| {picture:.3g} on 0-255, "
          f"max |weight difference| {diff:.3g}")
    assert picture <= TOLERANCE
    assert diff <= 2 * ray_train_config().lr * ray_train_config().steps  # Adam moves a weight at most ~lr a step
    # The one model-file format, the checkpoint and the sidecar, where a local run writes them.
    assert b["family"] == "arbitrary" and checkpoint_path(out).is_file()
    side = json.loads(sidecar_of(out).read_text())
    ref = json.loads(sidecar_of(local).read_text())
    assert side["model_file"] == "arb.pt" and side["training"]["steps_done"] == 4
    assert side["training"]["data_parallel"] == {"workers": 2, "backend": "gloo"}
    assert [row[0] for row in side["training"]["history"]] == [row[0] for row in ref["training"]["history"]]
    assert not (out.parent / ".arb.ray-train").exists()  # Ray Train's storage, removed after the run
    # The progress a local run gives: each step once (the restarted group repeated step 3), the
    # previews of steps 0 (the start), 2 and 4, the last checkpoint where it was written.
    assert [e.step for e in seen if isinstance(e, TrainStep)] == [1, 2, 3, 4]
    assert [e.step for e in seen if isinstance(e, TrainPreview)] == [0, 2, 4]
    assert all(e.image.width > 0 for e in seen if isinstance(e, TrainPreview))
    assert [e.path for e in seen if isinstance(e, TrainCheckpoint)][-1] == checkpoint_path(out)
    assert type(seen[0]).__name__ == "TrainStart" and type(seen[-1]).__name__ == "TrainDone"


def test_cli_ray_runs_the_data_parallel_training(corpus, tiny_weights, tmp_path, capsys, monkeypatch):
    """The flags reach train_arbitrary_ray (the training itself is the test above: each run takes a while)."""
    from restyle.batch import data_parallel

    seen = {}

    def fake(paintings, photos, out, cfg, **kw):
        seen.update(kw, cfg=cfg)
        return out

    monkeypatch.setattr(data_parallel, "train_arbitrary_ray", fake)
    out = tmp_path / "cli.pt"
    assert main(["train-arbitrary", "--paintings", str(corpus / "paintings"), "--photos", str(corpus / "photos"),
                 "-o", str(out), "--weights", str(tiny_weights), "--steps", "2", "--paintings-per-step",
                 "3", "--ray", "auto", "--workers", "3", "--ray-cpus-per-worker", "1", "--device", "cpu"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert (seen["address"], seen["workers"], seen["cpus_per_worker"], seen["device"]) == ("auto", 3, 1, "cpu")
    assert seen["cfg"].steps == 2 and seen["cfg"].paintings_per_step == 3 and seen["resume"] is False
    # Previews relayed from the workers go where a local run's go.
    from PIL import Image

    def previews(paintings, photos, out, cfg, callback, **kw):
        callback(TrainPreview(2, Image.new("RGB", (8, 8))))
        return out

    monkeypatch.setattr(data_parallel, "train_arbitrary_ray", previews)
    assert main(["train-arbitrary", "--paintings", str(corpus / "paintings"), "--photos", str(corpus / "photos"),
                 "-o", str(tmp_path / "p.pt"), "--ray", "--preview-dir", str(tmp_path / "pv"), "--quiet"]) == 0
    assert (tmp_path / "pv" / "step000002.png").is_file()
