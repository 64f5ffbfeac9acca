"""The job form, built from StylizeConfig so its defaults, help and choices never drift.

Only a few knobs are offered on the web (the CLI has them all): style strength
(a slider over `style_strength`), output size, and colour preservation and
preset when StylizeConfig has those fields.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type

from ..config import StylizeConfig
from ..errors import InputError
from .settings import Settings

# The strength slider sets style_strength (a multiplier on the calibrated style weight,
# the same strength on every painting) in powers of two: -3 is 1/8, 0 the default 1, +3 is 8.
STRENGTH_RANGE = (-3.0, 3.0)
STRENGTH_STEP = 0.5
OPTIONAL_CHOICES = ("preserve_colors", "preset")  # offered only where StylizeConfig has them
LABELS = {"preserve_colors": "Preserve colours", "preset": "Preset", "size": "Output size"}


@dataclass(frozen=True)
class Field:
    name: str  # the form field's name
    label: str
    kind: str  # "range" | "select"
    help: str
    default: Any
    choices: Tuple[Tuple[str, str], ...] = ()  # (value, text)
    min: float = 0
    max: float = 0
    step: float = 0


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _choices(cls: Type, f: Any) -> Tuple[str, ...]:
    """A field's choices: its metadata, else a module-level tuple/dict named after it (PRESETS...)."""
    if f.metadata.get("choices"):
        return tuple(f.metadata["choices"])
    import sys

    module = sys.modules[cls.__module__]
    for name in (f.name.upper(), f.name.upper() + "S", f.name.upper() + "_CHOICES"):
        value = getattr(module, name, None)
        if isinstance(value, (tuple, list, dict)) and value:
            return tuple(value)
    return ()


def form_fields(settings: Settings, cls: Type = StylizeConfig) -> List[Field]:
    by_name = {f.name: f for f in fields(cls)}
    out = [
        Field(
            "strength", "Style strength", "range",
            f"{by_name['style_strength'].metadata.get('help', '')}; the slider sets it from 1/8 to 8 "
            f"in powers of two (0 = {_default(by_name['style_strength']):g})",
            0.0, min=STRENGTH_RANGE[0], max=STRENGTH_RANGE[1], step=STRENGTH_STEP,
        )
    ]
    sizes = tuple(s for s in settings.sizes if s <= settings.max_size)
    out.append(Field(
        "size", LABELS["size"], "select", by_name["size"].metadata.get("help", ""),
        str(settings.default_size if settings.default_size in sizes else sizes[-1]),
        tuple((str(s), f"{s} px") for s in sizes),
    ))
    for name in OPTIONAL_CHOICES:
        f = by_name.get(name)
        if f is None:
            continue
        choices = _choices(cls, f)
        if not choices:
            continue
        default = _default(f)
        out.append(Field(
            name, LABELS.get(name, name.replace("_", " ").capitalize()), "select", f.metadata.get("help", ""),
            "" if default is None else str(default),
            (() if default is not None else (("", "none"),)) + tuple((str(c), str(c)) for c in choices),
        ))
    return out


def params_from_form(form: Mapping[str, Any], settings: Settings, cls: Type = StylizeConfig) -> Dict[str, Any]:
    """Turn submitted form values into StylizeConfig fields, checked by StylizeConfig itself."""
    names = {f.name for f in fields(cls)}
    params: Dict[str, Any] = {}
    strength = _number(form.get("strength"), "style strength", 0.0)
    lo, hi = STRENGTH_RANGE
    if not lo <= strength <= hi:
        raise InputError(f"style strength {strength:g} is out of range; it must be in [{lo:g}, {hi:g}]")
    if strength:
        # A multiplier on whatever style weight the run has (the preset's or the default).
        params["style_strength"] = round(2.0**strength, 6)
    size_text = form.get("size")
    if size_text not in (None, ""):
        size = _number(size_text, "size", 0)
        if size != int(size):
            raise InputError(f"size {size_text!r} must be a whole number of pixels")
        size = int(size)
        if size > settings.max_size:
            raise InputError(f"size {size} is over this server's limit of {settings.max_size} px")
        params["size"] = size
    for name in OPTIONAL_CHOICES:
        value = form.get(name)
        if name in names and value not in (None, ""):
            params[name] = str(value)
    make_config(params, settings, cls)  # raises InputError naming the value and the rule
    return params


def _base_config(cls: Type, preset: Optional[str]) -> Any:
    """The defaults with `preset`'s values applied (StylizeConfig.replace applies a preset first)."""
    return cls().replace(preset=preset) if preset else cls()


def make_config(params: Mapping[str, Any], settings: Settings, cls: Type = StylizeConfig) -> Any:
    """The run's config: defaults, then the chosen preset, then the form's values and the server's overrides."""
    values = {**params, **settings.overrides}
    if "size" not in params and "size" not in settings.overrides:
        values["size"] = settings.default_size
    preset = values.pop("preset", None)
    return _base_config(cls, preset).replace(**values)


def _number(text: Optional[Any], what: str, default: float) -> float:
    if text in (None, ""):
        return default
    try:
        value = float(str(text))
    except ValueError:
        raise InputError(f"{what} {str(text)[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"{what} {text!r} is not a finite number")
    return value
