"""Every knob of restyle, with its default, in frozen dataclasses (standard library only, plus
the pure layer table): `StylizeConfig` (stylize.py), `ExplainConfig` (explain.py), and the
trained networks' `TrainConfig` / `UpscalerTrainConfig` (train.py). The CLI flags and the web
form are built from their fields.
"""

from .explain import ExplainConfig  # noqa: F401
from .stylize import (  # noqa: F401
    BLOCK_DEPTHS, DEVICES, FEATURE_LAYERS, INIT_CHOICES, MAX_INPUT_PIXELS, MAX_SIZE, MAX_STRENGTH, MIN_SIZE,
    MIN_TILE_SIZE, OPTIMIZERS, PAINT_LIMIT, POOLINGS, PRECISIONS, PRESERVE_COLORS, PRESET_HELP, PRESET_NAMES,
    PRESETS, STYLE_NORMS, TARGET_DEEP_WEIGHTS, VGG19_LAYERS, StylizeConfig, coerce_fields, valid_device,
)
from .train import TRAIN_PRECISIONS, ArbitraryTrainConfig, UPSCALE_FEATURE_LAYERS, TrainBase, TrainConfig, UpscalerTrainConfig  # noqa: F401
