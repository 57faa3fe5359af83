"""The team's MLflow tracking server (`semops server start|stop|status`, `make server`): a real
`mlflow server` on the project's own PostgreSQL cluster (`tracking.postgres`), or on the database
MLFLOW_BACKEND_STORE_URI names, serving the artifacts itself, so a teammate needs only its URL.

Everything lives in one folder (by default mlruns/server/, git-ignored): the record server.json
(url, process ids, ports, backend, artifacts), the lock that makes two `start`s at once start
one server, the cluster, the artifacts, mlflow.log, the role's pgpass file. No password reaches
an argument, a log or the record: the server gets its backend and secrets through its
environment.
"""

from __future__ import annotations

import base64
import datetime
import logging
import os
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semops import paths
from semops.errors import SemopsError
from semops.io import locked, read_json, wait_until, write_bytes, write_json
from semops.redaction import redact
from semops.tracking import postgres, processes

log = logging.getLogger(__name__)

DEFAULT_PORT = 5050
DEFAULT_WORKERS = 2
LOOPBACK = ("127.0.0.1", "localhost", "::1")
DATABASE, AUTH_DATABASE = "mlflow", "mlflow_auth"
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
# The server's own variables, kept in its environment (processes.service_environment).
_SERVER_VARIABLES = ("PG*", "MLFLOW_SERVER_*", "MLFLOW_AUTH_*", "MLFLOW_SQLALCHEMYSTORE_*")


def default_folder() -> Path:
    return paths.mlruns_dir() / "server"


@dataclass(frozen=True)
class ServerSettings:
    """How to start the server. `backend_uri`: a database of the user's own (no cluster then);
    `credentials`: the admin's (user, password), turning MLflow's basic auth on; `cluster`: the
    PostgreSQL cluster's folder (default: <folder>/postgres)."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    workers: int = DEFAULT_WORKERS
    allow_remote: bool = False
    backend_uri: str | None = None
    credentials: tuple[str, str] | None = None
    cluster: Path | None = None


def credentials_from_env() -> tuple[str, str]:
    """The admin's credentials for a server with basic auth: MLflow's client variables, so the
    person who starts the server logs runs to it as that admin."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
    if not user or not password:
        raise SemopsError(
            "--auth needs the admin's credentials in MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (environment or .env); never on the command line"
        )
    return user, password


def check_host(host: str, allow_remote: bool) -> None:
    if host not in LOOPBACK and not allow_remote:
        raise SemopsError(
            f"refusing to listen on {host!r}: beyond this machine (not 127.0.0.1, localhost or "
            "::1) only with --allow-remote (make server SERVER_HOST=... ALLOW_REMOTE=1); then "
            "consider --auth"
        )
    if not 1 <= len(host) <= 253 or any(c.isspace() for c in host):
        raise SemopsError(f"not a host to listen on: {host!r}")


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        # As the server will: a port whose old connections linger (TIME_WAIT) is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host if host != "localhost" else "127.0.0.1", port))
        except OSError as exc:
            raise SemopsError(f"cannot listen on {host} port {port}: {exc.strerror}") from exc


def _record_file(folder: Path) -> Path:
    return folder / "server.json"


def read_record(folder: Path) -> dict[str, Any] | None:
    record = _record_file(folder)
    return read_json(record) if record.exists() else None


def _urls(host: str, port: int) -> tuple[str, str]:
    """(the URL clients use, the URL this machine probes the server on)."""
    if host in ("0.0.0.0", "::"):
        return f"http://{socket.gethostname()}:{port}", f"http://127.0.0.1:{port}"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}", f"http://{shown}:{port}"


def start(folder: Path, settings: ServerSettings) -> tuple[dict[str, Any], bool]:
    """Start the server unless it runs already; return its record and whether it was started
    now. Two processes starting at once take turns, the second finding the first's server."""
    check_host(settings.host, settings.allow_remote)
    folder = folder.absolute()
    with locked(folder / "server.lock", wait_message="server: waiting for process {holder}"):
        record = read_record(folder)
        if record is not None:
            if _is_ours(record, "mlflow"):
                _check_same_settings(record, _settings_summary(folder, settings))
                return record, False
            log.info("server: the server of %s has ended; starting it again", record["url"])
            _stop_recorded(record)
        return _start(folder, settings), True


def _settings_summary(folder: Path, settings: ServerSettings) -> dict[str, Any]:
    """What a second `start` must ask for to be answered by the server running."""
    if settings.backend_uri:
        backend = redact(settings.backend_uri)
    else:
        backend = f"PostgreSQL cluster {(settings.cluster or folder / 'postgres').absolute()}"
    auth = "on" if settings.credentials else "off"
    return {"host": settings.host, "port": settings.port, "auth": auth, "backend": backend}


def _check_same_settings(record: dict[str, Any], asked: dict[str, Any]) -> None:
    """Refuse a start asking for other settings than the running server's: answering "already
    running" would leave, say, a server without auth where auth was asked for."""
    cluster = record.get("cluster")
    running = {
        "host": record["host"],
        "port": record["port"],
        "auth": "on" if record["auth"] else "off",
        "backend": f"PostgreSQL cluster {cluster}" if cluster else record["backend"],
    }
    differ = [f"{k} {v} (asked: {asked[k]})" for k, v in running.items() if v != asked[k]]
    if differ:
        raise SemopsError(
            f"the server of {record['url']} is running with other settings ({'; '.join(differ)})"
            ": `semops server stop` (make server-stop) first"
        )


def _start(folder: Path, settings: ServerSettings) -> dict[str, Any]:
    _check_port_free(settings.host, settings.port)
    url, probe = _urls(settings.host, settings.port)
    cluster = (
        None if settings.backend_uri else postgres.Cluster(settings.cluster or folder / "postgres")
    )
    record: dict[str, Any] = {
        "url": url,
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "auth": settings.credentials is not None,
        "artifacts": str(folder / "artifacts"),
        "log": str(folder / "mlflow.log"),
        "cluster": None if cluster is None else str(cluster.data),
        "pids": {"mlflow": None, "postgres": None},
        # With the process ids, what tells our processes from later ones given the same ids.
        "boot_id": processes.boot_id(),
        "start_ticks": {"mlflow": None, "postgres": None},
        "state": "starting",
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    try:
        env = _prepare(folder, settings, cluster, record)
        write_json(_record_file(folder), record)  # from here on, `stop` finds the cluster
        process = _spawn(folder, settings, env)
        _note_process(record, "mlflow", process.pid)
        write_json(_record_file(folder), record)
        _wait_healthy(process, probe, Path(record["log"]))
    except BaseException:
        _clean_up_failed_start(folder, record)
        raise
    if settings.credentials:
        _check_admin(probe, settings.credentials)
    record["state"] = "running"
    write_json(_record_file(folder), record)
    if settings.host not in LOOPBACK and not settings.credentials:
        log.warning("server: %s is open to whoever reaches it (no --auth)", url)
    return record


def _clean_up_failed_start(folder: Path, record: dict[str, Any]) -> None:
    """Stop what a failed start started and remove its record; should that fail too, log it
    (the caller raises the start's own error) and keep the record, so `stop` can try again."""
    try:
        _stop_recorded(record)
    except Exception as exc:
        log.warning(
            "server: could not stop what the failed start started (%s); %s still names it: "
            "`semops server stop` tries again",
            redact(str(exc)),
            _record_file(folder),
        )
        return
    _record_file(folder).unlink(missing_ok=True)


def _prepare(
    folder: Path, settings: ServerSettings, cluster: postgres.Cluster | None, record: dict[str, Any]
) -> dict[str, str]:
    """The server's environment: its backend, and its secrets (none of them in its argv). The
    cluster, when it is ours, is started here."""
    # Not the whole environment: `make` exports .env's API keys, which have no place in a
    # long-lived process others reach; nor the client's MLFLOW_TRACKING_* (its password).
    env = processes.service_environment(
        *_SERVER_VARIABLES, "MLFLOW_BACKEND_STORE_URI", "MLFLOW_FLASK_SERVER_SECRET_KEY"
    )
    # Scorer jobs (GenAI) would start eight more processes that nothing here uses.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    auth_database = f"sqlite:///{folder / 'auth.db'}"
    if cluster is None:
        assert settings.backend_uri is not None
        env["MLFLOW_BACKEND_STORE_URI"] = settings.backend_uri
    else:
        cluster.ensure_initialized()
        if cluster.pid() is not None:
            # Left by a start killed before its record named the cluster: nothing else stops it.
            log.warning("server: stopping %s, left running by an interrupted start", cluster.data)
            cluster.stop()
        port = free_port()
        _note_process(record, "postgres", cluster.start(port))
        record["postgres_port"] = port
        pgpass = folder / "pgpass"
        cluster.ensure_databases(port, pgpass, (DATABASE, AUTH_DATABASE))
        env["PGPASSFILE"] = str(pgpass)
        env["MLFLOW_BACKEND_STORE_URI"] = postgres.backend_uri(port, DATABASE)
        auth_database = postgres.backend_uri(port, AUTH_DATABASE)
    record["backend"] = redact(env["MLFLOW_BACKEND_STORE_URI"])
    if settings.credentials:
        # EDIT for every user: teammates add versions to one registered model and move its
        # alias; deleting and granting stay with a resource's owner and the admin.
        config = folder / "auth.ini"
        write_bytes(
            config,
            b"[mlflow]\ndefault_permission = EDIT\n"
            + f"database_uri = {auth_database}\n".encode()
            + b"authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
        )
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
        env["MLFLOW_AUTH_ADMIN_USERNAME"], env["MLFLOW_AUTH_ADMIN_PASSWORD"] = settings.credentials
        # One key for all workers (MLflow's CSRF protection); a new one per start.
        env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(32))
    return env


def _spawn(folder: Path, settings: ServerSettings, env: dict[str, str]) -> subprocess.Popen[bytes]:
    artifacts = folder / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--workers",
        str(settings.workers),
    ]
    if settings.credentials:
        command += ["--app-name", "basic-auth"]
    if settings.host not in LOOPBACK and "MLFLOW_SERVER_ALLOWED_HOSTS" not in env:
        # MLflow answers 403 to a Host header that is not a local or private address, the URL
        # printed (http://<this machine's name>:<port>) included, unless allowed.
        urls = _urls(settings.host, settings.port)
        hosts = [urllib.parse.urlsplit(url).netloc for url in urls]
        hosts += [f"localhost:{settings.port}", f"127.0.0.1:{settings.port}"]
        command += ["--allowed-hosts", ",".join(dict.fromkeys(hosts))]
    with (folder / "mlflow.log").open("ab") as out:
        # A session of its own: `stop` ends the server and every worker as one process group.
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=folder,
            start_new_session=True,
        )


def _wait_healthy(process: subprocess.Popen[bytes], probe: str, log_file: Path) -> None:
    def up_or_ended() -> bool:
        return process.poll() is not None or _api_status(probe) in (200, 401)

    if wait_until(up_or_ended, START_TIMEOUT_S, interval=0.5) and process.poll() is None:
        return
    what = f"exited ({process.returncode})" if process.poll() is not None else "timed out"
    tail = log_file.read_text(errors="replace").strip().splitlines()[-15:]
    raise SemopsError(
        f"the MLflow server {what} before answering on {probe}; the end of "
        f"{log_file}:\n  " + "\n  ".join(redact(line) for line in tail)
    )


def _api_status(base: str, headers: dict[str, str] | None = None) -> int | None:
    """What an API route answers: 200 (or 401 under auth) when the server is up. Not /health,
    which MLflow answers whatever the Host header its other routes refuse."""
    return _answers(f"{base}/api/2.0/mlflow/experiments/search?max_results=1", headers)


def _answers(url: str, headers: dict[str, str] | None = None) -> int | None:
    """The HTTP status `url` answers with, None when nothing answers."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def _check_admin(probe: str, credentials: tuple[str, str]) -> None:
    """Warn when the credentials given are refused: MLflow creates its admin at the first
    start with auth and ignores the password given to later starts."""
    token = base64.b64encode(":".join(credentials).encode()).decode()
    if _api_status(probe, {"Authorization": f"Basic {token}"}) == 401:
        log.warning(
            "server: the server refuses MLFLOW_TRACKING_USERNAME/PASSWORD: its admin %r was "
            "created at its first start with auth, with the password given then",
            credentials[0],
        )


def stop(folder: Path) -> dict[str, Any] | None:
    """Stop the server and its cluster; return the record of what was stopped (None when
    nothing was running). Leaves no process of it behind."""
    folder = folder.absolute()
    with locked(folder / "server.lock", wait_message="server: waiting for process {holder}"):
        record = read_record(folder)
        if record is None:
            return None
        _stop_recorded(record)
        _record_file(folder).unlink(missing_ok=True)
        return record


def _stop_recorded(record: dict[str, Any]) -> None:
    pid = record["pids"]["mlflow"]
    if pid is not None and record.get("boot_id") == processes.boot_id():  # else none of it runs now
        processes.stop_group(pid, _is_ours(record, "mlflow"), STOP_TIMEOUT_S)
    if record.get("cluster"):
        postgres.Cluster(Path(record["cluster"])).stop()


def _note_process(record: dict[str, Any], name: str, pid: int) -> None:
    record["pids"][name] = pid
    record["start_ticks"][name] = processes.start_ticks(pid)


def _is_ours(record: dict[str, Any], name: str) -> bool:
    """Whether the record's `name` process runs still (server.json outlives a reboot)."""
    ticks = record.get("start_ticks", {}).get(name)
    return processes.same_process(record["pids"].get(name), record.get("boot_id"), ticks)


def status(folder: Path) -> dict[str, Any] | None:
    """The record of the server with what runs of it now (`alive`; `api`: the status an API
    route answers with, 200 or 401 when up, None when nothing answers); None when none was
    started."""
    record = read_record(folder.absolute())
    if record is None:
        return None
    alive = {name: _is_ours(record, name) for name in record["pids"]}
    return {**record, "alive": alive, "api": _api_status(_urls(record["host"], record["port"])[1])}
