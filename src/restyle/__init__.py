"""restyle: neural style transfer (Gatys, Ecker & Bethge, CVPR 2016).

    import restyle
    img = restyle.stylize("photo.jpg", "starry_night.jpg", size=512)

    model = restyle.load_model("starry_night")   # a trained feed-forward network
    img = model("photo.jpg")                      # one pass

Only the core is imported here: no web server, no progress bar.
"""

__version__ = "0.1.0"

from .config import StylizeConfig  # noqa: E402
from .errors import Cancelled, InputError, RestyleError, WeightsError  # noqa: E402
from .engine import Result, run, stylize  # noqa: E402
from .feedforward import StyleModel, load_model  # noqa: E402
from .train import TrainConfig, train  # noqa: E402  (the function; the module stays importable as restyle.train)

__all__ = ["StylizeConfig", "RestyleError", "InputError", "WeightsError", "Cancelled", "Result", "run", "stylize",
           "load_model", "StyleModel", "train", "TrainConfig", "__version__"]
