"""`semops server start|stop|status`: the team's MLflow tracking server on PostgreSQL
(`semops.tracking.server`). Teammates point MLFLOW_TRACKING_URI at the URL it prints."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from semops.errors import SemopsError

# `semops server status` when no server runs, as LSB init scripts say "not running".
NOT_RUNNING = 3


def _describe(record: dict[str, Any]) -> list[str]:
    backend = record["backend"]
    if record.get("cluster"):
        backend += f" (PostgreSQL cluster {record['cluster']})"
    lines = [
        f"  backend    {backend}",
        f"  artifacts  {record['artifacts']} (served by the server: mlflow-artifacts:/)",
        f"  log        {record['log']}",
        f"  clients    MLFLOW_TRACKING_URI={record['url']} (in the environment or .env)",
    ]
    if record["auth"]:
        lines.append("             with MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    lines.append("  stop       semops server stop (or make server-stop)")
    return lines


def _start(args: argparse.Namespace) -> None:
    from semops.tracking import server

    if not 1 <= args.port <= 65535:
        raise SemopsError(f"--port {args.port}: not a port (1 to 65535)")
    if args.workers < 1:
        raise SemopsError(f"--workers {args.workers}: at least 1")
    settings = server.ServerSettings(
        host=args.host,
        port=args.port,
        workers=args.workers,
        allow_remote=args.allow_remote,
        backend_uri=os.environ.get("MLFLOW_BACKEND_STORE_URI") or None,
        credentials=server.credentials_from_env() if args.auth else None,
    )
    record, started = server.start(server.default_folder(), settings)
    pid = record["pids"]["mlflow"]
    if started:
        print(f"server: MLflow tracking server listening on {record['url']} (pid {pid})")
    else:
        print(f"server: already running on {record['url']} (pid {pid})")
    print("\n".join(_describe(record)))


def _stop(args: argparse.Namespace) -> None:
    from semops.tracking import server

    record = server.stop(server.default_folder())
    if record is None:
        print(f"server: not running (no server recorded in {server.default_folder()})")
        return
    pids = ", ".join(f"{name} {pid}" for name, pid in record["pids"].items() if pid)
    print(f"server: stopped the server of {record['url']} ({pids})")


def _status(args: argparse.Namespace) -> None:
    from semops.tracking import server

    found = server.status(server.default_folder())
    if found is None:
        print(f"server: not running (no server recorded in {server.default_folder()})")
        sys.exit(NOT_RUNNING)
    alive = found["alive"]
    up = alive.get("mlflow", False)
    api = found["api"]
    print(
        f"server: {found['url']} {'running' if up else 'NOT running'}; "
        f"its API {'answers ' + str(api) if api else 'does not answer'}"
    )
    for name, pid in found["pids"].items():
        if pid:
            print(f"  {name:<10} pid {pid} {'alive' if alive.get(name) else 'gone'}")
    print("\n".join(_describe(found)))
    if not up:
        sys.exit(NOT_RUNNING)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from semops.tracking.server import DEFAULT_PORT, DEFAULT_WORKERS

    parser = commands.add_parser("server", help="the team MLflow server on PostgreSQL")
    sub = parser.add_subparsers(dest="server_command", required=True)
    start = sub.add_parser(
        "start",
        help="start it (PostgreSQL under mlruns/server/ unless MLFLOW_BACKEND_STORE_URI is set)",
    )
    start.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    start.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    start.add_argument(
        "--allow-remote", action="store_true", help="allow a host beyond 127.0.0.1/localhost/::1"
    )
    start.add_argument(
        "--workers", type=int, default=DEFAULT_WORKERS, help="server worker processes"
    )
    start.add_argument(
        "--auth",
        action="store_true",
        help="MLflow basic auth; the admin is MLFLOW_TRACKING_USERNAME/PASSWORD (environment)",
    )
    start.set_defaults(func=_start)
    sub.add_parser("stop", help="stop it and its PostgreSQL").set_defaults(func=_stop)
    sub.add_parser("status", help="where it listens and what of it runs").set_defaults(func=_status)
