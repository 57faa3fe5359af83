"""Benchmark 10: the served model's latency. The track stage registers the pipeline's model as
`<tracking.experiment>-<data.name>` with the alias `champion`; `mlflow models serve` serves it
(`--env-manager local`, the project's sqlite store) and requests of 1 row and of 1,000 rows
(`dataframe_split` JSON) are timed from the client, one at a time over one keep-alive connection.

`run` drives it from benchmarks/run.py. `python -m benchmarks.serve inprocess ...`, run inside
the project, times the same requests' rows without HTTP: the semops scorer alone and the MLflow
pyfunc model (its input schema checks included), to show where a request's time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import (
    PYTHON,
    Context,
    helper_env,
    project_env,
    read_json,
    timed,
)
from benchmarks.report import Result, fmt_bytes, fmt_rate, fmt_s

if TYPE_CHECKING:
    import pandas as pd

TITLE = "10. Served model latency (`mlflow models serve`)"
RAW = Path("data/raw/credit/table.parquet")
WARM_UP = 20  # requests of each size before timing
BATCH = 1_000
START_TIMEOUT = 300.0


# ---- requests -----------------------------------------------------------------------------------


def _input_columns(project: Path) -> list[str]:
    spec = read_json(project / "data" / "models" / "model" / "featurizer.json")
    return [column["name"] for column in spec["input"]["columns"]]


def _frames(raw: pd.DataFrame, size: int, count: int) -> list[pd.DataFrame]:
    """`count` frames of `size` consecutive raw rows, each starting where the last ended,
    wrapping around the table."""
    import numpy as np

    frames = []
    for i in range(count):
        index = (np.arange(size) + i * size) % len(raw)
        frames.append(raw.iloc[index])
    return frames


def request_bodies(project: Path, single: int, batch: int) -> dict[str, list[bytes]]:
    """The JSON bodies, encoded before anything is timed: `dataframe_split` of the raw rows'
    input columns (missing values as null)."""
    import pandas as pd

    raw = pd.read_parquet(project / RAW)[_input_columns(project)]

    def body(frame: pd.DataFrame) -> bytes:
        split = json.loads(frame.to_json(orient="split", index=False))
        return json.dumps({"dataframe_split": split}).encode()

    return {
        "1": [body(f) for f in _frames(raw, 1, WARM_UP + single)],
        str(BATCH): [body(f) for f in _frames(raw, BATCH, WARM_UP + batch)],
    }


def _post(conn: http.client.HTTPConnection, body: bytes) -> tuple[float, int, bytes]:
    start = time.perf_counter()
    conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    payload = response.read()
    return time.perf_counter() - start, response.status, payload


def _predictions(payload: bytes) -> int:
    document = json.loads(payload)
    predictions = document.get("predictions", document) if isinstance(document, dict) else document
    if isinstance(predictions, dict):  # column-oriented
        return len(next(iter(predictions.values()), []))
    return len(predictions)


def time_requests(port: int, bodies: list[bytes], rows: int) -> dict[str, Any]:
    """Warm-up requests first (not counted), then each request's round trip, one at a time."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    seconds: list[float] = []
    try:
        for i, body in enumerate(bodies):
            elapsed, status, payload = _post(conn, body)
            if status != 200:
                raise RuntimeError(
                    f"POST /invocations ({rows} rows): HTTP {status}: {payload[:500]!r}"
                )
            if i == 0 or i == len(bodies) - 1:
                count = _predictions(payload)
                if count != rows:
                    raise RuntimeError(f"{rows} rows sent, {count} predictions back")
            if i >= WARM_UP:
                seconds.append(elapsed)
    finally:
        conn.close()
    return summarize(seconds, rows)


def summarize(seconds: list[float], rows: int) -> dict[str, Any]:
    ordered = sorted(seconds)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "rows": rows,
        "requests": len(seconds),
        "p50": statistics.median(seconds),
        "p95": pct(0.95),
        "p99": pct(0.99),
        "mean": statistics.fmean(seconds),
        "min": ordered[0],
        "max": ordered[-1],
        "rows_per_s": rows * len(seconds) / sum(seconds),
        "seconds": seconds,
    }


# ---- the server ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ping(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/ping")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def _group_rss(pgid: int) -> int:
    """Resident memory of every process in the server's process group (mlflow, uvicorn)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # after the name: state, ppid, pgrp
                for line in (entry / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
    return total


class Server:
    """`mlflow models serve` in its own process group, stopped (the whole group) on exit."""

    def __init__(self, project: Path, uri: str, log: Path) -> None:
        self.project, self.uri, self.log = project, uri, log
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds = 0.0

    @property
    def cmd(self) -> list[str]:
        return [
            "mlflow",
            "models",
            "serve",
            "-m",
            self.uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
        ]

    def __enter__(self) -> Server:
        env = project_env(
            self.project,
            MLFLOW_TRACKING_URI=tracking_uri(self.project),
            MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        )
        start = time.perf_counter()
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=self.project,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            while not _ping(self.port):
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"`{' '.join(self.cmd)}` exited ({self.proc.returncode}): {self.tail()}"
                    )
                if time.perf_counter() - start > START_TIMEOUT:
                    raise RuntimeError(f"server not up after {START_TIMEOUT:.0f} s: {self.tail()}")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - start
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def tail(self, n: int = 1500) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def rss(self) -> int:
        return _group_rss(self.proc.pid) if self.proc is not None else 0

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL after 15 s; then nothing of it is left."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=15)
        deadline = time.monotonic() + 15
        while _group_alive(pgid) and time.monotonic() < deadline:  # uvicorn after its parent
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            time.sleep(0.1)
        self.proc = None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tracking_uri(project: Path) -> str:
    return f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"


# ---- in-process comparison (run inside the project) ----------------------------------------------


def inprocess(uri: str, single: int, batch: int) -> dict[str, Any]:
    """The served requests' rows scored without HTTP: RawScorer.score on the DataFrames, and
    the MLflow pyfunc model's predict (schema enforcement, then the same scorer)."""
    import mlflow.pyfunc

    from semops.tabular.scoring import RawScorer

    project = Path.cwd()
    bodies = request_bodies(project, single, batch)
    frames = {size: [_frame(b) for b in items] for size, items in bodies.items()}
    scorer = RawScorer.load(project / "data" / "models" / "model")
    start = time.perf_counter()
    model = mlflow.pyfunc.load_model(uri)
    load = time.perf_counter() - start
    out: dict[str, Any] = {"pyfunc_load_seconds": load}
    for name, predict in (("scorer", scorer.score), ("pyfunc", model.predict)):
        for size, items in frames.items():
            seconds = []
            for i, frame in enumerate(items):
                start = time.perf_counter()
                predict(frame)
                if i >= WARM_UP:
                    seconds.append(time.perf_counter() - start)
            stats = summarize(seconds, int(size))
            stats.pop("seconds")
            out[f"{name}_{size}"] = stats
    return out


def _frame(body: bytes) -> pd.DataFrame:
    """A request body as the scoring server parses it (dataframe_split -> DataFrame)."""
    import pandas as pd

    split = json.loads(body)["dataframe_split"]
    return pd.DataFrame(split["data"], columns=split["columns"])


# ---- the driver ---------------------------------------------------------------------------------


def build(ctx: Context) -> tuple[Path, dict[str, float]]:
    """A fresh project through the tabular stages and track (research-embed and research-eval,
    which track does not need for the model, are skipped: `dvc repro evaluate`, then the track
    stage's script)."""
    project = ctx.fresh_project("serve")
    seconds = {}
    timed(["semops", "compose"], project)
    seconds["dvc repro evaluate"] = timed(
        ["dvc", "repro", "evaluate"], project, timeout=900
    ).seconds
    seconds["track"] = timed(["python", "stages/track.py"], project, timeout=600).seconds
    return project, seconds


def model_uri(project: Path) -> str:
    """models:/<tracking.experiment>-<data.name>@champion, from the project's params.yaml."""
    import yaml

    params = yaml.safe_load((project / "params.yaml").read_text())
    return f"models:/{params['tracking']['experiment']}-{params['data']['name']}@champion"


def measure(ctx: Context) -> dict[str, Any]:
    single, batch = ctx.args.serve_single, ctx.args.serve_batch
    project, build_seconds = build(ctx)
    uri = model_uri(project)
    bodies = request_bodies(project, single, batch)
    data: dict[str, Any] = {
        "uri": uri,
        "build_seconds": build_seconds,
        "body_bytes": {k: len(v[0]) for k, v in bodies.items()},
    }
    with Server(project, uri, project.parent / "serve.log") as server:
        data["cmd"] = " ".join([*server.cmd[:-1], "<port>"])
        data["start_seconds"] = server.start_seconds
        data["rss_after_start"] = server.rss()
        data["served"] = {
            "1": time_requests(server.port, bodies["1"], 1),
            str(BATCH): time_requests(server.port, bodies[str(BATCH)], BATCH),
        }
        data["rss_after_requests"] = server.rss()
        pgid = server.proc.pid if server.proc is not None else 0
    data["left_running"] = bool(pgid) and _group_alive(pgid)
    args = ["inprocess", "--uri", uri, "--single", str(single), "--batch", str(batch)]
    helper = [PYTHON, "-m", __name__, *args]
    env = {**helper_env(project), "MLFLOW_TRACKING_URI": tracking_uri(project)}
    data["inprocess"] = timed(helper, project, env=env, timeout=600).last_json()
    data["model"] = read_json(project / "data" / "models" / "model" / "model.json")["kind"]
    return data


def run(ctx: Context, result: Result) -> None:
    data = measure(ctx)
    result.raw = data
    served, inproc = data["served"], data["inprocess"]
    one, many = served["1"], served[str(BATCH)]
    rows = []
    for size, stats in served.items():
        scorer, pyfunc = inproc[f"scorer_{size}"], inproc[f"pyfunc_{size}"]
        rows.append(
            [
                f"{int(size):,}",
                str(stats["requests"]),
                _ms(stats["p50"]),
                _ms(stats["p95"]),
                _ms(stats["p99"]),
                _ms(stats["mean"]),
                _ms(stats["max"]),
                fmt_rate(stats["rows_per_s"]),
                fmt_bytes(data["body_bytes"][size]),
                _ms(pyfunc["p50"]),
                _ms(scorer["p50"]),
            ]
        )
    result.table(
        [
            "rows per request",
            "requests",
            "p50",
            "p95",
            "p99",
            "mean",
            "max",
            "rows/s",
            "request body",
            "in-process pyfunc predict p50",
            "in-process RawScorer.score p50",
        ],
        rows,
    )
    result.notes += [
        f"Reproduce: `python -m benchmarks.run --only serve` (`--serve-single "
        f"{one['requests']} --serve-batch {many['requests']}`).",
        f"Server: `{data['cmd']}` (what `make serve` runs) with "
        "MLFLOW_TRACKING_URI=sqlite:///<project>/mlruns/mlflow.db, "
        f"in a fresh project after `semops compose`, `dvc repro evaluate` and the track stage "
        f"(`python stages/track.py`), which registered the {data['model']} model. Up (GET /ping "
        f"200, model loaded) {fmt_s(data['start_seconds'])} after the command started; resident "
        f"memory of its processes {fmt_bytes(data['rss_after_start'])} then, "
        f"{fmt_bytes(data['rss_after_requests'])} after the requests. Stopped at the end "
        f"(SIGTERM to its process group): "
        f"{'a process was LEFT RUNNING' if data['left_running'] else 'nothing left running'}.",
        f"Client: http.client in the benchmark's process, one keep-alive connection, one request "
        f"at a time; POST /invocations with a pre-encoded `dataframe_split` body of raw rows of "
        f"the credit table (the model's input columns, missing values as null); {WARM_UP} "
        "warm-up requests of each size first, not counted. Latency: request sent to response "
        "read.",
        "In-process: the same rows as DataFrames, in a process of their own: the MLflow pyfunc "
        f"model's predict (loaded from the same URI in {fmt_s(inproc['pyfunc_load_seconds'])}: "
        "input-schema enforcement + semops' scorer) and semops' RawScorer.score alone; served "
        "minus pyfunc is HTTP, JSON and the scoring server.",
    ]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    steps = parser.add_subparsers(dest="step", required=True)
    inp = steps.add_parser("inprocess")
    inp.add_argument("--uri", required=True)
    inp.add_argument("--single", type=int, default=200)
    inp.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    print(json.dumps(inprocess(args.uri, args.single, args.batch)))


if __name__ == "__main__":
    main()
