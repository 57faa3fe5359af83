"""Run a stage's main function: a SemopsError becomes one clear line on stderr and exit code 1,
and BLAS runs on one thread (float sums in another order would change outputs between machines
with other core counts; torch and OpenMP threads are set by `train.threads`)."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run_stage(main: Callable[[], None]) -> None:
    from threadpoolctl import threadpool_limits

    from semops.errors import SemopsError

    try:
        with threadpool_limits(limits=1, user_api="blas"):
            main()
    except SemopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
