"""Train an upscaler: random crops of photos, shrunk by the factor, learn to enlarge them back.

The loss is Johnson, Alahi & Fei-Fei's (ECCV 2016) feature reconstruction loss
on VGG-19, plus a small L1 pixel term (see UpscalerTrainConfig). Each layer's
squared feature error is divided by the mean square of the original's features
there (a relative error), so layers of very different magnitude weigh alike
without hand-tuned constants; Johnson et al. divide by C*H*W only.

    train("photos/", "up4.pt", UpscalerTrainConfig(steps=2000))
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .config import UpscalerTrainConfig
from .errors import InputError
from .events import Callback
from .images import PathLike, load_image, to_tensor
from .models.upscaler import Upscaler, UpscalerConfig, model_from_record, model_record
from .models.vgg import VGG19Features, deepest_layer
from .training import checkpoint_path, cosine_lr, fit, grid, load_record, save_record
from .weights import load_weights

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
KIND = "upscaler"


def split_photos(folder: PathLike, hold_out: int) -> Tuple[List[Path], List[Path]]:
    """(training, held-aside) photos of `folder`: every k-th by name is held aside, k = n // hold_out."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"photos {folder}: no such folder")
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    if len(photos) <= hold_out:
        raise InputError(
            f"photos {folder}: {len(photos)} pictures ({', '.join(PHOTO_SUFFIXES)}); "
            f"need more than the {hold_out} held aside"
        )
    k = len(photos) // hold_out if hold_out else 0
    held = set(photos[k - 1::k][:hold_out]) if hold_out else set()
    return [p for p in photos if p not in held], sorted(held)


def downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Shrink (N, 3, H, W) 0-255 by `scale`: bicubic with antialiasing, rounded to 8-bit levels like a file."""
    return F.interpolate(hr, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False).round().clamp(0, 255)


class Crops:
    """Random crops (with random mirroring) of photos held in memory as 8-bit tensors."""

    def __init__(self, photos: Sequence[Path], crop: int, generator: torch.Generator) -> None:
        self.crop = crop
        self.generator = generator
        self.pictures = []
        for p in photos:
            img = load_image(p)
            if min(img.size) >= crop:
                self.pictures.append(to_tensor(img).to(torch.uint8))
        if not self.pictures:
            raise InputError(f"no training photo is at least {crop} px on its short side (the crop size)")

    def batch(self, n: int) -> torch.Tensor:
        g, c = self.generator, self.crop
        out = []
        for _ in range(n):
            pic = self.pictures[int(torch.randint(len(self.pictures), (1,), generator=g))]
            y = int(torch.randint(pic.shape[2] - c + 1, (1,), generator=g))
            x = int(torch.randint(pic.shape[3] - c + 1, (1,), generator=g))
            t = pic[:, :, y:y + c, x:x + c]
            out.append(t.flip(3) if torch.rand((), generator=g) < 0.5 else t)
        return torch.cat(out).float()


class PerceptualLoss(torch.nn.Module):
    """Relative feature error at `layers` of VGG-19 (mean over layers) + pixel_weight * L1/255."""

    def __init__(self, vgg: VGG19Features, layers: Sequence[str], pixel_weight: float) -> None:
        super().__init__()
        self.vgg, self.layers, self.pixel_weight = vgg, tuple(layers), pixel_weight

    def forward(self, out: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, float]]:
        with torch.no_grad():
            ft = self.vgg(target, self.layers)
        fo = self.vgg(out, self.layers)
        feature = sum(F.mse_loss(fo[k], ft[k]) / ft[k].pow(2).mean().clamp_min(1e-8) for k in self.layers)
        feature = feature / len(self.layers)
        pixel = F.l1_loss(out, target) / 255
        loss = feature + self.pixel_weight * pixel
        return loss, {"feature": float(feature.detach()), "pixel": float(pixel.detach())}


def centre_crop(t: torch.Tensor, side: int) -> torch.Tensor:
    y, x = (t.shape[2] - side) // 2, (t.shape[3] - side) // 2
    return t[:, :, y:y + side, x:x + side]


def _preview_rows(model: Upscaler, hr: torch.Tensor) -> List[List[torch.Tensor]]:
    """One row per crop: bicubic | network | original."""
    lr = downscale(hr, model.scale)
    with torch.no_grad():
        net = model(lr).clamp(0, 255)
    bic = F.interpolate(lr, scale_factor=model.scale, mode="bicubic", align_corners=False).clamp(0, 255)
    return [[bic[i:i + 1], net[i:i + 1], hr[i:i + 1]] for i in range(hr.shape[0])]


def train(
    photos: PathLike,
    out: PathLike,
    config: Optional[UpscalerTrainConfig] = None,
    *,
    resume: bool = False,
    weights: Optional[PathLike] = None,
    callback: Optional[Callback] = None,
) -> Dict[str, Any]:
    """Train (or with `resume`, continue from OUT.ckpt) and write the model file `out`.

    On resume the checkpoint's settings apply, except `steps` from `config`
    (to train longer). Returns the training report (also stored in the model file).
    """
    out = Path(out)
    ckpt_path = checkpoint_path(out)
    state = None
    cfg = config or UpscalerTrainConfig()
    if resume:
        state = load_record(ckpt_path, KIND)
        cfg = UpscalerTrainConfig(**{**state["train_config"], "steps": cfg.steps})
        if state["step"] > cfg.steps:
            raise InputError(f"checkpoint {ckpt_path} is at step {state['step']}, past --steps {cfg.steps}")
    train_photos, held = split_photos(photos, cfg.hold_out)

    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = Upscaler(UpscalerConfig(cfg.scale, cfg.channels, cfg.blocks))
    w = load_weights(weights)
    vgg = VGG19Features.from_weights(w, deepest_layer(cfg.feature_layers))
    criterion = PerceptualLoss(vgg, cfg.feature_layers, cfg.pixel_weight)
    if state is not None:
        model = model_from_record(state, str(ckpt_path)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_lr(cfg.steps))
    generator = torch.Generator().manual_seed(cfg.seed)
    start, history, elapsed = 0, [], 0.0
    if state is not None:
        # After the scheduler is built (it resets the learning rate), so the saved rate wins.
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        start, history, elapsed = state["step"], [tuple(h) for h in state["history"]], state["elapsed_s"]
    crops = Crops(train_photos, cfg.crop, generator)
    # Preview: the centres of up to 4 held-aside photos (else training photos), never trained on.
    shown = Crops(held or train_photos, cfg.crop, torch.Generator().manual_seed(1))
    preview_hr = torch.cat([centre_crop(p, cfg.crop) for p in shown.pictures[:4]]).float()

    def step_fn(step: int) -> Tuple[torch.Tensor, Dict[str, float]]:
        hr = crops.batch(cfg.batch_size)
        return criterion(model(downscale(hr, cfg.scale)), hr)

    def report(step: int) -> Dict[str, Any]:
        return {
            "photos": str(photos), "train_photos": len(crops.pictures),
            "held_out": [p.name for p in held], "step": step,
            "elapsed_s": round(elapsed + time.perf_counter() - t0, 1),
            "weights_sha256": w.sha256, "train_config": cfg.to_dict(),
        }

    def save_checkpoint(step: int) -> Path:
        rec = {**model_record(model), **report(step), "history": history + run_history,
               "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
               "generator": generator.get_state()}
        return save_record(rec, ckpt_path)

    t0 = time.perf_counter()
    run_history: List[Tuple[int, float]] = []

    def record(event: Any) -> None:
        from .events import TrainStep

        if isinstance(event, TrainStep):
            run_history.append((event.step, event.loss))
        if callback is not None:
            callback(event)

    fit(model, optimizer, step_fn, steps=cfg.steps, start=start, scheduler=scheduler,
        checkpoint=save_checkpoint, checkpoint_every=cfg.checkpoint_every,
        preview=lambda step: grid(_preview_rows(model, preview_hr)), preview_every=cfg.preview_every,
        callback=record)
    final = report(cfg.steps)
    final["history"] = history + run_history
    final["loss_first_last"] = [final["history"][0][1], final["history"][-1][1]] if final["history"] else []
    save_record({**model_record(model), "train": {k: v for k, v in final.items() if k != "history"}}, out)
    return final
