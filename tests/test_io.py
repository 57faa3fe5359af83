"""io: atomic writes, readable table errors, byte-stable JSON."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from semops.errors import SemopsError
from semops.io import (
    atomic_path,
    dump_json,
    read_json,
    read_table,
    sha256_file,
    write_bytes,
    write_csv,
    write_json,
    write_parquet,
)

# ------------------------------------------------------------------- atomic_path


def test_atomic_path_replaces_the_target_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out" / "metrics.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp != target
        tmp.write_text("new")
        assert not target.exists()  # nothing visible until the block ends
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_atomic_path_keeps_the_previous_content_when_the_block_raises(tmp_path: Path) -> None:
    target = tmp_path / "data.parquet"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="killed"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half-writ")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["data.parquet"]


def test_atomic_path_leaves_nothing_when_there_was_no_previous_file(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "new.json") as tmp:
        tmp.write_text("{")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_when_the_block_never_writes(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(ValueError), atomic_path(target):
        raise ValueError
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_write_parquet_failure_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "split.parquet"
    write_parquet(target, pd.DataFrame({"a": [1, 2]}))
    before = target.read_bytes()
    unwritable = pd.DataFrame({"a": [object(), object()]})
    with pytest.raises(Exception):  # noqa: B017 - pyarrow's own error type
        write_parquet(target, unwritable)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["split.parquet"]


# -------------------------------------------------------------------- read_table


def test_read_table_round_trips_parquet_and_csv(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1.5, np.nan], "b": ["x", "y"]})
    write_parquet(tmp_path / "t.parquet", frame)
    pd.testing.assert_frame_equal(read_table(tmp_path / "t.parquet"), frame, check_dtype=False)
    (tmp_path / "t.csv").write_text("a,b\n1.5,x\n,y\n")
    pd.testing.assert_frame_equal(read_table(str(tmp_path / "t.csv")), frame, check_dtype=False)


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("bad.parquet", b"PAR1 this is not parquet", "Parquet"),
        ("empty.parquet", b"", "Parquet"),
        ("ragged.csv", b"a,b\n1,2\n3,4,5,6\n", "CSV"),
        ("quote.csv", b'a,b\n"1,2\n', "CSV"),
        ("binary.csv", b"\xff\xfe\x00\x81,\x90\n\xc3\x28", "CSV"),
        ("empty.csv", b"", "CSV"),
    ],
)
def test_read_table_names_the_file_when_invalid(
    tmp_path: Path, name: str, content: bytes, kind: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SemopsError) as info:
        read_table(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not a valid {kind} file")


def test_read_table_truncated_parquet(tmp_path: Path) -> None:
    path = tmp_path / "cut.parquet"
    write_parquet(path, pd.DataFrame({"a": range(100)}))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(SemopsError, match="not a valid Parquet file") as info:
        read_table(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name", ["table.xlsx", "table.json", "table"])
def test_read_table_unsupported_suffix(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("a,b\n1,2\n")
    with pytest.raises(SemopsError, match="unsupported file type") as info:
        read_table(path)
    assert str(info.value).startswith(f"{path}: ")


def test_read_table_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SemopsError, match="file not found") as info:
        read_table(tmp_path / "nope.parquet")
    assert "nope.parquet" in str(info.value)


# -------------------------------------------------------------------------- JSON


def test_write_json_is_byte_stable(tmp_path: Path) -> None:
    first = {"b": [1, 2.5, None], "a": {"y": "é", "x": True}}
    second = {"a": {"x": True, "y": "é"}, "b": [1, 2.5, None]}  # same content, other key order
    write_json(tmp_path / "1.json", first)
    write_json(tmp_path / "2.json", second)
    write_json(tmp_path / "3.json", json.loads((tmp_path / "1.json").read_text()))
    raw = (tmp_path / "1.json").read_bytes()
    assert raw == (tmp_path / "2.json").read_bytes() == (tmp_path / "3.json").read_bytes()
    expected = (
        '{\n  "a": {\n    "x": true,\n    "y": "é"\n  },\n'
        '  "b": [\n    1,\n    2.5,\n    null\n  ]\n}\n'
    )
    assert raw == expected.encode()
    assert sha256_file(tmp_path / "1.json") == sha256_file(tmp_path / "2.json")


def test_dump_json_rejects_nan() -> None:
    with pytest.raises(ValueError):
        dump_json({"loss": float("nan")})


def test_write_json_then_read_json(tmp_path: Path) -> None:
    obj = {"rows": {"raw": 10, "clean": 8}, "classes": ["bad", "good"]}
    write_json(tmp_path / "r.json", obj)
    assert read_json(tmp_path / "r.json") == obj


def test_read_json_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SemopsError, match="file not found"):
        read_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SemopsError, match="not valid JSON") as info:
        read_json(bad)
    assert str(bad) in str(info.value)


# ---------------------------------------------------------------------- others


def test_write_bytes_and_sha256(tmp_path: Path) -> None:
    import hashlib

    data = bytes(range(256)) * 5000
    write_bytes(tmp_path / "blob", data)
    assert (tmp_path / "blob").read_bytes() == data
    assert sha256_file(tmp_path / "blob", chunk_size=1000) == hashlib.sha256(data).hexdigest()


def test_write_csv(tmp_path: Path) -> None:
    write_csv(tmp_path / "h.csv", {"epoch": [1, 2], "loss": [0.5, 0.1 + 0.2]})
    assert (tmp_path / "h.csv").read_text() == "epoch,loss\n1,0.5\n2,0.30000000000000004\n"
    with pytest.raises(ValueError):
        write_csv(tmp_path / "bad.csv", {"a": [1, 2], "b": [1]})
    assert not (tmp_path / "bad.csv").exists()


def test_atomic_dir_replaces_a_folder_whole(tmp_path: Path) -> None:
    from semops.io import atomic_dir

    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with atomic_dir(target) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "c").write_text("3")
        raise RuntimeError("fails mid-write")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_atomic_dir_recovers_the_previous_folder_after_a_kill_between_renames(
    tmp_path: Path,
) -> None:
    from semops.io import atomic_dir

    target = tmp_path / "model"
    stranded = tmp_path / ".model.x1.previous" / "model"  # what a kill between the renames leaves
    stranded.mkdir(parents=True)
    (stranded / "weights").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target):
        raise RuntimeError("this write fails too")
    assert (target / "weights").read_text() == "old"


# ------------------------------------------------------------------- locks


def test_locked_without_waiting_names_the_holder(tmp_path: Path) -> None:
    import os

    from semops.io import FileLockedError, locked

    lock = tmp_path / "sub" / "store.lock"
    with locked(lock, timeout=0):
        # flock conflicts between two opens of the file, in one process too
        with pytest.raises(FileLockedError) as caught, locked(lock, timeout=0):
            pass
        assert caught.value.holder == str(os.getpid())
        assert str(caught.value) == f"{lock} is locked by process {os.getpid()}"
    with locked(lock, timeout=0):  # released at the end of the block
        pass


def test_locked_gives_up_after_its_timeout(tmp_path: Path) -> None:
    import time

    from semops.io import FileLockedError, locked

    lock = tmp_path / "store.lock"
    with locked(lock):
        started = time.monotonic()
        with (
            pytest.raises(FileLockedError, match=r"still, after waiting 0\.2 s"),
            locked(lock, timeout=0.2),
        ):
            pass
        assert 0.2 <= time.monotonic() - started < 2


def test_wait_until_returns_whether_the_predicate_came_true() -> None:
    from semops.io import wait_until

    calls = iter([False, False, True])
    assert wait_until(lambda: next(calls), timeout=5, interval=0.01)
    assert not wait_until(lambda: False, timeout=0.05, interval=0.01)
    assert wait_until(lambda: True, timeout=0, interval=1)
