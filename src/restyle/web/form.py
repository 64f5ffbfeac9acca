"""The job form, built from StylizeConfig so its defaults, help and choices never drift.

Only a few knobs are offered on the web (the CLI has them all): style strength
(a slider over `style_strength`), output size, and colour preservation and
preset when StylizeConfig has those fields. Defaults and choices come from
StylizeConfig; the help is written for the page (the config's help speaks of
flags and of alpha and beta, which mean nothing in a form).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type

from ..config import PRESET_HELP, PRESETS, StylizeConfig
from ..errors import InputError
from .settings import Settings

# The strength slider sets style_strength (a multiplier on the style weight; with style_norm
# "target" the same push on every painting) in powers of two: -3 is 1/8, 0 the default 1, +3 is 8.
STRENGTH_RANGE = (-3.0, 3.0)
STRENGTH_STEP = 0.5
OPTIONAL_CHOICES = ("preserve_colors", "preset")  # offered only where StylizeConfig has them
LABELS = {"preserve_colors": "Preserve colours", "preset": "Preset", "size": "Output size"}
HELP = {
    "strength": "how much of the painting's style goes into your photo: ×1 is the usual balance, "
                "up to ×8 for more brushwork, down to ×1/8 to keep more of the photo",
    "size": "long side of the picture in pixels; each doubling takes about four times as long. "
            "Auto: the preset's size, else {default} px",
    "preserve_colors": "keep your photo's colours: luminance paints only light and dark, histogram recolours "
                       "the painting to your photo's colours first",
    "preset": "ready-made settings; an output size chosen above wins over the preset's",
}
AUTO_SIZE = ""  # the size box's first choice: the preset's size, else the server's default


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
        Field("strength", "Style strength", "range", HELP["strength"],
              0.0, min=STRENGTH_RANGE[0], max=STRENGTH_RANGE[1], step=STRENGTH_STEP)
    ]
    sizes = tuple(s for s in settings.sizes if s <= settings.max_size)
    # Auto first and chosen: a number here would always be sent and override the preset's size.
    out.append(Field(
        "size", LABELS["size"], "select", HELP["size"].format(default=settings.default_size), AUTO_SIZE,
        ((AUTO_SIZE, f"auto ({settings.default_size} px)"),) + tuple((str(s), f"{s} px") for s in sizes),
    ))
    for name in OPTIONAL_CHOICES:
        f = by_name.get(name)
        if f is None:
            continue
        choices = _choices(cls, f)
        if not choices:
            continue
        default = _default(f)
        texts = PRESET_HELP if name == "preset" else {}
        out.append(Field(
            name, LABELS.get(name, name.replace("_", " ").capitalize()), "select",
            HELP.get(name, f.metadata.get("help", "")),
            "" if default is None else str(default),
            (() if default is not None else (("", "none"),))
            + tuple((str(c), f"{c}: {texts[c]}" if c in texts else str(c)) for c in choices),
        ))
    return out


def params_from_form(form: Mapping[str, Any], settings: Settings, cls: Type = StylizeConfig) -> Dict[str, Any]:
    """Turn submitted form values into StylizeConfig fields, checked by StylizeConfig itself."""
    names = {f.name for f in fields(cls)}
    params: Dict[str, Any] = strength_param(form)
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
    cfg = make_config(params, settings, cls)  # raises InputError naming the value and the rule
    if cfg.size > settings.max_size:  # a preset's own size
        raise InputError(f"preset {params.get('preset')} paints at {cfg.size} px, over this server's limit of "
                         f"{settings.max_size} px; choose an output size")
    return params


def strength_param(form: Mapping[str, Any]) -> Dict[str, Any]:
    """{"style_strength": 2**slider} from the strength slider, {} at its middle (the run's own weight)."""
    strength = _number(form.get("strength"), "style strength", 0.0)
    lo, hi = STRENGTH_RANGE
    if not lo <= strength <= hi:
        raise InputError(f"style strength {strength:g} is out of range; it must be in [{lo:g}, {hi:g}]")
    # A multiplier on whatever style weight the run has (the preset's or the default).
    return {"style_strength": round(2.0**strength, 6)} if strength else {}


def preset_sizes(settings: Settings) -> Dict[str, int]:
    """The size each preset paints at when the size box is on auto (for the form's script)."""
    return {name: int(values.get("size", settings.default_size)) for name, values in PRESETS.items()}


def _base_config(cls: Type, preset: Optional[str]) -> Any:
    """The defaults with `preset`'s values applied (StylizeConfig.replace applies a preset first)."""
    return cls().replace(preset=preset) if preset else cls()


def make_config(params: Mapping[str, Any], settings: Settings, cls: Type = StylizeConfig) -> Any:
    """The run's config: defaults, then the chosen preset, then the form's values and the server's overrides."""
    values = {**params, **settings.overrides}
    preset = values.pop("preset", None)
    if "size" not in values and "size" not in PRESETS.get(preset or "", {}):
        values["size"] = settings.default_size  # the server's default, unless the preset has its own
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
