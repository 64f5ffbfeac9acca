"""restyle: neural style transfer (Gatys, Ecker & Bethge, CVPR 2016).

    import restyle
    img = restyle.stylize("photo.jpg", "starry_night.jpg", size=512)

Nothing heavy is imported here: torch, the engine and the error classes load on
first use of a public name (PEP 562), so `import restyle` and `restyle --help`
stay fast and a Ctrl-C during start-up never lands inside torch's import.
No web server, no progress bar either way.

    model = restyle.load_model("starry_night")   # a trained feed-forward network
    img = model("photo.jpg")                      # one pass
    img = restyle.load_model("arbitrary")("photo.jpg", style="painting.jpg")   # any painting, one pass
"""

__version__ = "0.1.0"

# Public name -> the submodule that defines it.
_LAZY = {
    "StylizeConfig": "config",
    "RestyleError": "errors",
    "InputError": "errors",
    "WeightsError": "errors",
    "Cancelled": "errors",
    "Interrupted": "errors",
    "Result": "optimiser.engine",
    "run": "optimiser.engine",
    "stylize": "optimiser.engine",
    "load_model": "networks.feedforward",
    "StyleModel": "networks.feedforward",
    "run_network": "networks.feedforward",
    "open_model": "networks.feedforward",
    "ArbitraryModel": "networks.feedforward",
    "train": "networks.style_training",
    "TrainConfig": "networks.style_training",
    "train_arbitrary": "networks.arbitrary_training",
    "ArbitraryTrainConfig": "config",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> object:
    from importlib import import_module

    module = _LAZY.get(name)
    if module is None:  # a submodule, as after an eager import: restyle.events, restyle.batch, ...
        if name.startswith("_"):
            raise AttributeError(f"module 'restyle' has no attribute {name!r}")
        try:
            return import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module 'restyle' has no attribute {name!r}") from None
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
