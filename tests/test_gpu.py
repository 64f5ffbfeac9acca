"""The CUDA path (issue 26), tested on the CPU where it can be and on a GPU where there is one.

CPU tests mock what a GPU machine would report (compute capability, Ray's
CUDA_VISIBLE_DEVICES, torch.OutOfMemoryError) and count host syncs with
tests/synccount.py; the tests marked `cuda` run only where torch sees a GPU.
"""

import argparse
import sys
import types

import pytest
import torch
from PIL import Image

from restyle import device as dev
from restyle.config import StylizeConfig
from restyle.errors import OUT_OF_MEMORY_HINT, InputError, is_out_of_memory
from restyle.optimiser.loop import FIRST_STEP, LBFGS, LossScaler, OptimizerSettings, optimize
from restyle.optimiser.objective import Objective, Sources, build_terms
from restyle.optimiser.tiling import tile_grid, tiled_loss_and_grad
from synccount import SyncCounter

has_cuda = torch.cuda.is_available()
cuda = pytest.mark.skipif(not has_cuda, reason="needs a CUDA GPU")


def objective_for(painter, size=48, seed=0, **cfg):
    cfg = StylizeConfig(size=size, **cfg)
    g = torch.Generator().manual_seed(seed)
    content = (torch.rand(1, 3, size, size, generator=g) * 255).to(painter.device)
    style = (torch.rand(1, 3, size, size, generator=g) * 255).to(painter.device)
    return Objective(build_terms(cfg, Sources(content=content, styles=[style], blend=[1.0])), painter).prepare(), content


# --- 1, 12: Ray actors and devices ----------------------------------------------------


def test_worker_device_is_cuda_wherever_ray_gave_the_actor_a_gpu():
    assert dev.worker_device("cuda:1", [1]) == "cuda"  # Ray's CUDA_VISIBLE_DEVICES=1: it is cuda:0 here
    assert dev.worker_device("cuda", [3]) == "cuda"
    assert dev.worker_device("cuda:1", []) == "cuda:1"  # no GPU from Ray: the name is checked as given
    assert dev.worker_device("cpu", [0]) == "cpu" and dev.worker_device("auto", [0]) == "auto"


@pytest.fixture
def in_ray_actor(monkeypatch):
    """What an actor with num_gpus=1 on a two-GPU node sees: Ray's second GPU as the only one."""
    fake = types.ModuleType("ray")
    fake.get_actor = lambda name: object()
    fake.get_runtime_context = lambda: types.SimpleNamespace(get_node_id=lambda: "node")
    fake.get_gpu_ids = lambda: [1]
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_ray_actor_given_cuda_1_runs_on_its_one_visible_gpu(in_ray_actor, monkeypatch):
    from restyle.batch import distributed
    from restyle.optimiser import engine

    with pytest.raises(InputError, match="does not exist"):  # the bug: cuda:1 is not there inside the actor
        dev.resolve_device("cuda:1")

    class Probe(distributed.RayWorker):
        def setup(self, name):
            self.where = dev.resolve_device(self.device(name))

    assert Probe("cuda:1", threads=0, board="b").where == torch.device("cuda")
    seen = []
    monkeypatch.setattr(engine, "make_painter", lambda cfg, weights=None: seen.append(cfg.device))
    w = distributed.BatchWorker(StylizeConfig(device="cuda:1"), None, False, threads=0, board="b")
    assert w.error is None and seen == ["cuda"] and w.cfg.device == "cuda"
    t = distributed.TrainWorker("photos", None, "cuda:1", None, threads=0, board="b")
    assert t.where == "cuda"


def test_plan_workers_takes_gpus_only_for_gpu_runs_and_shares_the_cpus():
    from restyle.batch.distributed import plan_workers

    nodes = [{"CPU": 16, "GPU": 2}, {"CPU": 8, "GPU": 1}]
    assert plan_workers(nodes) == (3, 8, 1)  # 16 // 2 and 8 // 1: 8 cores beside each GPU
    assert plan_workers(nodes, device="cuda:1") == (3, 8, 1)
    assert plan_workers(nodes, device="cpu") == (6, 4, 0)  # no GPU for a CPU run: 4 + 2 workers of 4 cores
    assert plan_workers([{"CPU": 2, "GPU": 4}]) == (2, 1, 1)  # a core each at least; no more workers than cores
    assert plan_workers([{"CPU": 16, "GPU": 2}], cpus_per_worker=4, workers=1) == (1, 4, 1)


# --- 5: auto precision from the compute capability ----------------------------------


@pytest.mark.parametrize("capability, precision", [
    ((9, 0), "bf16"), ((8, 6), "bf16"), ((8, 0), "bf16"),  # H100, RTX 30x0, A100: native bf16
    ((7, 5), "fp16"), ((7, 0), "fp16"),  # T4, V100: bf16 only emulated; fp16 tensor cores
    ((6, 1), "fp32"),  # Pascal: no fast half precision
])
def test_auto_precision_follows_the_compute_capability(capability, precision):
    assert dev.cuda_precision(capability) == precision


def test_auto_precision_asks_the_device_in_use_not_the_current_one(monkeypatch):
    asked = []
    caps = {0: (7, 5), 1: (9, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability",
                        lambda d=None: asked.append(d) or caps[torch.device(d).index or 0])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: pytest.fail("emulation counts as support"))
    assert dev.resolve_precision("auto", torch.device("cuda:1")) == "bf16"
    assert dev.resolve_precision("auto", torch.device("cuda:0")) == "fp16"
    assert asked == [torch.device("cuda:1"), torch.device("cuda:0")]


# --- 3: out of memory on the GPU ----------------------------------------------------


def test_out_of_memory_is_recognised_whatever_raised_it():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 8 GB)"))
    assert not is_out_of_memory(RuntimeError("shape mismatch")) and not is_out_of_memory(ValueError("x"))


def test_cli_turns_a_cuda_out_of_memory_into_the_hint_and_exit_1(monkeypatch, capsys):
    from restyle.cli import main as cli

    def oom(args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    parser = argparse.ArgumentParser()
    parser.set_defaults(func=oom)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main([]) == 1
    err = capsys.readouterr().err
    assert err == f"restyle: error: {OUT_OF_MEMORY_HINT}\n" and "--max-memory" in err and "--tile-size" in err


def test_batch_pair_out_of_memory_fails_that_pair_frees_the_cache_and_goes_on(monkeypatch, tmp_path):
    from restyle.batch import local as batch
    from restyle.batch.local import PairTask

    freed = []
    monkeypatch.setattr(dev, "free_cached_memory", lambda device=None: freed.append(True))

    def make():
        raise torch.OutOfMemoryError("CUDA out of memory")

    task = PairTask(0, tmp_path / "c.png", tmp_path / "s.png", tmp_path / "out.png")
    out = batch.produce(task, lambda: "", make, sidecar=False)
    assert out.status == "failed" and out.error == OUT_OF_MEMORY_HINT and freed == [True]


# --- 6: colour on the device ------------------------------------------------------------


def test_colour_transfer_matrix_stays_on_the_pixels_device():
    from restyle.optimiser.color import color_transfer_matrix

    g = torch.Generator().manual_seed(0)
    s, c = (torch.rand(3, 500, generator=g, dtype=torch.float64) * 255 for _ in range(2))
    a, b = color_transfer_matrix(s.to("meta"), c.to("meta"))  # torch.eye on the CPU would not mix with meta
    assert a.device.type == "meta" and b.device.type == "meta"


# --- 7: L-BFGS without host syncs ---------------------------------------------------------


def torch_lbfgs(x, objective, iterations, history, lr=1.0, first_step=FIRST_STEP):
    """The reference: torch.optim.LBFGS as restyle drove it before, with its first-step trick."""
    x = x.detach().clone().requires_grad_(True)
    losses = []

    def closure():
        x.grad = None
        loss, _ = objective(x)
        loss.backward()
        x.grad = x.grad.contiguous()
        losses.append(float(loss.detach()))
        return loss

    opt = torch.optim.LBFGS([x], lr=lr, max_iter=iterations, max_eval=iterations, tolerance_grad=-1,
                            tolerance_change=-1, history_size=history)
    first = closure()
    l1, peak = float(x.grad.abs().sum()), float(x.grad.abs().max())
    used = []

    def cached():
        if not used:
            used.append(True)
            return first
        return closure()

    group = opt.param_groups[0]
    group.update(lr=first_step * l1 / peak, max_iter=1, max_eval=1)
    opt.step(cached)
    group.update(lr=lr, max_iter=iterations - 1, max_eval=iterations - 1)
    opt.step(closure)
    return x.detach(), losses


@pytest.mark.parametrize("history", [5, 100])
def test_lbfgs_makes_torchs_iterates_in_float64(history):
    """The same algorithm: on a smooth convex problem in float64 the points agree to rounding."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(30, 30, generator=g, dtype=torch.float64)
    q = q @ q.T + 0.1 * torch.eye(30, dtype=torch.float64)
    b = torch.randn(30, generator=g, dtype=torch.float64)

    def objective(x):
        v = x.reshape(-1)
        return 0.5 * v @ q @ v - b @ v + 0.05 * (v ** 4).sum(), {}

    x0 = torch.randn(1, 1, 5, 6, generator=g, dtype=torch.float64)
    want, want_losses = torch_lbfgs(x0, objective, 60, history, first_step=0.5)
    losses = []
    got = optimize(x0.clone(), objective, 60, OptimizerSettings("lbfgs", 1.0, history, first_step=0.5),
                   on_eval=lambda i, loss, terms, x: losses.append(loss))
    assert len(losses) == 60 and losses[-1] < 0  # went well past 0 from 443
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_lbfgs_paints_as_torchs_within_its_own_rounding_sensitivity(painter):
    """fp32 and a non-convex loss: rounding differences grow, but no more than torch's own from a 1-ulp nudge."""
    objective, content = objective_for(painter, content_weight=5.0)
    n = 40
    want, want_losses = torch_lbfgs(content, objective, n, 10)
    _, nudged = torch_lbfgs(content * (1 + 2.0**-23), objective, n, 10)
    losses = []
    optimize(content.clone(), objective, n, OptimizerSettings("lbfgs", 1.0, 10),
             on_eval=lambda i, loss, terms, x: losses.append(loss))
    ours, theirs = (torch.tensor(v) / torch.tensor(want_losses) - 1 for v in (losses, nudged))
    assert ours[:10].abs().max() < 1e-4  # before rounding has grown
    assert ours.abs().max() <= max(2 * float(theirs.abs().max()), 1e-3)
    assert losses[-1] < 0.5 * losses[0]  # it paints: 0.35 with the default weights of issue 25 (0.2 before)


def test_lbfgs_reads_the_device_once_per_evaluation(painter):
    objective, content = objective_for(painter)
    n = 30
    with SyncCounter() as syncs:
        optimize(content.clone(), objective, n, OptimizerSettings("lbfgs", 1.0, 100),
                 on_eval=lambda i, loss, terms, x: None)
    assert syncs.by_name == {"tolist": n}, syncs.by_name
    with SyncCounter() as syncs:  # tiled: the same single read
        optimize(content.clone(), objective, n, OptimizerSettings("lbfgs", 1.0, 100),
                 tiles=lambda: tile_grid(48, 48, 24, 16))
    assert syncs.by_name == {"tolist": n}, syncs.by_name


def test_lbfgs_skips_pairs_of_non_positive_curvature_as_torch_does():
    x = torch.zeros(2)
    opt = LBFGS(x, history=3)
    calls = []

    def evaluate():  # a concave direction along x[1]: y.s < 0 there
        x.grad = torch.tensor([x[0].item() - 1.0, -0.1 - x[1].item() * 0.5])
        calls.append(x.clone())
        return torch.tensor([0.0])

    opt.run(evaluate, 5, lambda host: None)
    assert len(calls) == 5 and all(float(r) > 0 for r in opt.ro)


# --- 2: fp16 tiles with loss scaling --------------------------------------------------


def test_tiled_fp16_scales_the_loss_and_matches_fp32(tiny_weights):
    from restyle.optimiser.engine import Painter, make_painter

    p32 = make_painter(StylizeConfig(precision="fp32", device="cpu"), tiny_weights)
    p16 = Painter(p32.net, p32.device, "fp16", key="fp16")  # CPU fp16 autocast: the CUDA path's arithmetic
    # A style weight that makes the fp16 activations' gradients overflow unless the loss is scaled down.
    big = dict(style_weight=1e14, content_weight=0.0, tv_weight=0.0)
    o32, x = objective_for(p32, 64, **big)
    o16, _ = objective_for(p16, 64, **big)
    tiles = tile_grid(64, 64, 32, 16)
    _, _, g32 = tiled_loss_and_grad(o32, x, tiles)
    _, _, raw = tiled_loss_and_grad(o16, x, tiles)
    assert not bool(torch.isfinite(raw).all())  # unscaled: the overflow the tiled branch had
    _, g16 = LossScaler().gradient(lambda scale: (None, tiled_loss_and_grad(o16, x, tiles, loss_scale=scale)[2]))
    cos = torch.nn.functional.cosine_similarity(g16.flatten(), g32.flatten(), dim=0)
    assert bool(torch.isfinite(g16).all()) and cos > 0.99
    losses = []
    optimize(x.clone(), o16, 6, OptimizerSettings("lbfgs"), precision="fp16",
             tiles=lambda: tile_grid(64, 64, 32, 16), on_eval=lambda i, loss, terms, xx: losses.append(loss))
    assert len(losses) == 6 and losses[-1] < losses[0]


# --- 9: cuDNN and TF32 settings ---------------------------------------------------------


def test_cuda_settings_turn_tf32_off_for_fp32_and_benchmark_on_for_fixed_shapes():
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = (cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark)
    with dev.cuda_settings(torch.device("cuda:0"), "fp32", benchmark=True):
        assert (cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark) == (False, False, True)
    with dev.cuda_settings(torch.device("cuda"), "bf16", benchmark=False):
        assert (cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark) == (True, True, False)
    assert (cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark) == before
    with dev.cuda_settings(torch.device("cpu"), "fp32", benchmark=True):
        assert cudnn.benchmark == before[2]


def test_network_is_channels_last_on_cuda_as_on_cpu():
    assert dev.prefers_channels_last(torch.device("cuda:1")) and dev.prefers_channels_last(torch.device("cpu"))
    assert not dev.prefers_channels_last(torch.device("mps"))
    x = dev.network_layout(torch.zeros(1, 3, 8, 8), torch.device("cuda"))
    assert x.is_contiguous(memory_format=torch.channels_last)


# --- 10: the planner's GPU budget ---------------------------------------------------------


def test_gpu_budget_counts_this_process_cached_blocks_as_free(monkeypatch):
    from restyle.optimiser.memory import CUDA_RUNTIME, GB, RUNTIME_BASE, available_bytes, estimate

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: (10 * GB, 80 * GB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d: 30 * GB)  # an earlier job's cache
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d: 2 * GB)  # the network's weights
    assert available_bytes("cuda:1") == 38 * GB
    assert available_bytes("cuda") == 38 * GB
    gpu, cpu = estimate(512, 512, device_type="cuda").parts, estimate(512, 512).parts
    assert gpu["runtime"] == CUDA_RUNTIME and cpu["runtime"] == RUNTIME_BASE


# --- on a GPU -----------------------------------------------------------------------------


@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_stylize_on_cuda(small_images, tiny_weights, precision):
    from restyle.optimiser.engine import run

    if precision == "bf16" and torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("bf16 is emulated before Ampere")
    c, s = small_images
    r = run(c, s, StylizeConfig(size=64, iterations=6, precision=precision, device="cuda"), weights=tiny_weights)
    assert r.report["device"].startswith("cuda") and r.report["precision"] == precision
    assert all(v == v for v in r.report["final_loss"].values())


@cuda
def test_tiled_fp16_on_cuda(small_images, tiny_weights):
    from restyle.optimiser.engine import run

    c, s = small_images
    r = run(c, s, StylizeConfig(size=80, iterations=6, scales=(1,), precision="fp16", device="cuda", tile_size=32),
            weights=tiny_weights)
    assert r.report["memory_plan"]["stages"][-1]["tile"] == 32


@cuda
def test_lbfgs_on_cuda_syncs_once_per_evaluation(tiny_weights):
    """torch's own sync detector: each synchronising call warns."""
    import warnings

    from restyle.optimiser.engine import make_painter

    p = make_painter(StylizeConfig(precision="fp32", device="cuda"), tiny_weights)
    objective, content = objective_for(p, 64)
    optimize(content.clone(), objective, 3, OptimizerSettings("lbfgs"))  # warm up
    n = 20
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            optimize(content.clone(), objective, n, OptimizerSettings("lbfgs"), on_eval=lambda *a: None)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= n + 2, len(syncs)


@cuda
def test_auto_precision_on_this_gpu():
    d = torch.device("cuda")
    assert dev.resolve_precision("auto", d) == dev.cuda_precision(torch.cuda.get_device_capability(d))


@cuda
def test_colour_transfer_on_cuda():
    from restyle.optimiser.color import color_transfer_matrix

    p = torch.rand(3, 100, dtype=torch.float64, device="cuda") * 255
    a, _ = color_transfer_matrix(p, p)
    torch.testing.assert_close(a, torch.eye(3, dtype=torch.float64, device="cuda"), atol=1e-6, rtol=0)


# --- 13: web workers ------------------------------------------------------------------------


def test_web_pool_refuses_a_missing_gpu_at_start_up(tmp_path, monkeypatch):
    from restyle.web.settings import Settings
    from restyle.web.worker import WorkerPool

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    pool = WorkerPool(Settings(data_dir=tmp_path, devices=("cuda:0", "cuda:5")), store=None)
    monkeypatch.setattr(pool, "_spawn", lambda i: pytest.fail("no worker may start"))
    with pytest.raises(InputError, match="'cuda:5' does not exist"):
        pool.start()


def test_web_worker_makes_its_gpu_the_current_device(monkeypatch):
    current = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: current.append(d))
    assert dev.use_device(torch.device("cuda:1")) == torch.device("cuda:1")
    dev.use_device(torch.device("cpu"))
    dev.use_device(torch.device("cuda"))  # no index: the current one already
    assert current == [torch.device("cuda:1")]


# --- 8: every command can use the GPU -----------------------------------------------------


def test_train_and_upscale_default_to_auto_device():
    from restyle.cli.main import build_parser

    p = build_parser()
    assert p.parse_args(["train", "s.jpg", "--photos", "p", "-o", "o.pt"]).device == "auto"
    assert p.parse_args(["upscale", "in.png", "-o", "out.png"]).device == "auto"
    assert p.parse_args(["upscale", "in.png", "-o", "out.png", "--device", "cuda:1"]).device == "cuda:1"
