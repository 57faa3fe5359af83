"""Logging for the entry points: library code reports through `logging`; the CLI and the stage
scripts call `configure`, which shows semops's records as plain lines on stderr, as a person reads
them (stdout stays for results, such as search hits or JSON). Other libraries show only their
warnings."""

from __future__ import annotations

import logging
import sys


def configure(level: int = logging.INFO) -> None:
    """Idempotent: a second call replaces the handler of the first."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("semops").setLevel(level)
