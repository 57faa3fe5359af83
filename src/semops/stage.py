"""Run a stage's main function: logging shows semops's messages, the project's .env is read, a
SemopsError becomes one clear line on stderr and exit code 1, and BLAS runs on one thread (float
sums in another order would change outputs between machines with other core counts; torch and
OpenMP threads are set by `train.threads`)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable


def run_stage(main: Callable[[], None]) -> None:
    from threadpoolctl import threadpool_limits

    from semops import log
    from semops.environment import load_project_env
    from semops.errors import SemopsError

    log.configure()
    load_project_env()
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            main()
    except SemopsError as exc:
        logging.getLogger("semops").error("error: %s", exc)
        sys.exit(1)
