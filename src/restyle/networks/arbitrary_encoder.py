"""Read the painting at fewer pixels: the any-painting network's style predictor refitted to a smaller encode size.

A new painting costs one VGG-19 pass to relu4_1 before the photo's pass, and at 256 px
that pass costs about what the transformer costs at 512 px: the first picture of a new
painting took twice a reused code's time. At 128 px it costs a quarter. The statistics
the predictor reads change with the size (relu1_1 of a 128 px picture is a blurrier
picture's), so the predictor is refitted, not the network retrained: the same trained
network (body and heads) is the teacher, and the predictor learns to give, from a view
read at the new size, the normalisation parameters the teacher gives from the view at
its own size (a distillation, in units of each parameter's spread over the corpus).

The views are those training draws (the whole painting and random crops); the held-aside
paintings (every k-th by name, as in training) are never fitted, only measured. The model
file's sidecar records the held-aside error; the benchmark (benchmarks/arbitrary.py) judges
the pictures.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..errors import InputError
from ..images import check_output_path, load_image
from ..models.modelfile import model_payload, read_model_file, resolve_model, save_model_file
from .arbitrary_training import FAMILY, painting_views, split_paintings
from .training import list_photos

BATCH = 256


def _stats(model: Any, paintings: Sequence[Path], views: int, sizes: Tuple[int, int], seed: int,
           log: Callable[[str], None]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(teacher, student) stats (M, D) of `views` views of each painting, read at sizes[0] and sizes[1]."""
    g = torch.Generator().manual_seed(seed)
    teacher: List[torch.Tensor] = []
    student: List[torch.Tensor] = []
    for i, p in enumerate(paintings):
        for view in painting_views(load_image(p), views, g):
            teacher.append(model.painting_stats(view, sizes[0])[0].float().cpu())
            student.append(model.painting_stats(view, sizes[1])[0].float().cpu())
        log(f"stats: {i + 1}/{len(paintings)} paintings")
    return torch.stack(teacher), torch.stack(student)


def fit_predictor(net: Any, teacher: torch.Tensor, student: torch.Tensor, *, steps: int, lr: float = 1e-3,
                  seed: int = 0) -> Tuple[Any, torch.Tensor]:
    """A copy of `net` whose predictor maps `student` stats to the parameters `net` gives `teacher`'s;
    and the parameters' spread (the error's unit)."""
    with torch.no_grad():
        target = net.heads(net.encode(teacher))
    scale = target.std(0).clamp_min(1e-3)
    out = copy.deepcopy(net).float().train()
    out.set_stats_normalisation(student)
    out.requires_grad_(False)
    out.predictor.requires_grad_(True)
    opt = torch.optim.Adam(out.predictor.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(student), (min(BATCH, len(student)),), generator=g)
        loss = (((out.heads(out.encode(student[idx])) - target[idx]) / scale) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return out.requires_grad_(False).eval(), scale


def parameter_error(net: Any, reference: Any, student: torch.Tensor, teacher: torch.Tensor,
                    scale: torch.Tensor) -> float:
    """Mean squared gap between `net`'s parameters from `student` stats and `reference`'s from `teacher`
    stats, in units of the parameters' spread (1: as far apart as two random paintings' halves)."""
    with torch.no_grad():
        return float((((net.heads(net.encode(student)) - reference.heads(reference.encode(teacher))) / scale) ** 2)
                     .mean())


def refit_encoder(model: Union[str, os.PathLike], paintings: Union[str, os.PathLike], output: Union[str, os.PathLike],
                  encode_size: int = 128, *, views: int = 12, steps: int = 2000, lr: float = 1e-3, seed: int = 0,
                  weights: Optional[os.PathLike] = None, log: Callable[[str], None] = lambda s: None) -> Path:
    """Write `output`: the any-painting network `model` reading paintings at `encode_size` px."""
    from .feedforward import ArbitraryModel, open_model

    if not 32 <= encode_size <= 4096:
        raise InputError(f"encode size {encode_size}: must be in [32, 4096] px")
    if views < 1 or steps < 1:
        raise InputError(f"views {views} and steps {steps} must be >= 1")
    source = resolve_model(model, FAMILY)
    out = check_output_path(output, (source,), suffixes=(".pt",))
    payload = read_model_file(source, FAMILY)
    if payload.get("kind") != "model":
        raise InputError(f"{source} is a {payload.get('kind')}, not a finished any-painting model")
    loaded = open_model(source, device="cpu", precision="auto", weights=weights)  # bf16 where the CPU has it, as it runs
    assert isinstance(loaded, ArbitraryModel)
    cfg = payload["training"].get("config", {})
    every = int(cfg.get("holdout_every", 10))
    train_p, held_p = split_paintings(list_photos(paintings), every)
    if not train_p or not held_p:
        raise InputError(f"paintings {paintings}: too few to hold some aside (every {every}th)")
    t0 = time.perf_counter()
    sizes = (loaded.encode_size, encode_size)
    teacher, student = _stats(loaded, train_p, views, sizes, seed, log)
    held_t, held_s = _stats(loaded, held_p, 4, sizes, seed + 1, log)
    net, scale = fit_predictor(loaded.net, teacher, student, steps=steps, lr=lr, seed=seed)
    record: Dict[str, Any] = {
        "from_encode_size": sizes[0], "encode_size": encode_size, "views": views, "steps": steps, "lr": lr,
        "seed": seed,
        "paintings": len(train_p), "held_out_paintings": len(held_p),
        # The refitted predictor's gap and the old one's if fed the smaller pictures: on the views
        # fitted, and on the held-aside paintings' (what a new painting gets).
        "train_error": round(parameter_error(net, loaded.net, student, teacher, scale), 4),
        "train_error_unfitted": round(parameter_error(loaded.net, loaded.net, student, teacher, scale), 4),
        "held_error": round(parameter_error(net, loaded.net, held_s, held_t, scale), 4),
        "held_error_unfitted": round(parameter_error(loaded.net, loaded.net, held_s, held_t, scale), 4),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    training = dict(payload["training"], config=dict(cfg, encode_size=encode_size), encoder_refit=record)
    save_model_file(model_payload(net, family=FAMILY, training=training, style=payload.get("style", {}), kind="model"),
                    out)
    log(f"held-aside parameter error {record['held_error']} (unfitted {record['held_error_unfitted']})")
    return out
