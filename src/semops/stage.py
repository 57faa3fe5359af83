"""Run a stage's main function: a SemopsError becomes one clear line on stderr and exit code 1."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run_stage(main: Callable[[], None]) -> None:
    from semops.errors import SemopsError

    try:
        main()
    except SemopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
