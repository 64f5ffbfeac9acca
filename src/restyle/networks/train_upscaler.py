"""Train an upscaler: random crops of photos, shrunk by the factor, learn to enlarge them back.

The loss is Johnson, Alahi & Fei-Fei's (ECCV 2016) feature reconstruction loss
on VGG-19, plus a small L1 pixel term (see UpscalerTrainConfig). Each layer's
squared feature error is divided by the mean square of the original's features
there (a relative error), so layers of very different magnitude weigh alike
without hand-tuned constants; Johnson et al. divide by C*H*W only.

    train("photos/", "up4.pt", UpscalerTrainConfig(steps=2000))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from PIL import Image

from ..config import UpscalerTrainConfig
from ..device import autocast, resolve_device, resolve_precision
from ..errors import InputError
from ..events import Callback
from ..images import PathLike, load_image, to_tensor
from ..models.modelfile import build_network, model_payload, read_model_file, save_model_file
from ..models.upscaler import Upscaler, UpscalerConfig
from ..models.vgg import VGG19Features, deepest_layer
from ..models.weights import Weights, load_weights
from .training import (
    PHOTO_SUFFIXES, Recipe, TrainState, check_output, checkpoint_path, cosine_lr, fit, grid, list_photos, seeded,
    step_generator,
)
from .training import split_photos as _split

KIND = "upscaler"


def split_photos(folder: PathLike, hold_out: int) -> Tuple[List[Path], List[Path]]:
    """(training, held-aside) photos of `folder`: every k-th by name is held aside, k = n // hold_out."""
    photos = list_photos(folder)
    if len(photos) <= hold_out:
        raise InputError(
            f"photos {folder}: {len(photos)} pictures ({', '.join(PHOTO_SUFFIXES)}); "
            f"need more than the {hold_out} held aside"
        )
    train, held = _split(photos, hold_out)
    return train, sorted(held)


def downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """Shrink (N, 3, H, W) 0-255 by `scale`: bicubic with antialiasing, rounded to 8-bit levels like a file."""
    return F.interpolate(hr, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False).round().clamp(0, 255)


class Crops:
    """Random crops (with random mirroring) of photos held in memory as 8-bit tensors."""

    def __init__(self, photos: Sequence[Path], crop: int) -> None:
        self.crop = crop
        self.pictures = []
        for p in photos:
            img = load_image(p)
            if min(img.size) >= crop:
                self.pictures.append(to_tensor(img).to(torch.uint8))
        if not self.pictures:
            raise InputError(f"no training photo is at least {crop} px on its short side (the crop size)")

    def batch(self, n: int, g: torch.Generator) -> torch.Tensor:
        """`n` crops drawn with generator `g` (training.step_generator: the step's own)."""
        c = self.crop
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

    def forward(self, out: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        with torch.no_grad():
            ft = self.vgg(target, self.layers)
        fo = self.vgg(out, self.layers)
        fo, ft = ({k: f[k].float() for k in self.layers} for f in (fo, ft))  # the loss in float32 under autocast
        feature = sum(F.mse_loss(fo[k], ft[k]) / ft[k].pow(2).mean().clamp_min(1e-8) for k in self.layers)
        feature = feature / len(self.layers)
        pixel = F.l1_loss(out.float(), target) / 255
        return feature + self.pixel_weight * pixel, {"feature": feature, "pixel": pixel}


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


class UpscalerRecipe(Recipe):
    """An Upscaler trained on PerceptualLoss over random crops, shrunk by the factor, on `device`."""

    def __init__(self, cfg: UpscalerTrainConfig, model: Upscaler, weights: Weights, photos: PathLike,
                 train_photos: Sequence[Path], held: Sequence[Path], device: torch.device = torch.device("cpu"),
                 precision: str = "fp32") -> None:
        self.cfg, self.weights, self.photos_dir = cfg, weights, str(photos)
        self.device, self.precision = device, precision  # precision resolved: fp32 or bf16
        self.net = model.to(device).train()
        vgg = VGG19Features.from_weights(weights, deepest_layer(cfg.feature_layers)).to(device)
        self.criterion = PerceptualLoss(vgg, cfg.feature_layers, cfg.pixel_weight)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine_lr(cfg.steps))
        self.crops = Crops(train_photos, cfg.crop)
        self.photos, self.held_out = len(self.crops.pictures), tuple(p.name for p in held)
        # Preview: the centres of up to 4 held-aside photos (else training photos), never trained on.
        shown = Crops(held or train_photos, cfg.crop)
        self.preview_hr = torch.cat([centre_crop(p, cfg.crop) for p in shown.pictures[:4]]).float()

    def batch(self, step: int) -> torch.Tensor:
        return self.crops.batch(self.cfg.batch_size, step_generator(self.cfg.seed, step))

    def loss(self, hr: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        hr = hr.to(self.device)
        with autocast(self.device, self.precision):
            return self.criterion(self.net(downscale(hr, self.cfg.scale)), hr)

    def preview(self) -> Optional[Image.Image]:
        with autocast(self.device, self.precision):
            rows = _preview_rows(self.net, self.preview_hr.to(self.device))
        return grid([[t.float().cpu() for t in row] for row in rows])

    def report(self, state: TrainState) -> Dict[str, Any]:
        return {
            "photos": self.photos_dir, "train_photos": self.photos, "held_out": list(self.held_out),
            "step": state.step, "elapsed_s": round(state.wall_s, 1), "weights_sha256": self.weights.sha256,
            "device": self.device.type, "precision": self.precision, "train_config": self.cfg.to_dict(),
        }

    def save(self, kind: str, path: Path, state: TrainState) -> Path:
        if kind == "checkpoint":
            training = {**self.report(state), "history": list(state.history)}
            extra = {"optimizer": state.optimizer, "scheduler": state.scheduler}
        else:
            training, extra = self.sidecar(path, state, 0.0, history=False), {}
        return save_model_file(model_payload(self.net, family=KIND, training=training, kind=kind, extra=extra), path)

    def sidecar(self, path: Path, state: TrainState, steps_per_s: float, history: bool = True) -> Dict[str, Any]:
        report = self.report(state)
        if history:
            report["history"] = [list(h) for h in state.history]
        report["loss_first_last"] = [state.history[0][1], state.history[-1][1]] if state.history else []
        return report


def train(
    photos: PathLike,
    out: PathLike,
    config: Optional[UpscalerTrainConfig] = None,
    *,
    resume: bool = False,
    weights: Optional[PathLike] = None,
    device: Union[str, torch.device] = "cpu",
    callback: Optional[Callback] = None,
    should_stop: Optional[Any] = None,
) -> Dict[str, Any]:
    """Train (or with `resume`, continue from OUT.ckpt) and write the model file `out`.

    On resume the checkpoint's settings apply, except `steps` from `config`
    (to train longer); `device` ("auto", "cpu", "cuda:N") may differ from the first run's.
    Returns the training report (also stored in the model file, and written beside it as OUT.json).
    """
    where = resolve_device(str(device))  # a device that is not here: refused before any work
    out = check_output(out)
    cfg = config or UpscalerTrainConfig()
    state = None
    if resume:
        record = read_model_file(checkpoint_path(out), KIND)
        if record["kind"] != "checkpoint":
            raise InputError(f"{checkpoint_path(out)}: a {record['kind']}, not a checkpoint to resume from")
        t = record["training"]
        cfg = UpscalerTrainConfig(**{**t["train_config"], "steps": cfg.steps})  # from before --precision: fp32
        state = TrainState(t["step"], [tuple(h) for h in t["history"]], t["elapsed_s"],
                           record["optimizer"], record["scheduler"])
    train_photos, held = split_photos(photos, cfg.hold_out)
    if state is None:
        with seeded(cfg.seed):
            model = Upscaler(UpscalerConfig(cfg.scale, cfg.channels, cfg.blocks))
    else:
        model = build_network(record, checkpoint_path(out))
    recipe = UpscalerRecipe(cfg, model, load_weights(weights), photos, train_photos, held, where,
                            resolve_precision(cfg.precision, where))
    return fit(recipe, out, steps=cfg.steps, checkpoint_every=cfg.checkpoint_every,
               preview_every=cfg.preview_every, resume=state, callback=callback, should_stop=should_stop)
