"""Stylize with a trained feed-forward network: one pass, any size.

    painting = restyle.run_network("starry_night", "photo.jpg")   # the one way every front end runs one
    model = open_model("starry_night")             # a bundled name or a .pt path; device and precision "auto"
    painting = run_network(model, "photo.jpg", size=512)   # reuse an open model for many photos
    y = model.stylize_tensor(x)                    # (N, 3, H, W) float 0-255 -> same
    model = restyle.load_model("starry_night")     # explicit device (default cpu) and precision (default fp32)

    model = open_model("arbitrary")                # the any-painting network
    painting = model("photo.jpg", style="painting.jpg")
    code = model.encode_style("painting.jpg")      # once per painting, reused for many photos or frames
    net = model.for_style(code)                    # an ordinary StyleModel: tiles, video, export, Ray
    nets = model.for_photos("painting.jpg", strength=0.5)  # a folder: nets.for_photo(photo) per photo

Large pictures are tiled without seams. Instance normalisation is the only
operation of the network that looks at the whole picture; the tiled path
first measures its statistics on the picture shrunk to `stats_size`, then
freezes them, so the network becomes a pure convolution and every tile,
cut with a margin wider than the receptive field, yields exactly the pixels
the whole picture would have.
"""

from __future__ import annotations

import contextlib
import copy
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from PIL import Image

from ..device import autocast, network
from ..errors import InputError
from ..hashing import sha256sum
from ..config import MAX_SIZE, MIN_SIZE
from ..images import ImageLike, fit_size, load_image, resize, to_pil, to_tensor
from ..models.arbitrary import ArbitraryNet, feature_stats
from ..models.modelfile import ModelError, build_network, read_model_file, resolve_model
from ..models.transformer import TransformerNet
from ..models.transformer_config import MAX_CODE_STRENGTH, MIN_STYLE_SIDE
from ..models.vgg import weights_widths
from ..models.weights import load_weights

# Above this many pixels a picture is stylized in tiles (the activations of a
# 16-channel full-resolution layer take 64 bytes a pixel in fp32, several live at once).
DEFAULT_MAX_PIXELS = 2048 * 2048
DEFAULT_TILE = 1024
STATS_SIZE = 1024  # long side of the picture on which tiled runs measure instance-norm statistics


def receptive_radius(net: TransformerNet) -> int:
    """Pixels of context each output pixel depends on, on each side (an upper bound)."""
    cfg = net.config
    radius = 2 * (cfg.stem_kernel // 2)  # first and last convolutions, at full resolution
    for level in range(len(cfg.widths) - 1):
        radius += 2 * 2 ** level + 1  # a stride-2 conv going down, a 3x3 conv (and resize) going up
    radius += cfg.res_blocks * 2 * cfg.stride  # two 3x3 convs per block at the coarsest level
    return radius


class _FrozenNorm:
    """Record, then replay, the instance-norm statistics of every norm layer."""

    def __init__(self, net: TransformerNet):
        self.norms = [m for m in net.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
        self.stats: List[Any] = []

    @contextlib.contextmanager
    def record(self) -> Iterator[None]:
        self.stats = []

        def hook(module, inputs, output):
            x = inputs[0].float()
            self.stats.append((x.mean((2, 3), keepdim=True), x.var((2, 3), unbiased=False, keepdim=True)))

        handles = [m.register_forward_hook(hook) for m in self.norms]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        originals = [m.forward for m in self.norms]
        for m, (mean, var) in zip(self.norms, self.stats):

            def forward(x, m=m, mean=mean, var=var):
                y = (x.float() - mean) / torch.sqrt(var + m.eps)
                return (y * m.weight.view(1, -1, 1, 1) + m.bias.view(1, -1, 1, 1)).to(x.dtype)

            m.forward = forward
        try:
            yield
        finally:
            for m, f in zip(self.norms, originals):
                m.forward = f


class StyleModel:
    """A trained network and what it says about itself (`info`)."""

    def __init__(
        self,
        net: TransformerNet,
        info: Dict[str, Any],
        *,
        path: Optional[Path] = None,
        device: Union[str, torch.device] = "cpu",
        precision: str = "fp32",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        tile: int = DEFAULT_TILE,
    ):
        self.device = torch.device(device)
        self.precision = precision
        self.net = net.to(self.device).eval().requires_grad_(False)
        self.info = info
        self.path = path
        self.sha256 = sha256sum(path) if path is not None else None
        self.max_pixels = max_pixels
        self.tile = tile
        self._bf16: Optional[TransformerNet] = None

    def runner(self) -> TransformerNet:
        """The network as it runs. On a CPU in bf16: a bf16, NHWC copy of `net`, made once.

        Autocast keeps instance norms in fp32, so every norm's input went bf16 -> fp32 and its
        output back again: a fifth of a pass at 512 px. With bf16 weights nothing is converted;
        the norms still accumulate in fp32 inside, and the pictures differ from autocast's by
        about a grey level. `net` is read once: a StyleModel's network is not trained in place.
        """
        if not (self.device.type == "cpu" and self.precision == "bf16"):
            return self.net
        if self._bf16 is None:
            self._bf16 = copy.deepcopy(self.net).to(torch.bfloat16).to(memory_format=torch.channels_last)
        return self._bf16

    @property
    def name(self) -> str:
        return self.path.stem if self.path is not None else self.info["style"].get("name", "model")

    @property
    def style_name(self) -> str:
        return self.info["style"].get("name", "?")

    def check_size(self, width: int, height: int) -> None:
        """Refuse, before any allocation, a picture the network cannot paint here: InputError under
        MIN_SIZE px on the short side (the size rule of every painting path), ResourceError when
        memory.network_estimate is over the memory budget."""
        from ..optimiser.memory import check_fits, network_estimate

        if min(width, height) < MIN_SIZE:
            raise InputError(f"picture {width}x{height} px is too small for the network: it needs at least "
                             f"{MIN_SIZE} px on the short side")
        piece = width * height
        if piece > self.max_pixels:  # tiled: a tile's core and its margin on each side
            s = self.net.config.stride
            side = max(s, (self.tile // s) * s) + 2 * -(-receptive_radius(self.net) // s) * s
            piece = side * side
        check_fits(network_estimate(width, height, self.net.config.widths, piece),
                   f"{width}x{height} through the network", self.device.type)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        net = self.runner()
        if net is not self.net:
            with torch.inference_mode():
                return net(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)).float()
        with torch.inference_mode(), autocast(self.device, self.precision):
            return self.net(x.to(self.device)).float()

    def stylize_tensor(self, x: torch.Tensor, *, tiled: Optional[bool] = None) -> torch.Tensor:
        """(N, 3, H, W) float RGB 0-255 -> the same shape, float 0-255 (clamped)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (N, 3, H, W) tensor, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        self.check_size(w, h)
        if tiled is None:
            tiled = h * w > self.max_pixels
        y = self._tiled(x) if tiled else self._run(x)
        return y.clamp(0, 255).to(x.device)

    def _tiled(self, x: torch.Tensor, stats_size: int = STATS_SIZE) -> torch.Tensor:
        h, w = x.shape[-2:]
        norm = _FrozenNorm(self.runner())
        scale = min(1.0, stats_size / max(h, w))
        small = F.interpolate(x, scale_factor=scale, mode="area") if scale < 1 else x
        with norm.record():
            self._run(small)
        s = self.net.config.stride
        margin = -(-receptive_radius(self.net) // s) * s  # a multiple of the stride keeps the grids aligned
        core = max(s, (self.tile // s) * s)
        out = torch.empty(x.shape[0], 3, h, w)
        with norm.frozen():
            for top in range(0, h, core):
                for left in range(0, w, core):
                    t0, l0 = max(top - margin, 0), max(left - margin, 0)
                    t1, l1 = min(top + core + margin, h), min(left + core + margin, w)
                    y = self._run(x[..., t0:t1, l0:l1])
                    bh, bw = min(core, h - top), min(core, w - left)
                    out[..., top : top + bh, left : left + bw] = y[..., top - t0 : top - t0 + bh, left - l0 : left - l0 + bw].cpu()
        return out

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """This network as an ordinary style model file (e.g. the any-painting network's for one painting)."""
        from ..models.modelfile import model_payload, save_model_file

        payload = model_payload(self.net, family="style", training=dict(self.info.get("training", {})),
                                style=dict(self.info.get("style", {})))
        return save_model_file(payload, path)

    def __call__(self, image: Union[Image.Image, str, os.PathLike]) -> Image.Image:
        """Stylize a PIL image or an image file; returns a PIL image of the same size."""
        img = load_image(image)
        return to_pil(self.stylize_tensor(to_tensor(img)))


def load_model(
    name_or_path: Union[str, os.PathLike],
    *,
    device: Union[str, torch.device] = "cpu",
    precision: str = "fp32",
    weights: Optional[os.PathLike] = None,
    **kwargs: Any,
) -> Union[StyleModel, "ArbitraryModel", "PhotoStyled"]:
    """Load a bundled model by name (``"starry_night"``, ``"arbitrary"``) or a model/checkpoint file.

    A style network gives a StyleModel; the any-painting network an ArbitraryModel, which
    takes the painting too (`weights`: the VGG-19 it reads paintings with, default the bundled),
    or, from a file PhotoStyled.save wrote, that PhotoStyled (its paintings and strength known).
    """
    path = resolve_model(name_or_path, None)
    payload = read_model_file(path)
    if payload["family"] not in ("style", "arbitrary"):
        raise ModelError(f"model {name_or_path}: a {payload['family']} network, not a style network")
    net = build_network(payload, path)
    info = {k: v for k, v in payload.items() if k not in ("state_dict", "optimizer")}
    if payload["family"] == "arbitrary":
        model = ArbitraryModel(net, info, path=path, device=device, precision=precision, weights=weights, **kwargs)
        styled = payload.get(STYLED)
        if isinstance(styled, dict):  # PhotoStyled.save: the paintings and strength come with the network
            return PhotoStyled(model, styled["code"].to(model.device), float(styled["strength"]), payload["style"])
        return model
    return StyleModel(net, info, path=path, device=device, precision=precision, **kwargs)


def open_model(name_or_path: Union[str, os.PathLike], *, device: Union[str, torch.device] = "auto",
               precision: str = "auto", **kwargs: Any) -> Union[StyleModel, "ArbitraryModel", "PhotoStyled"]:
    """A style network to run, the way every front end opens one: a bundled name or a model
    file; `device` "auto" (the GPU if there is one), "cpu", "cuda:N"; `precision` "auto" (bf16
    where the hardware runs it natively: the networks are trained under bf16 autocast; else
    fp32), "fp32", "bf16", "fp16"."""
    from ..device import resolve_device, resolve_precision

    where = device if isinstance(device, torch.device) else resolve_device(str(device))
    return load_model(name_or_path, device=where, precision=resolve_precision(precision, where), **kwargs)


def run_network(model: Union[StyleModel, "ArbitraryModel", "PhotoStyled", str, os.PathLike],
                source: Union[Image.Image, str, os.PathLike], *, size: Optional[int] = None,
                preserve_colors: str = "none", device: Union[str, torch.device] = "auto", precision: str = "auto",
                styles: Sequence[Any] = (), blend: Optional[Sequence[float]] = None,
                strength: float = 1.0) -> Image.Image:
    """Stylize `source` (a PIL image or a file) with a trained network, resized to long side
    `size` if given, colours as `preserve_colors` says. `model` is an open model (many photos,
    one load), or a bundled name or model file, opened with `device` and `precision` as open_model.
    The any-painting network paints in `styles` (paintings or codes) mixed by `blend`, at `strength`;
    its PhotoStyled (for_photos: a folder) already knows its paintings and strength.
    The CLI (one photo, a folder, --init-model), Ray workers, video and the web app all call this."""
    if not isinstance(model, (StyleModel, ArbitraryModel, PhotoStyled)):
        model = open_model(model, device=device, precision=precision)
    if isinstance(model, (ArbitraryModel, PhotoStyled)):
        photo = load_image(source)
        if size is not None:
            check_size_flag(size)  # before resizing
        anchor = resize(photo, size) if size else photo  # the photo as painted: its own code is the zero point
        model = (model.for_photo(anchor) if isinstance(model, PhotoStyled)
                 else model.for_style(list(styles), blend, strength, photo=anchor))
        source = photo
    return stylize_image(model, source, preserve_colors, size)


def check_size_flag(size: Any) -> None:
    """`--size` of the network path: the optimiser's rule, an integer in [MIN_SIZE, MAX_SIZE]."""
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise InputError(f"size {size!r} is out of range; it must be an integer in [{MIN_SIZE}, {MAX_SIZE}]")


def stylize_image(model: StyleModel, source: Union[Image.Image, str, os.PathLike], preserve_colors: str = "none",
                  size: Optional[int] = None) -> Image.Image:
    """The model's picture of `source` (resized to long side `size` if given), colours as asked."""
    from ..optimiser.color import color_transfer_matrix, luminance, with_chroma

    img = load_image(source)
    if size is not None:
        check_size_flag(size)
        model.check_size(*fit_size(img.width, img.height, size))  # before resizing: --size 100000 allocates nothing
        img = resize(img, size)
    x = to_tensor(img)
    y = model.stylize_tensor(x)
    if preserve_colors == "luminance":
        # Gatys et al. 2017, Sec. 5.1: the network's luminance, the photo's chroma.
        y = with_chroma(luminance(y), x)
    elif preserve_colors == "histogram":
        # Sec. 5.2 applied after the fact: the painting's pixels take the photo's colour mean and covariance.
        a, b = color_transfer_matrix(y[0].reshape(3, -1).double(), x[0].reshape(3, -1).double())
        y = (a @ y[0].reshape(3, -1).double() + b).reshape(y.shape).float()
    return to_pil(y)


def model_for_style(style: Union[str, os.PathLike], models: Sequence[Union[str, os.PathLike]] = ()) -> Optional[Path]:
    """The model trained on exactly this painting (same sha256), if any: among `models` first, then the bundled."""
    from ..models.modelfile import bundled_models

    digest = sha256sum(Path(style))
    for path in [Path(m) for m in models] + list(bundled_models().values()):
        try:
            if read_model_file(path)["style"].get("sha256") == digest:
                return path
        except Exception:  # noqa: BLE001 - an unreadable model simply does not match
            continue
    return None


# --- the any-painting network -----------------------------------------------------------------

STYLED = "styled"  # a model file's key for the code and strength PhotoStyled.save adds to the any-painting network


class ArbitraryModel:
    """The any-painting network (models/arbitrary.py), its VGG-19 reader, device and precision.

    A style code is the painting read by the style predictor. Codes mix linearly, as
    Ghiasi et al. (2017, Sec. 5.3) show: several paintings blend by their weights
    (--style-blend-weights), and the style strength moves along the line from the
    photo's own code (0: the photo painted in its own style) through the painting's
    (1) and beyond (more paint), the same slider the optimiser has.
    """

    def __init__(self, net: ArbitraryNet, info: Dict[str, Any], *, path: Optional[Path] = None,
                 device: Union[str, torch.device] = "cpu", precision: str = "fp32",
                 weights: Optional[os.PathLike] = None, **model_kwargs: Any) -> None:
        self.device = torch.device(device)
        self.precision = precision
        self.net = net.to(self.device).eval().requires_grad_(False)
        self.info = info
        self.path = path
        self.sha256 = sha256sum(path) if path is not None else None
        self.encode_size = int(info.get("training", {}).get("config", {}).get("encode_size", 256))
        self.model_kwargs = model_kwargs
        self._weights = weights
        self._vgg: Optional[torch.nn.Module] = None

    @property
    def name(self) -> str:
        return self.path.stem if self.path is not None else "arbitrary"

    def _reader(self) -> torch.nn.Module:
        if self._vgg is None:
            w = load_weights(self._weights)
            have = tuple(weights_widths(w)[: len(self.net.config.layer_channels)])
            if have != self.net.config.layer_channels:
                raise InputError(f"model {self.name}: it reads VGG-19 features of {self.net.config.layer_channels} "
                                 f"channels, but the weights in use have {have}")
            self._vgg = network(w, self.net.config.style_layers[-1], "max", self.device)
        return self._vgg

    @torch.no_grad()
    def encode_style(self, painting: ImageLike) -> torch.Tensor:
        """The style code (1, code_dim) of a painting (a path, PIL image or array)."""
        img = load_image(painting)
        if min(img.size) < MIN_STYLE_SIDE:
            raise InputError(f"style image is {img.width}x{img.height} px; the any-painting network needs at least "
                             f"{MIN_STYLE_SIDE} px on each side")
        return self._code(img)

    def _code(self, img: Image.Image) -> torch.Tensor:
        return self.net.encode(self.painting_stats(img, self.encode_size)).float()

    @torch.no_grad()
    def painting_stats(self, img: Image.Image, size: int) -> torch.Tensor:
        """(1, stats_dim): feature_stats of `img` read at `size` px on its long side, as the code reads it."""
        x = to_tensor(resize(img, size), self.device)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        layers = self.net.config.style_layers
        # Built outside inference mode: device.network caches it for the whole process, and a
        # training later in the same process (a web worker) runs it under autograd.
        reader = self._reader()
        with torch.inference_mode(), autocast(self.device, self.precision):
            feats = reader(x, layers)
        return feature_stats(feats, layers)

    def code_for(self, styles: Sequence[Union[ImageLike, torch.Tensor]], blend: Optional[Sequence[float]] = None,
                 strength: float = 1.0, photo: Optional[ImageLike] = None) -> torch.Tensor:
        """The code of `styles` (paintings or codes) mixed by `blend`, at `strength` from the photo's own code."""
        code = self._blend(styles, blend, strength)
        if strength == 1.0:
            return code
        if photo is None:
            raise InputError("a style strength other than 1 needs the photo (its own code is the zero point)")
        return self.toward(code, strength, photo)

    def _blend(self, styles: Sequence[Union[ImageLike, torch.Tensor]], blend: Optional[Sequence[float]],
               strength: float) -> torch.Tensor:
        """The code of `styles` mixed by `blend` (strength 1), once every choice is checked."""
        if not styles:
            raise InputError("the any-painting network needs a style image (a painting to paint with)")
        weights = list(blend) if blend else [1.0] * len(styles)
        if len(weights) != len(styles) or any(not w >= 0 for w in weights) or sum(weights) <= 0:
            raise InputError(f"style blend weights {weights}: give one weight >= 0 per style image, not all 0")
        if not 0 <= strength <= MAX_CODE_STRENGTH:
            raise InputError(f"style strength {strength}: must be in [0, {MAX_CODE_STRENGTH:g}] for the any-painting network")
        codes = [s if isinstance(s, torch.Tensor) and s.dim() == 2 else self.encode_style(s) for s in styles]
        return sum(w * c for w, c in zip(weights, codes)) / sum(weights)

    def toward(self, code: torch.Tensor, strength: float, photo: ImageLike) -> torch.Tensor:
        """The code `strength` of the way from the photo's own code (0) through `code` (1) and beyond."""
        own = self._code(load_image(photo))  # any photo the network paints (a small one too) has its own style
        return own + strength * (code - own)

    def for_style(self, styles: Union[ImageLike, torch.Tensor, Sequence[Union[ImageLike, torch.Tensor]]],
                  blend: Optional[Sequence[float]] = None, strength: float = 1.0,
                  photo: Optional[ImageLike] = None, name: Optional[str] = None) -> StyleModel:
        """An ordinary StyleModel painting in these styles: tiles, video, export and Ray take it as it is."""
        styles = _as_list(styles)
        return self._specialised(self.code_for(styles, blend, strength, photo),
                                 self._style_info(styles, blend, strength, name))

    def for_photos(self, styles: Union[ImageLike, torch.Tensor, Sequence[Union[ImageLike, torch.Tensor]]],
                   blend: Optional[Sequence[float]] = None, strength: float = 1.0,
                   name: Optional[str] = None) -> "PhotoStyled":
        """for_style for many photos (a folder): the paintings are read once, and at a strength other
        than 1 each photo gets its own network, whose zero point is that photo's own code."""
        styles = _as_list(styles)
        return PhotoStyled(self, self._blend(styles, blend, strength), strength,
                           self._style_info(styles, blend, strength, name))

    def _style_info(self, styles: Sequence[Any], blend: Optional[Sequence[float]], strength: float,
                    name: Optional[str]) -> Dict[str, Any]:
        """What a picture's sidecar says of its style: the paintings (names, sha256), the mix, the strength."""
        files = [Path(s) for s in styles if isinstance(s, (str, os.PathLike))]
        return {"name": name or ", ".join(p.stem for p in files) or "style", "from": self.name,
                "from_sha256": self.sha256 or "", "files": [p.name for p in files],
                "sha256": [sha256sum(p) for p in files],
                "blend": [float(w) for w in (blend or [1.0] * len(styles))], "strength": float(strength)}

    def _specialised(self, code: torch.Tensor, style: Dict[str, Any]) -> StyleModel:
        model = StyleModel(self.net.specialise(code.to(self.device)).cpu(), dict(self.info, style=style), path=None,
                           device=self.device, precision=self.precision, **self.model_kwargs)
        model.path, model.sha256 = self.path, self.sha256  # the file it came from, for sidecars
        return model

    def __call__(self, photo: ImageLike, style: Union[ImageLike, torch.Tensor, Sequence[Any]],
                 strength: float = 1.0) -> Image.Image:
        """Paint `photo` in `style` (a painting, a code from encode_style, or a list of them)."""
        return self.for_style(style, strength=strength, photo=photo)(photo)


def _as_list(styles: Any) -> List[Any]:
    return list(styles) if isinstance(styles, (list, tuple)) else [styles]


class PhotoStyled:
    """The any-painting network in given paintings at a style strength, for many photos (ArbitraryModel.for_photos).

    The strength moves along the line from a photo's own code to the paintings' code, so at
    a strength other than 1 every photo has its own network: `for_photo` makes it. It says
    what a model says of itself (name, path, sha256, device, precision, info), so the batch
    and run_network take it where they take a StyleModel.
    """

    def __init__(self, model: ArbitraryModel, code: torch.Tensor, strength: float, style: Dict[str, Any]) -> None:
        self.model, self.code, self.strength = model, code, strength
        self.info = dict(model.info, style=style)
        self.name, self.path, self.sha256 = model.name, model.path, model.sha256
        self.device, self.precision = model.device, model.precision

    @property
    def style_name(self) -> str:
        return self.info["style"]["name"]

    def for_photo(self, photo: ImageLike) -> StyleModel:
        """The network for this photo (as it will be painted: its size changes its own code)."""
        code = self.code if self.strength == 1.0 else self.model.toward(self.code, self.strength, photo)
        return self.model._specialised(code, self.info["style"])

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """The any-painting network with these paintings' code and strength, as one model file
        (what Ray workers open: `load_model` gives this PhotoStyled back)."""
        from ..models.modelfile import model_payload, save_model_file

        styled = {STYLED: {"code": self.code.detach().float().cpu().clone(), "strength": float(self.strength)}}
        return save_model_file(model_payload(self.model.net, family="arbitrary", style=self.info["style"],
                                             training=dict(self.model.info.get("training", {})), extra=styled), path)
