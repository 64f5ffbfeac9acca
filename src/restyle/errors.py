"""The few exceptions restyle raises.

The library raises; only the front ends (CLI, web) print and exit. Each error
carries the exit code the CLI should use: 2 for a user's bad input, 1 for a
failure at run time.
"""

from __future__ import annotations


class RestyleError(Exception):
    """Base class of every error restyle raises on purpose."""

    exit_code = 1


class InputError(RestyleError, ValueError):
    """A value or file given by the user breaks a rule; the message names both."""

    exit_code = 2


class WeightsError(RestyleError):
    """The VGG-19 weights are missing, corrupt or of an unknown format."""

    exit_code = 1


class WeightsFileError(WeightsError, InputError):
    """A file given as weights is not a VGG-19 weights file at all: bad input."""

    exit_code = 2


class ResourceError(RestyleError):
    """The job would not fit in memory (or another resource) on this machine."""

    exit_code = 1


class Cancelled(RestyleError):
    """The caller asked the engine to stop before it finished."""

    exit_code = 1


class Interrupted(Cancelled):
    """Ctrl-C stopped a run that kept its work (a training's checkpoint); the message says where."""

    exit_code = 130  # as for any Ctrl-C of the command (interrupts.EXIT_INTERRUPTED)


# What to try when a run runs out of memory; the CLI and the web worker both say it.
OUT_OF_MEMORY_HINT = "out of memory; try a smaller --size, a lower --max-memory or a --tile-size"


def is_out_of_memory(e: BaseException) -> bool:
    """True for the host's MemoryError and for torch's device out-of-memory errors.

    torch.OutOfMemoryError (CUDA's, a RuntimeError) is matched by name so that this
    module does not import torch; MPS reports its own as a plain RuntimeError.
    """
    if isinstance(e, MemoryError):
        return True
    names = {c.__name__ for c in type(e).__mro__}
    return "OutOfMemoryError" in names or (isinstance(e, RuntimeError) and "out of memory" in str(e))
