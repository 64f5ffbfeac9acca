"""`python -m restyle` and the `restyle` console script.

Ctrl-C is handled from the first instruction (see interrupts.py); the CLI and
everything it imports load afterwards.
"""

from .interrupts import install  # not `from . import interrupts`: that asks restyle.__getattr__ first

install()

import sys  # noqa: E402


def main() -> int:
    from .cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
