"""Progress of a long loop, for a person watching: a tqdm bar where stderr is a terminal, else
(DVC's captured output, CI, a log file) one log line every `log_every` steps and at the end, so
the log shows progress without a bar's hundreds of redraws."""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import Any


class Progress:
    def __init__(
        self,
        logger: logging.Logger,
        desc: str,
        total: int | None,
        unit: str,
        log_every: int,
        terminal: bool | None = None,
    ) -> None:
        self.logger, self.desc, self.total, self.unit = logger, desc, total, unit
        self.log_every = log_every
        self.done = 0
        self.logged_at = 0
        self.status = ""
        interactive = sys.stderr.isatty() if terminal is None else terminal
        self.bar: Any = None
        if interactive:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)

    def update(self, steps: int = 1, **status: float) -> None:
        """`steps` more done; `status` (e.g. losses) shown beside the count."""
        self.done += steps
        self.status = "  ".join(f"{k} {v:.4f}" for k, v in status.items())
        if self.bar is not None:
            self.bar.update(steps)
            if status:
                self.bar.set_postfix_str(self.status, refresh=False)
        elif self.done - self.logged_at >= self.log_every:
            self._log()

    def _log(self) -> None:
        self.logged_at = self.done
        of = f"/{self.total}" if self.total is not None else ""
        self.logger.info("%s: %s %d%s  %s", self.desc, self.unit, self.done, of, self.status)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.done > self.logged_at and kind is None:
            self._log()
