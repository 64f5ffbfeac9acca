"""`python -m restyle` and the `restyle` console script.

Ctrl-C is handled from the first instruction (see interrupts.py); the CLI and
everything it imports load afterwards.
"""

from .interrupts import install  # not `from . import interrupts`: that asks restyle.__getattr__ first

install()

import os  # noqa: E402
import sys  # noqa: E402


def main() -> int:
    from .cli.main import main as cli_main
    from .interrupts import EXIT_INTERRUPTED

    code = cli_main()
    if code == EXIT_INTERRUPTED:
        # The CLI caught the Ctrl-C, closed its bar, wrote no partial file and shut Ray down
        # (a finally): end here, as the start-up handler does. Returning let CPython end the
        # process *by* SIGINT (exit status -2, not 130) in 1 run of 10 interrupted just before
        # the first iteration, after our "interrupted" line: CPython marks a KeyboardInterrupt
        # as unhandled when it leaves code run through PyRun_*, even if Python code catches
        # it later, and re-raises SIGINT at exit (tests/test_interrupts.py caught it).
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
