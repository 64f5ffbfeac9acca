"""Export a trained model to ONNX (opset >= 17, any height and width) and check it.

The check runs the exported graph in onnxruntime on two differently shaped
random pictures and compares with PyTorch; a model that disagrees by more
than `TOLERANCE` (on the 0-255 scale) raises instead of leaving a wrong file.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch

from ..errors import InputError, RestyleError
from .feedforward import load_model

MIN_OPSET = 17
TOLERANCE = 0.5  # 0-255 scale: half a grey level after rounding
CHECK_SIZES = ((96, 128), (161, 75))  # different aspects, one not a multiple of the stride


@dataclass(frozen=True)
class ExportResult:
    path: Path
    opset: int
    max_abs_diff: Optional[float]
    checked_sizes: Tuple[Tuple[int, int], ...]
    style_long_side: Optional[int] = None  # the any-painting network: the size its `style` input is read at


class _Clamped(torch.nn.Module):
    """What stylize_tensor returns: the network's output clamped to 0-255."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).clamp(0, 255)


class _ArbitraryGraph(torch.nn.Module):
    """The any-painting network as one graph: (image, style) -> painting, the painting read by VGG-19 inside.

    `style` is the painting as (1, 3, h, w) RGB 0-255, resized to the model's encode size on its
    long side as restyle reads it (the file's metadata says it: `style_long_side`).
    """

    def __init__(self, model: "ArbitraryModel"):  # noqa: F821
        super().__init__()
        self.net, self.vgg = model.net, model._reader()

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        from ..models.arbitrary import feature_stats

        layers = self.net.config.style_layers
        code = self.net.encode(feature_stats(self.vgg(style, layers), layers))
        return self.net(x, code).clamp(0, 255)


def export_onnx(
    model: Union[str, os.PathLike], output: Union[str, os.PathLike], *, opset: int = MIN_OPSET, check: bool = True
) -> ExportResult:
    out = Path(output)
    if out.suffix != ".onnx":
        raise InputError(f"output {out}: an ONNX file must end in .onnx")
    if not out.parent.is_dir():
        raise InputError(f"output {out}: folder {out.parent} does not exist")
    if opset < MIN_OPSET:
        raise InputError(f"opset {opset} is below {MIN_OPSET} (InstanceNormalization and reflect padding need it)")
    m = load_model(model)
    arbitrary = hasattr(m, "encode_style")  # the any-painting network takes the painting as a second input
    net = (_ArbitraryGraph(m) if arbitrary else _Clamped(m.net)).eval().float()
    example: Tuple[torch.Tensor, ...] = (torch.rand(1, 3, 64, 64) * 255,)
    names, axes = ["image"], {"image": {0: "batch", 2: "height", 3: "width"},
                              "painting": {0: "batch", 2: "height", 3: "width"}}
    if arbitrary:
        example += (torch.rand(1, 3, 64, 48) * 255,)
        names.append("style")
        axes["style"] = {2: "style_height", 3: "style_width"}
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter's notes on constant folding and instance norm's training
            # flag (exported with input statistics, which is what we want): not the user's concern.
            warnings.simplefilter("ignore")
            torch.onnx.export(net, example, str(tmp), opset_version=opset, dynamo=False,
                              input_names=names, output_names=["painting"], dynamic_axes=axes)
        side = int(m.encode_size) if arbitrary else None
        if side is not None:
            _set_metadata(tmp, {"style_long_side": str(side)})
        diff = check_onnx(tmp, net if arbitrary else m.net) if check else None
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(out, opset, diff, CHECK_SIZES if check else (), side)


def _set_metadata(path: Path, props: Dict[str, str]) -> None:
    """Add key/value metadata to an ONNX file (what a user of onnxruntime reads with modelmeta.custom_metadata_map)."""
    import onnx

    proto = onnx.load(str(path))
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(path))


def check_onnx(path: Union[str, os.PathLike], net: torch.nn.Module) -> float:
    """Largest |onnxruntime - PyTorch| over CHECK_SIZES; raises if above TOLERANCE."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise InputError("checking the export needs onnxruntime: pip install 'restyle[onnx]' (or pass --no-check)") from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    g = torch.Generator().manual_seed(0)
    two_inputs = len(session.get_inputs()) == 2  # the any-painting network: image and style
    for h, w in CHECK_SIZES:
        x = torch.rand(2, 3, h, w, generator=g) * 255
        feed = {"image": x}
        if two_inputs:
            feed["style"] = torch.rand(1, 3, w, h, generator=g) * 255
        with torch.no_grad():
            ref = net(*feed.values()).clamp(0, 255)
        got = torch.from_numpy(session.run(None, {k: v.numpy() for k, v in feed.items()})[0])
        if got.shape != ref.shape:
            raise RestyleError(f"ONNX export: output shape {tuple(got.shape)} differs from PyTorch's {tuple(ref.shape)} at {h}x{w}")
        worst = max(worst, float((got - ref).abs().max()))
    if worst > TOLERANCE:
        raise RestyleError(f"ONNX export disagrees with PyTorch by {worst:.3g} (> {TOLERANCE}) on the 0-255 scale")
    return worst
