"""The Ray cluster at RAY_ADDRESS, as the data and research engines connect to it: the address
checked, the semops package shipped to every node with the job, Ray's own chatter kept out of
the stage's output."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import semops
from semops.errors import SemopsError

ADDRESS_VARIABLE = "RAY_ADDRESS"
# A reachable-looking address with no Ray behind it makes ray.init retry for minutes.
CONNECT_TIMEOUT_S = 10.0


def cluster_address(setting: str) -> str:
    """RAY_ADDRESS, or an error naming it and `setting` (the config key that asked for Ray).
    No local Ray is started in its place: it would add Ray's start-up to the stage and run on
    this machine's cores all the same, slower than the local engine."""
    address = os.environ.get(ADDRESS_VARIABLE, "").strip()
    if not address:
        raise SemopsError(
            f"{setting} is ray but {ADDRESS_VARIABLE} is not set: set it to the Ray cluster's "
            f"address (host:port of its head, as `ray start --head` prints), or set {setting} "
            "to local"
        )
    return address


def connect(
    address: str, setting: str, env_vars: dict[str, str] | None = None, preserve_order: bool = False
) -> None:
    """ray.init on the cluster at `address`, unless this process is connected already; every
    task and actor runs this process's semops code (runtime_env py_modules)."""
    import ray
    from ray.data import DataContext

    if not ray.is_initialized():
        probe(address, setting)
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            ray.init(
                address=address,
                log_to_driver=False,
                logging_level=logging.WARNING,
                runtime_env={
                    "py_modules": [str(Path(semops.__file__).parent)],
                    "excludes": ["__pycache__", "*.pyc"],
                    "env_vars": env_vars or {},
                },
            )
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise SemopsError(
                f"{ADDRESS_VARIABLE}={address!r}: cannot connect to a Ray cluster ({setting} is "
                f"ray): {exc}"
            ) from exc
    context = DataContext.get_current()
    context.execution_options.preserve_order = preserve_order
    context.enable_progress_bars = False
    context.print_on_execution_start = False


def probe(address: str, setting: str) -> None:
    """Fail fast where no server listens at a host:port address; other forms (auto,
    ray://...) are left to ray.init."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise SemopsError(
            f"{ADDRESS_VARIABLE}={address!r}: no Ray cluster answers there ({exc}); start one "
            f"(`ray start --head`) or set {setting} to local"
        ) from None
