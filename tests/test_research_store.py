"""The research index: Qdrant's in-process engine (EdgeStore) on disk, really run, and the
server backend (ServerStore) through qdrant-client's local mode, which runs the same client
calls; the lock a second process meets; mismatched indexes; a server answering errors. What
local mode ignores, the cluster settings, is checked on the wire: a small HTTP server answers
the collection requests as Qdrant does (no Qdrant server can be installed here)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from qdrant_client import QdrantClient

from semops.config.research import ClusterConfig, ResearchConfig, StoreConfig
from semops.config.schema import parse_section
from semops.errors import ConfigError, SemopsError
from semops.research.index import sync
from semops.research.index.embed.base import Embedder
from semops.research.index.store.base import BATCH, Hit, IndexMismatchError, Point, Store
from semops.research.index.store.edge import EdgeStore, IndexLockedError
from semops.research.index.store.server import Mode, ServerStore

DIM = 8
EMBEDDER = "test:hash-8"

TEXTS = {
    "copy": "How do I copy an object? Use copy.deepcopy() for nested objects.",
    "dogs": "Dogs bark at night; the dog barks loudly at strangers.",
    "cats": "Cats sleep all day and a cat purrs when it is running out of food.",
    "gc": "Garbage collection frees objects that nothing refers to.",
    "lambda": "Why do lambdas defined in a loop with different values all return the same result?",
}


def point_id(n: int) -> str:
    return str(uuid.UUID(int=n))


def dense(p: Point) -> np.ndarray:
    assert p.vector is not None  # every point of these tests has a dense vector
    return p.vector


def point(n: int, vector: np.ndarray, text: str, **payload: object) -> Point:
    return Point(
        id=point_id(n),
        vector=vector,
        text=text,
        payload={
            "chunk_id": uuid.UUID(int=n).hex,
            "source": f"test:{n}",
            "title_path": ["Test", f"Section {n}"],
            "page": None,
            "text": text,
            "text_sha256": f"sha-{n}",
            "n_tokens": len(text.split()),
            **payload,
        },
    )


def corpus() -> list[Point]:
    """One point per text, each vector along its own axis plus a little of the next one."""
    points = []
    for n, text in enumerate(TEXTS.values(), start=1):
        vector = np.zeros(DIM, dtype=np.float32)
        vector[n - 1] = 1.0
        vector[n] = 0.1 * n
        points.append(point(n, vector, text))
    return points


def random_points(count: int, seed: int) -> list[Point]:
    """Random vectors and texts of 12 words from 40, the last point's only stopwords."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(40)]
    texts = [" ".join(rng.choice(words, size=12)) for _ in range(count - 1)] + ["and the of"]
    return [
        point(n, rng.normal(size=DIM).astype(np.float32), text)
        for n, text in enumerate(texts, start=1)
    ]


@pytest.fixture
def index_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "research" / "index"


@pytest.fixture
def edge(index_path: Path) -> Iterator[EdgeStore]:
    with EdgeStore(index_path, DIM, EMBEDDER) as store:
        store.upsert(corpus())
        yield store


def exact_cosine_ranking(points: list[Point], query: np.ndarray) -> list[str]:
    matrix = np.stack([dense(p) / np.linalg.norm(dense(p)) for p in points])
    scores = matrix @ (query / np.linalg.norm(query))
    return [
        points[i].id for i in sorted(range(len(points)), key=lambda i: (-scores[i], points[i].id))
    ]


# ----------------------------------------------------------------------------- EdgeStore


def test_create_upsert_reopen_delete(index_path: Path) -> None:
    points = corpus()
    with EdgeStore(index_path, DIM, EMBEDDER) as store:
        assert store.count() == 0
        assert store.ids() == {}
        store.upsert(points)
        assert store.count() == len(points)
    assert json.loads((index_path / "meta.json").read_text())["embedder"] == EMBEDDER

    with EdgeStore(index_path, DIM, EMBEDDER) as store:
        assert store.ids() == {p.id: p.payload["text_sha256"] for p in points}
        store.delete([point_id(2), point_id(4)])
        assert store.count() == len(points) - 2

    with EdgeStore(index_path, DIM, EMBEDDER) as store:
        assert sorted(store.ids()) == [point_id(1), point_id(3), point_id(5)]
        hit = store.search_dense(dense(points[0]), 1)[0]
        assert hit.id == point_id(1)
        # The payload comes back as stored: a list stays a list, a null page stays null.
        assert hit.payload == points[0].payload


def test_upsert_again_is_idempotent_and_updates_changed_points(edge: EdgeStore) -> None:
    before = edge.ids()
    edge.upsert(corpus())
    assert edge.count() == len(TEXTS)
    assert edge.ids() == before

    changed = point(3, dense(corpus()[2]), "Parrots talk.", text_sha256="sha-new")
    edge.upsert([changed])
    assert edge.count() == len(TEXTS)
    assert edge.ids()[point_id(3)] == "sha-new"
    assert edge.search_bm25("parrot", 5)[0].id == point_id(3)
    assert all(hit.id != point_id(3) for hit in edge.search_bm25("cats purring", 5))


def test_many_points_cross_batches_and_scroll_pages(index_path: Path) -> None:
    points = random_points(3 * BATCH + 17, seed=1)
    with EdgeStore(index_path, DIM, EMBEDDER) as store:
        store.upsert(points)
        assert store.count() == len(points)
        assert len(store.ids()) == len(points)
        store.delete([p.id for p in points[: BATCH + 5]])
        assert store.count() == len(points) - BATCH - 5


def test_dense_search_ranks_by_exact_cosine(edge: EdgeStore) -> None:
    points = corpus()
    rng = np.random.default_rng(7)
    for _ in range(5):
        query = rng.normal(size=DIM).astype(np.float32)
        hits = edge.search_dense(query, 3)
        assert [h.id for h in hits] == exact_cosine_ranking(points, query)[:3]
    hits = edge.search_dense(dense(points[2]), len(points))
    assert hits[0].id == point_id(3)
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_bm25_search_stems_drops_stopwords_and_weighs_rare_terms(edge: EdgeStore) -> None:
    assert edge.search_bm25("deepcopy", 3)[0].id == point_id(1)
    # "barking" and "dog" reach "barks" and "Dogs" through the English stemmer.
    assert [h.id for h in edge.search_bm25("barking dog", 3)] == [point_id(2)]
    # "objects" is in two texts, "frees" in one: the rarer term decides.
    assert [h.id for h in edge.search_bm25("frees objects", 3)] == [point_id(4), point_id(1)]
    assert edge.search_bm25("the and of it", 3) == []
    assert edge.search_bm25("zebra", 3) == []


def test_equal_scores_are_ordered_by_id_even_at_the_cut(index_path: Path) -> None:
    same = np.ones(DIM, dtype=np.float32)
    points = [point(n, same, "identical words here") for n in (9, 3, 7, 1, 5)]
    with EdgeStore(index_path, DIM, EMBEDDER) as store:
        store.upsert(points)
        assert [h.id for h in store.search_dense(same, 2)] == [point_id(1), point_id(3)]
        first_three = [point_id(1), point_id(3), point_id(5)]
        assert [h.id for h in store.search_bm25("identical", 3)] == first_three


def test_a_bad_vector_fails_before_anything_is_written(index_path: Path) -> None:
    points = random_points(BATCH + 3, seed=2)
    bad = point(999, np.ones(DIM + 1, dtype=np.float32), "too long")
    with EdgeStore(index_path, DIM, EMBEDDER) as store:
        with pytest.raises(
            SemopsError, match=f"{point_id(999)}: vector has 9 dimensions, the index holds 8"
        ):
            store.upsert([*points, bad])
        nan = point(998, np.full(DIM, np.nan, dtype=np.float32), "nan")
        with pytest.raises(SemopsError, match=f"{point_id(998)}: vector holds NaN"):
            store.upsert([nan])
        with pytest.raises(SemopsError, match="all zeros"):
            store.upsert([point(997, np.zeros(DIM, dtype=np.float32), "zero")])
        assert store.count() == 0


def test_a_second_store_in_this_process_is_refused(edge: EdgeStore, index_path: Path) -> None:
    with pytest.raises(
        IndexLockedError, match=f"already open in this process \\(pid {os.getpid()}\\)"
    ):
        EdgeStore(index_path, DIM, EMBEDDER)
    assert edge.count() == len(TEXTS)  # the first one is unharmed


OPEN_SCRIPT = """
import sys
from semops.research.index.store.edge import EdgeStore
from semops.stage import run_stage

def main():
    with EdgeStore(sys.argv[1], 8, "test:hash-8") as store:
        print(store.count())

run_stage(main)
"""


def test_a_second_process_gets_a_clear_message_not_a_traceback(
    edge: EdgeStore, tmp_path: Path
) -> None:
    relative = "data/research/index"
    opened = subprocess.run(
        [sys.executable, "-c", OPEN_SCRIPT, relative],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert opened.returncode == 1
    assert opened.stderr == (
        f"error: research index {relative} is in use by another process (pid {os.getpid()}); "
        "close it and retry\n"
    )
    edge.close()
    reopened = subprocess.run(
        [sys.executable, "-c", OPEN_SCRIPT, relative],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (reopened.returncode, reopened.stdout, reopened.stderr) == (0, f"{len(TEXTS)}\n", "")


KILLED_SCRIPT = """
import sys, time, uuid
import numpy as np
from semops.research.index.store.base import Point
from semops.research.index.store.edge import EdgeStore

with EdgeStore(sys.argv[1], 8, "test:hash-8") as store:
    vectors = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    store.upsert([
        Point(str(uuid.UUID(int=i + 1)), vectors[i], f"text {i}", {"text_sha256": str(i)})
        for i in range(300)
    ])
    store.flush()
    print("flushed", flush=True)
    time.sleep(120)
"""


def test_a_killed_writer_releases_the_lock_and_keeps_flushed_points(index_path: Path) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_SCRIPT, str(index_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == "flushed\n", writer.stderr
        with pytest.raises(IndexLockedError, match=f"pid {writer.pid}"):
            EdgeStore(index_path, DIM, EMBEDDER)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    with EdgeStore(index_path, DIM, EMBEDDER) as store:
        assert store.count() == 300
        assert store.ids()[point_id(300)] == "299"


def test_another_embedder_or_dimension_is_a_mismatch_until_recreated(
    edge: EdgeStore, index_path: Path
) -> None:
    edge.close()
    with pytest.raises(IndexMismatchError) as caught:
        EdgeStore(index_path, 16, EMBEDDER)
    message = str(caught.value)
    assert message.startswith(
        f"research index {index_path} was built with other settings (the index's vs this "
        "project's): vector size 8 vs 16: rebuild it"
    )
    with pytest.raises(
        IndexMismatchError, match=f"embedder {EMBEDDER!r} vs 'openai:text-embedding-3-small'"
    ):
        EdgeStore(index_path, DIM, "openai:text-embedding-3-small")
    # A failed open leaves the index unlocked and as it was.
    with EdgeStore(index_path, DIM, EMBEDDER) as store:
        assert store.count() == len(TEXTS)
    with EdgeStore(index_path, 16, "other", recreate=True) as store:
        assert store.count() == 0
        store.upsert([point(1, np.ones(16, dtype=np.float32), "sixteen")])
    with EdgeStore(index_path, 16, "other") as store:
        assert store.count() == 1


def test_an_index_without_its_record_or_with_a_broken_one_is_a_mismatch(index_path: Path) -> None:
    with EdgeStore(index_path, DIM, EMBEDDER) as store:
        store.upsert(corpus())
    (index_path / "meta.json").unlink()
    with pytest.raises(IndexMismatchError, match=r"has no meta\.json"):
        EdgeStore(index_path, DIM, EMBEDDER)
    (index_path / "meta.json").write_text("{not json")
    with pytest.raises(IndexMismatchError, match=r"meta\.json: unreadable"):
        EdgeStore(index_path, DIM, EMBEDDER)


def test_a_closed_store_says_so(edge: EdgeStore, index_path: Path) -> None:
    edge.close()
    edge.close()  # twice is harmless
    with pytest.raises(SemopsError, match=f"research index {index_path} is closed"):
        edge.count()


# ----------------------------------------------------------------------------- ServerStore


@pytest.fixture
def local_client() -> Iterator[QdrantClient]:
    client = QdrantClient(location=":memory:")
    yield client
    client.close()


def test_server_store_ranks_as_the_edge_store(index_path: Path, local_client: QdrantClient) -> None:
    points = random_points(60, seed=3)
    queries = np.random.default_rng(4).normal(size=(6, DIM)).astype(np.float32)
    texts = ["w1 w2", "w3", "w5 w6 w7 w8", "w10 w1", "w39", "w0 w11 w22"]
    server = ServerStore.with_client(local_client, "research", DIM, EMBEDDER)
    with EdgeStore(index_path, DIM, EMBEDDER) as edge:
        for store in (edge, server):
            store.upsert(points)
        assert server.count() == edge.count() == len(points)
        assert server.ids() == edge.ids()

        def same(left: list[Hit], right: list[Hit]) -> None:
            assert [h.id for h in left] == [h.id for h in right]
            assert [h.score for h in left] == pytest.approx([h.score for h in right], rel=1e-5)
            assert [h.payload for h in left] == [h.payload for h in right]

        for vector, text in zip(queries, texts, strict=True):
            same(edge.search_dense(vector, 10), server.search_dense(vector, 10))
            same(edge.search_bm25(text, 10), server.search_bm25(text, 10))
            assert len(edge.search_bm25(text, 10)) > 0

        for store in (edge, server):
            store.delete([point_id(5), point_id(6)])
            store.flush()
        assert server.count() == edge.count() == len(points) - 2
        assert server.ids() == edge.ids()
        for vector, text in zip(queries, texts, strict=True):
            same(edge.search_dense(vector, 10), server.search_dense(vector, 10))
            same(edge.search_bm25(text, 10), server.search_bm25(text, 10))


def test_scores_depend_on_the_points_held_not_on_the_history(tmp_path: Path) -> None:
    """Deleted and replaced points must not linger in the BM25 statistics after a flush: an
    index edited incrementally scores as one built from scratch with the same points."""
    points = random_points(40, seed=5)
    replaced = point(7, dense(points[6]), "w1 w1 w1 w2", text_sha256="sha-new")
    deleted = (point_id(3), point_id(9))
    final = [replaced if p.id == point_id(7) else p for p in points if p.id not in deleted]
    with EdgeStore(tmp_path / "edited", DIM, EMBEDDER) as edited:
        edited.upsert(points)
        edited.flush()
        edited.delete(list(deleted))
        edited.upsert([replaced])
        edited.flush()
        with EdgeStore(tmp_path / "fresh", DIM, EMBEDDER) as fresh:
            fresh.upsert(final)
            fresh.flush()
            assert edited.ids() == fresh.ids()
            for text in ["w1", "w2 w3", "w4 w5 w6", "w30 w1"]:
                assert edited.search_bm25(text, 10) == fresh.search_bm25(text, 10)
            query = dense(points[0])
            assert [h.id for h in edited.search_dense(query, 10)] == [
                h.id for h in fresh.search_dense(query, 10)
            ]


def test_server_store_creates_checks_and_recreates_the_collection(
    local_client: QdrantClient,
) -> None:
    store: Store = ServerStore.with_client(local_client, "research", DIM, EMBEDDER, where="local")
    store.upsert(corpus())
    assert local_client.get_collection("research").config.metadata is not None
    again = ServerStore.with_client(local_client, "research", DIM, EMBEDDER)
    assert again.count() == len(TEXTS)
    assert again.search_bm25("deepcopy", 1)[0].id == point_id(1)
    with pytest.raises(
        IndexMismatchError,
        match=f"Qdrant collection 'research' at local \\(5 points\\) was built with other "
        rf"settings \(the collection's vs this project's\): embedder {EMBEDDER!r} vs 'x'; "
        "vector size 8 vs 4; semops leaves it as it is",
    ):
        ServerStore.with_client(local_client, "research", 4, "x", where="local")
    # Local mode reports no cluster settings: those the metadata recorded are compared.
    with pytest.raises(IndexMismatchError, match="replication_factor 1 vs 2; semops leaves it"):
        ServerStore.with_client(
            local_client, "research", DIM, EMBEDDER, cluster=ClusterConfig(replication_factor=2)
        )
    fresh = ServerStore.with_client(local_client, "research", 4, "x", mode="rebuild")
    assert fresh.count() == 0


def test_server_store_refuses_a_collection_it_did_not_make(local_client: QdrantClient) -> None:
    from qdrant_client.http import models

    local_client.create_collection(
        "foreign", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.DOT)
    )
    with pytest.raises(IndexMismatchError, match="was not created by semops"):
        ServerStore.with_client(local_client, "foreign", DIM, EMBEDDER)


def test_server_store_for_queries_never_creates_nor_writes(local_client: QdrantClient) -> None:
    with pytest.raises(SemopsError, match=r"does not exist \(a query never creates one\)"):
        ServerStore.with_client(local_client, "research", DIM, EMBEDDER, mode="query")
    assert not local_client.collection_exists("research")
    ServerStore.with_client(local_client, "research", DIM, EMBEDDER).upsert(corpus())
    reader = ServerStore.with_client(local_client, "research", DIM, EMBEDDER, mode="query")
    assert reader.search_bm25("deepcopy", 1)[0].id == point_id(1)
    with pytest.raises(SemopsError, match="is open for queries, which never write"):
        reader.delete([point_id(1)])
    with pytest.raises(SemopsError, match="is open for queries, which never write"):
        reader.upsert(corpus())
    assert reader.count() == len(TEXTS)


class FailingQdrant(BaseHTTPRequestHandler):
    """Answers every request as a Qdrant server in trouble does: HTTP 500 with its JSON status."""

    seen_keys: list[str | None] = []  # noqa: RUF012 - shared with the test by design

    def do_GET(self) -> None:
        FailingQdrant.seen_keys.append(self.headers.get("api-key"))
        body = json.dumps({"status": {"error": "Service internal error: disk full"}, "time": 0.0})
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_server_errors_name_the_url_and_never_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "qdrant-TEST-key-7f3a9c"
    monkeypatch.setenv("QDRANT_API_KEY", secret)
    server = ThreadingHTTPServer(("127.0.0.1", 0), FailingQdrant)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(SemopsError) as caught:
            ServerStore(url, "research", DIM, EMBEDDER, cluster=ClusterConfig())
    finally:
        server.shutdown()
        server.server_close()
    message = str(caught.value)
    assert message.startswith(f"Qdrant server {url}, collection 'research': HTTP 500")
    assert "disk full" in message
    assert secret not in message
    assert secret in FailingQdrant.seen_keys  # the key from the environment was sent

    with pytest.raises(SemopsError, match=f"Qdrant server {url}: no usable answer") as refused:
        ServerStore(
            url, "research", DIM, EMBEDDER, cluster=ClusterConfig()
        )  # nothing listens there any more
    assert secret not in str(refused.value)


# ------------------------------------------------------------- cluster settings on the wire

CLUSTER_KEYS = ("shard_number", "replication_factor", "write_consistency_factor", "on_disk_payload")
# What a one-node Qdrant server gives a collection whose creation leaves a setting out.
SERVER_DEFAULTS = {
    "shard_number": 1,
    "replication_factor": 1,
    "write_consistency_factor": 1,
    "on_disk_payload": True,
}


class WireQdrant:
    """The requests opening a store makes (does a collection exist, its info, create it, delete
    it) answered as a Qdrant server answers them, at `url`; `requests` holds each one with its
    JSON body, `collections` each collection's config as the server reports it."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.collections: dict[str, dict[str, Any]] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def handle_request(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                path = urlsplit(self.path).path
                outer.requests.append((self.command, path, body))
                status, result = outer.answer(self.command, path.strip("/").split("/"), body)
                reply = {"result": result, "status": "ok", "time": 0.0}
                if status != 200:
                    reply = {"status": {"error": result}, "time": 0.0}
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_DELETE = handle_request

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def answer(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        match method, parts:
            case "GET", ["collections", name, "exists"]:
                return 200, {"exists": name in self.collections}
            case "GET", ["collections", name] if name in self.collections:
                return 200, {
                    "status": "green",
                    "optimizer_status": "ok",
                    "points_count": 0,
                    "segments_count": 1,
                    "payload_schema": {},
                    "config": self.collections[name],
                }
            case "PUT", ["collections", name] if name not in self.collections:
                params = {
                    k: SERVER_DEFAULTS[k] if body.get(k) is None else body[k] for k in CLUSTER_KEYS
                }
                params |= {"vectors": body["vectors"], "sparse_vectors": body["sparse_vectors"]}
                self.collections[name] = {
                    "params": params,
                    "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000},
                    "optimizer_config": {
                        "deleted_threshold": 0.2,
                        "vacuum_min_vector_number": 1000,
                        "default_segment_number": 0,
                        "flush_interval_sec": 5,
                    },
                    "metadata": body.get("metadata"),
                }
                return 200, True
            case "DELETE", ["collections", name]:
                return 200, self.collections.pop(name, None) is not None
        return 404, f"Not found: {method} /{'/'.join(parts)}"

    def sent(self, method: str) -> list[Any]:
        return [body for m, _, body in self.requests if m == method]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def wire() -> Iterator[WireQdrant]:
    server = WireQdrant()
    yield server
    server.close()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project: its embedder caches, and no chunks built yet."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.delenv("QDRANT_API_KEY", raising=False)
    return tmp_path


def open_once(cfg: ResearchConfig, embedder: Embedder, mode: Mode) -> None:
    """Opens the configured store as research-embed (build) or a query does, and closes it."""
    with sync.open_store(cfg, embedder, mode):
        pass


def server_config(url: str, collection: str, cluster: ClusterConfig) -> ResearchConfig:
    return ResearchConfig(
        store=StoreConfig(kind="server", url=url, collection=collection, cluster=cluster)
    )


def test_the_configured_cluster_settings_go_on_the_wire(wire: WireQdrant, project: Path) -> None:
    team = ClusterConfig(
        shard_number=6, replication_factor=3, write_consistency_factor=2, on_disk_payload=False
    )
    cfg = server_config(wire.url, "team", team)
    embedder = sync.embedder_for(cfg)
    open_once(cfg, embedder, "build")
    [created] = wire.sent("PUT")
    expected = {
        "shard_number": 6,
        "replication_factor": 3,
        "write_consistency_factor": 2,
        "on_disk_payload": False,
    }
    assert {key: created.get(key) for key in CLUSTER_KEYS} == expected
    assert created["metadata"]["cluster"] == expected
    assert created["metadata"]["embedder"] == sync.store_key(embedder)
    # Reopened, as a teammate with the same config does: the collection is taken as it is.
    open_once(cfg, embedder, "query")
    assert len(wire.sent("PUT")) == 1
    assert wire.sent("DELETE") == []

    # Qdrant's defaults: the shard count is left to the server, which records what it chose.
    defaults = server_config(wire.url, "solo", ClusterConfig())
    open_once(defaults, embedder, "build")
    created = wire.sent("PUT")[1]
    assert created.get("shard_number") is None
    assert [created[key] for key in CLUSTER_KEYS[1:]] == [1, 1, True]
    assert created["metadata"]["cluster"]["shard_number"] is None
    open_once(defaults, embedder, "query")
    assert wire.collections["solo"]["params"]["shard_number"] == 1


def test_other_cluster_settings_are_refused_until_rebuild_force(
    wire: WireQdrant, project: Path
) -> None:
    mine = server_config(wire.url, "team", ClusterConfig(replication_factor=2))
    embedder = sync.embedder_for(mine)
    open_once(mine, embedder, "build")
    theirs = server_config(
        wire.url, "team", ClusterConfig(shard_number=4, replication_factor=2, on_disk_payload=False)
    )
    differences = "shard_number 1 vs 4; on_disk_payload True vs False"
    modes: tuple[Mode, ...] = ("build", "query")
    for mode in modes:
        with pytest.raises(IndexMismatchError, match=f"{differences}; semops leaves it as it is"):
            open_once(theirs, embedder, mode)
    plan = sync.rebuild_collection(theirs, "team", force=False)
    assert differences in plan
    assert plan.endswith("nothing done (add --force to do it)")
    assert (len(wire.sent("PUT")), wire.sent("DELETE")) == (1, [])

    # What the server holds counts, not what the metadata recorded: raised by an administrator.
    wire.collections["team"]["params"]["replication_factor"] = 3
    with pytest.raises(IndexMismatchError, match="replication_factor 3 vs 2; semops leaves"):
        open_once(mine, embedder, "build")

    assert sync.rebuild_collection(theirs, "team", force=True).startswith("research rebuild: done")
    assert [(method, path) for method, path, _ in wire.requests if method != "GET"] == [
        ("PUT", "/collections/team"),
        ("DELETE", "/collections/team"),
        ("PUT", "/collections/team"),
    ]
    recreated = wire.sent("PUT")[-1]
    assert {key: recreated.get(key) for key in CLUSTER_KEYS} == {
        "shard_number": 4,
        "replication_factor": 2,
        "write_consistency_factor": 1,
        "on_disk_payload": False,
    }
    open_once(theirs, embedder, "query")


@pytest.mark.parametrize(
    ("cluster", "message"),
    [
        ({"shard_number": 0}, "research.store.cluster.shard_number must be > 0, got 0"),
        ({"replication_factor": "2"}, "research.store.cluster.replication_factor"),
        ({"on_disk_payload": "yes"}, "research.store.cluster.on_disk_payload must be true or"),
        ({"replicas": 2}, "replicas"),
        (
            {"replication_factor": 2, "write_consistency_factor": 3},
            "research.store.cluster.write_consistency_factor must not exceed replication_factor "
            r"\(2\): a write would wait for more copies than there are, got 3",
        ),
    ],
)
def test_bad_cluster_settings_name_the_key(cluster: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_section("research", {"research": {"store": {"cluster": cluster}}})
