"""Run a stage's main function: logging shows semops's messages, the project's .env is read, a
SemopsError becomes one clear line on stderr and exit code 1, and BLAS runs on one thread (float
sums in another order would change outputs between machines with other core counts; torch and
OpenMP threads are set by `train.threads`), and the run is reported as OpenLineage events
(semops.lineage: START, then COMPLETE or FAIL; never a reason for the stage to fail)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path


def run_stage(main: Callable[[], None]) -> None:
    from threadpoolctl import threadpool_limits

    from semops import log
    from semops.environment import load_project_env
    from semops.errors import SemopsError

    log.configure()
    load_project_env()
    try:
        with lineage_observed(), threadpool_limits(limits=1, user_api="blas"):
            main()
    except SemopsError as exc:
        logging.getLogger("semops").error("error: %s", exc)
        sys.exit(1)


def lineage_observed() -> AbstractContextManager[None]:
    """The stage reported as OpenLineage events where it runs in a DVC project; a stage's script
    run in a bare folder (as unit tests do) reports nothing, and a lineage client that cannot
    even be imported is one warning, never the stage's failure."""
    if not Path(".dvc").is_dir():
        return contextlib.nullcontext()
    try:
        from semops.lineage.run import observed, stage_name
    except ImportError as exc:
        logging.getLogger("semops").warning(
            "lineage: %s; the stage goes on, without lineage events", exc
        )
        return contextlib.nullcontext()
    return observed(stage_name())
