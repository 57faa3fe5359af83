"""The PostgreSQL cluster behind the team MLflow server (`tracking.server`): Debian's
`postgresql` binaries, a cluster of the project's own under a git-ignored folder, listening on
127.0.0.1 only, with a role and databases for MLflow.

PostgreSQL refuses to run as root: under root the cluster belongs to the `postgres` system user
(Debian's package creates it), and every PostgreSQL command runs as that user. The role's
password is generated here and kept only in a pgpass file (0600) that libpq reads through
PGPASSFILE, never in a URI, an argument or a log: the server receives it hashed.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import logging
import os
import pwd
import secrets
import shutil
import stat
import subprocess
from pathlib import Path

from semops.errors import SemopsError
from semops.io import write_bytes
from semops.tracking import processes

log = logging.getLogger(__name__)

ROLE = "mlflow"
# The system user Debian's package creates, who owns the cluster when we are root.
SYSTEM_USER = "postgres"
# A Unix socket path is at most 107 bytes (sun_path); the cluster's socket lives in its folder.
_SOCKET_PATH_MAX = 107
_PG_TIMEOUT_S = 120


@functools.cache
def bindir() -> Path:
    """The folder of initdb, pg_ctl and postgres: PATH, then `pg_config --bindir`, then the
    newest /usr/lib/postgresql/<version>/bin (Debian keeps them off PATH)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl", path=str(Path(found).resolve().parent)):
        return Path(found).resolve().parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            if out and (Path(out) / "initdb").exists():
                return Path(out)
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if versions:
        return Path(versions[-1]).parent
    raise SemopsError(
        "PostgreSQL's initdb was found neither on PATH, nor by pg_config, nor under "
        "/usr/lib/postgresql/*/bin: install Debian's postgresql (make postgres), or set "
        "MLFLOW_BACKEND_STORE_URI to a PostgreSQL database of your own"
    )


def _owner() -> pwd.struct_passwd | None:
    """The system user who runs the cluster when we are root; None: we run it ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise SemopsError(
            f"PostgreSQL refuses to run as root, and there is no {SYSTEM_USER!r} system user to "
            "run it: install Debian's postgresql package (it creates the user), or set "
            "MLFLOW_BACKEND_STORE_URI to a PostgreSQL database of your own"
        ) from None


def _check_reachable(folder: Path, user: pwd.struct_passwd) -> None:
    """Fail, naming the folder, when `user` cannot traverse one of `folder`'s ancestors."""
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for ancestor in reversed(folder.parents):
        mode = ancestor.stat()
        if mode.st_uid == user.pw_uid:
            allowed = bool(mode.st_mode & stat.S_IXUSR)
        elif mode.st_gid in groups:
            allowed = bool(mode.st_mode & stat.S_IXGRP)
        else:
            allowed = bool(mode.st_mode & stat.S_IXOTH)
        if not allowed:
            raise SemopsError(
                f"the PostgreSQL cluster folder {folder} is out of reach of the {user.pw_name!r} "
                f"user that runs it (PostgreSQL refuses root): it cannot enter {ancestor} (mode "
                f"{stat.filemode(mode.st_mode)}). Allow it (chmod o+x {ancestor}), move the "
                "project, or set MLFLOW_BACKEND_STORE_URI to a PostgreSQL database of your own"
            )


class Cluster:
    """A PostgreSQL cluster in `data` (its PGDATA, also the folder of its Unix socket and of
    its log, postgres.log), owned by whoever runs it."""

    def __init__(self, data: Path) -> None:
        self.data = data.absolute()
        self.log_file = self.data / "postgres.log"
        self.owner = _owner()

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(bindir() / args[0]), *args[1:]]
        if self.owner is not None:
            # setpriv (util-linux, essential in Debian) execs the command as the user directly.
            user = self.owner.pw_name
            command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *command]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=_PG_TIMEOUT_S,
            check=False,
            cwd="/",
            env=processes.service_environment("PG*"),  # the postmaster's, long-lived
        )
        if check and result.returncode != 0:
            raise SemopsError(
                f"PostgreSQL's {args[0]} failed for the cluster {self.data} "
                f"(exit {result.returncode}): {(result.stderr or result.stdout).strip()[-800:]}"
                + (f"; see {self.log_file}" if self.log_file.exists() else "")
            )
        return result

    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def ensure_initialized(self) -> None:
        """Create the cluster on first use: local socket connections trusted (the socket is
        in the cluster's 0700 folder, reachable by its owner and root only), TCP ones by
        password; listening on 127.0.0.1 only."""
        if len(str(self.data / ".s.PGSQL.65535")) > _SOCKET_PATH_MAX:
            raise SemopsError(
                f"the PostgreSQL cluster folder {self.data} is too deep for its Unix socket "
                f"(at most {_SOCKET_PATH_MAX} bytes): use a project path that is shorter"
            )
        if self.initialized():
            return
        self.data.parent.mkdir(parents=True, exist_ok=True)
        if self.owner is not None:
            _check_reachable(self.data, self.owner)
        self.data.mkdir(mode=0o700, exist_ok=True)
        if any(self.data.iterdir()):
            raise SemopsError(
                f"{self.data} holds files but no PostgreSQL cluster (no PG_VERSION): "
                "remove the folder, or move its files away"
            )
        if self.owner is not None:
            os.chown(self.data, self.owner.pw_uid, self.owner.pw_gid)
        self.data.chmod(0o700)
        log.info("server: creating the PostgreSQL cluster in %s", self.data)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SYSTEM_USER,
            "--encoding=UTF8",
            "--locale=C",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# semops: loopback only, the socket in the cluster's own folder\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.data}'\n"
            )

    def pid(self) -> int | None:
        """The postmaster's process id while the cluster runs."""
        if self._run("pg_ctl", "status", "-D", str(self.data), check=False).returncode != 0:
            return None
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().split()[0])
        return None

    def start(self, port: int) -> int:
        """Start the cluster on 127.0.0.1:`port`; return the postmaster's process id."""
        if self.owner is not None:
            _check_reachable(self.data, self.owner)
        self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            str(_PG_TIMEOUT_S),
            "-o",
            f"-p {port}",
        )
        pid = self.pid()
        if pid is None:
            raise SemopsError(
                f"the PostgreSQL cluster {self.data} stopped at once: see {self.log_file}"
            )
        return pid

    def stop(self) -> None:
        """Stop the cluster (fast: open sessions are ended) and wait for it; nothing if it is
        not running."""
        if self.initialized() and self.pid() is not None:
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")
            log.info("server: PostgreSQL cluster %s stopped", self.data)

    def ensure_databases(self, port: int, pgpass: Path, databases: tuple[str, ...]) -> None:
        """The MLflow role (its password in `pgpass`, made on first use) owning `databases`."""
        import psycopg2
        from psycopg2.extensions import encrypt_password

        password = _read_pgpass(pgpass) or _write_pgpass(pgpass)
        # Trusted: the socket folder is the cluster's own (see ensure_initialized).
        connection = psycopg2.connect(
            host=str(self.data), port=port, user=SYSTEM_USER, dbname="postgres"
        )
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                # Hashed here, so the plain password reaches no statement the server might log.
                verifier = encrypt_password(password, ROLE, connection, "scram-sha-256")
                cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,))
                verb = "ALTER" if cursor.fetchone() else "CREATE"
                cursor.execute(f"{verb} ROLE {ROLE} LOGIN PASSWORD %s", (verifier,))
                for name in databases:
                    cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                    if not cursor.fetchone():
                        cursor.execute(f'CREATE DATABASE "{name}" OWNER {ROLE}')
        finally:
            connection.close()


def _read_pgpass(pgpass: Path) -> str | None:
    try:
        line = pgpass.read_text().strip()
    except FileNotFoundError:
        return None
    fields = line.split(":")
    return fields[4] if len(fields) == 5 and fields[3] == ROLE and fields[4] else None


def _write_pgpass(pgpass: Path) -> str:
    """A new password for the role, written to `pgpass` (0600 from its creation: libpq ignores
    a pgpass file others can read)."""
    password = secrets.token_urlsafe(32)  # no ':' nor '\\', which pgpass would need escaped
    write_bytes(pgpass, f"127.0.0.1:*:*:{ROLE}:{password}\n".encode(), mode=0o600)
    return password


def backend_uri(port: int, database: str) -> str:
    """The SQLAlchemy URI of a database of the cluster: no password (libpq reads PGPASSFILE)."""
    return f"postgresql+psycopg2://{ROLE}@127.0.0.1:{port}/{database}"
