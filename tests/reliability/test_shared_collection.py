"""A Qdrant server's collection is shared: `semops research search/ask`, research-eval and the
build never delete nor write a collection semops did not create, nor one built with other
settings; only `semops research rebuild --force --collection NAME` does, for the configured name.

The server is qdrant-client's local mode behind a small HTTP server that speaks the part of
Qdrant's REST API the client uses, so the real CLI and stages reach it by URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import yaml
from projectkit import REPO, clean_env
from pydantic_core import to_jsonable_python
from qdrant_client import QdrantClient
from qdrant_client.http import models
from stagekit import DEFAULT_PARAMS

from semops.research.index.store.base import Point
from semops.research.index.store.server import ServerStore

PASSAGES = {
    "copy": "How do I copy an object in Python? Use copy.deepcopy() for nested objects.",
    "gc": "Garbage collection frees the objects that nothing refers to any more.",
    "lambda": "Lambdas defined in a loop all see the loop variable's last value.",
    "sort": "To sort a list of dictionaries by a key, pass key=operator.itemgetter(name).",
    "files": "Open a file with a with-statement so that it is closed when the block ends.",
}
THEIRS = 3  # points in the team's own collections


def answer(client: QdrantClient, method: str, parts: list[str], body: dict[str, Any]) -> Any:
    """What Qdrant answers to the requests qdrant-client makes for semops's store."""
    match method, parts:
        case "GET", ["collections", name, "exists"]:
            return {"exists": client.collection_exists(name)}
        case "GET", ["collections", name]:
            return client.get_collection(name)
        case "PUT", ["collections", name]:
            create = models.CreateCollection.model_validate(body)
            return client.create_collection(
                name,
                vectors_config=create.vectors,
                sparse_vectors_config=create.sparse_vectors,
                metadata=create.metadata,
            )
        case "DELETE", ["collections", name]:
            return client.delete_collection(name)
        case "PUT", ["collections", name, "points"]:
            return client.upsert(name, points=models.PointsList.model_validate(body).points)
        case "POST", ["collections", name, "points", "delete"]:
            selector = models.PointIdsList.model_validate(body)
            return client.delete(name, points_selector=selector)
        case "POST", ["collections", name, "points", "scroll"]:
            scroll = models.ScrollRequest.model_validate(body)
            records, offset = client.scroll(
                name,
                limit=scroll.limit or 10,
                offset=scroll.offset,
                with_payload=scroll.with_payload or False,
                with_vectors=scroll.with_vector or False,
            )
            return {"points": records, "next_page_offset": offset}
        case "POST", ["collections", name, "points", "count"]:
            return client.count(
                name, exact=models.CountRequest.model_validate(body).exact is not False
            )
        case "POST", ["collections", name, "points", "query"]:
            query = models.QueryRequest.model_validate(body)
            return client.query_points(
                name,
                query=query.query,
                using=query.using,
                limit=query.limit or 10,
                with_payload=query.with_payload or False,
            )
    raise LookupError(f"{method} /{'/'.join(parts)}: not served here")


class QdrantServer:
    """qdrant-client's local mode served over HTTP at `url`; `client` looks at it directly."""

    def __init__(self) -> None:
        self.client = QdrantClient(location=":memory:")
        self.requests: list[str] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def handle_request(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                parts = urlsplit(self.path).path.strip("/").split("/")
                try:
                    with lock:
                        outer.requests.append(f"{self.command} {'/'.join(parts)}")
                        result = answer(outer.client, self.command, parts, body)
                    status, reply = 200, {"result": result, "status": "ok", "time": 0.0}
                except (LookupError, ValueError) as exc:
                    status, reply = 404, {"status": {"error": str(exc)}, "time": 0.0}
                except Exception as exc:  # what the client must show, not a dropped connection
                    status, reply = 500, {"status": {"error": repr(exc)}, "time": 0.0}
                data = json.dumps(to_jsonable_python(reply)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = handle_request

            def log_message(self, *args: object) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self.client.close()

    def points(self, collection: str) -> dict[str, Any]:
        records, _ = self.client.scroll(collection, limit=10_000, with_payload=True)
        return {str(r.id): r.payload for r in records}

    def add_team_collection(self, name: str) -> dict[str, Any]:
        """A collection someone else made and filled (no semops metadata); its points."""
        self.client.create_collection(
            name, vectors_config=models.VectorParams(size=384, distance=models.Distance.COSINE)
        )
        rng = np.random.default_rng(7)
        self.client.upsert(
            name,
            points=[
                models.PointStruct(id=n, vector=rng.normal(size=384).tolist(), payload={"doc": n})
                for n in range(1, THEIRS + 1)
            ],
        )
        return self.points(name)


@pytest.fixture(scope="module")
def qdrant() -> Iterator[QdrantServer]:
    server = QdrantServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, qdrant: QdrantServer) -> Path:
    """A scratch project on a tiny corpus, its index built by research-embed in the Qdrant
    server's collection 'research'."""
    workdir = tmp_path_factory.mktemp("shared-collection") / "project"
    corpus, documents = workdir / "corpus", workdir / "docs"
    (corpus / "qrels").mkdir(parents=True)
    (documents / "documents").mkdir(parents=True)
    (workdir / "data/raw/research").mkdir(parents=True)
    (corpus / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": k, "text": t}) + "\n" for k, t in PASSAGES.items())
    )
    (corpus / "queries.jsonl").write_text(json.dumps({"_id": "q", "text": "copy"}) + "\n")
    (corpus / "qrels/test.tsv").write_text("query-id\tcorpus-id\tscore\nq\tcopy\t1\n")
    params = json.loads(json.dumps(DEFAULT_PARAMS))
    params["research"].update(corpus=str(corpus), documents=str(documents))
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    use_collection(workdir, qdrant, "research")
    ok(stage(workdir, "research_embed"))
    assert len(qdrant.points("research")) == len(PASSAGES)
    return workdir


def use_collection(workdir: Path, qdrant: QdrantServer, collection: str) -> None:
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["research"]["store"] = {"kind": "server", "url": qdrant.url, "collection": collection}
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def env() -> dict[str, str]:
    # A PYTHONPATH given to pytest (to run this file against another checkout's src/) reaches
    # the commands too.
    path = os.environ.get("PYTHONPATH")
    return clean_env(**({"PYTHONPATH": path} if path else {}))


def command(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), cwd=workdir, env=env(), capture_output=True, text=True, timeout=300
    )


def semops(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return command(workdir, "semops", "research", *args)


def stage(workdir: Path, name: str) -> subprocess.CompletedProcess[str]:
    return command(workdir, sys.executable, str(REPO / f"stages/{name}.py"))


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], qdrant: QdrantServer, name: str) -> str:
    """The command failed with one clear message naming the collection, the server and both
    ways out: another collection name, or the explicit rebuild."""
    assert result.returncode == 1, result.stdout + result.stderr
    message = result.stderr
    assert "Traceback" not in message
    assert f"Qdrant collection {name!r} at {qdrant.url}" in message
    assert "semops leaves it as it is" in message
    assert "set research.store.collection to another name" in message
    assert f"`semops research rebuild --force --collection {name}`" in message
    return message


def test_someone_elses_collection_survives_queries_and_the_build(
    project: Path, qdrant: QdrantServer
) -> None:
    theirs = qdrant.add_team_collection("team")
    use_collection(project, qdrant, "team")
    message = refused(semops(project, "search", "copy an object"), qdrant, "team")
    assert f"({THEIRS} points) was not created by semops" in message
    refused(semops(project, "ask", "How do I copy an object?"), qdrant, "team")
    refused(stage(project, "research_eval"), qdrant, "team")
    refused(stage(project, "research_embed"), qdrant, "team")
    assert qdrant.points("team") == theirs
    assert qdrant.client.get_collection("team").config.metadata is None


def test_a_collection_built_with_other_settings_is_left_as_it_is(
    project: Path, qdrant: QdrantServer
) -> None:
    """A semops collection made for another embedder (1536-d OpenAI vectors)."""
    other = "openai/text-embedding-3-small+v2-opens-section"
    store = ServerStore.with_client(qdrant.client, "openai-built", 1536, other)
    rng = np.random.default_rng(3)
    store.upsert(
        [
            Point(f"00000000-0000-0000-0000-00000000000{n}", rng.normal(size=1536), t, {"n": n})
            for n, t in enumerate(PASSAGES.values())
        ]
    )
    before = qdrant.points("openai-built")
    use_collection(project, qdrant, "openai-built")
    message = refused(semops(project, "search", "copy an object"), qdrant, "openai-built")
    assert "was built with other settings" in message
    assert f"embedder {other!r} vs 'local/all-MiniLM-L6-v2/" in message
    assert "vector size 1536 vs 384" in message
    refused(stage(project, "research_embed"), qdrant, "openai-built")
    assert qdrant.points("openai-built") == before

    # A collection that does not exist is not created by a query either.
    use_collection(project, qdrant, "nowhere")
    missing = semops(project, "search", "copy an object")
    assert missing.returncode == 1
    assert f"Qdrant collection 'nowhere' at {qdrant.url} does not exist" in missing.stderr
    assert "rebuild --force --collection nowhere" in missing.stderr
    assert not qdrant.client.collection_exists("nowhere")


def test_only_an_explicit_rebuild_of_the_configured_collection_deletes_it(
    project: Path, qdrant: QdrantServer
) -> None:
    theirs = qdrant.add_team_collection("team-b")
    use_collection(project, qdrant, "team-b")

    dry = ok(semops(project, "rebuild", "--collection", "team-b"))
    assert f"would delete Qdrant collection 'team-b' at {qdrant.url} ({THEIRS} points" in dry
    assert "nothing done (add --force to do it)" in dry
    typo = semops(project, "rebuild", "--force", "--collection", "research")
    assert typo.returncode == 1
    assert "'research' is not the configured collection 'team-b'" in typo.stderr
    assert qdrant.points("team-b") == theirs
    assert len(qdrant.points("research")) == len(PASSAGES)

    done = ok(semops(project, "rebuild", "--force", "--collection", "team-b"))
    assert f"fill it with the {len(PASSAGES)} chunks" in done
    rebuilt = qdrant.points("team-b")
    assert len(rebuilt) == len(PASSAGES) and not set(rebuilt) & set(theirs)
    found = ok(semops(project, "search", "deepcopy nested objects", "--method", "bm25"))
    assert "copy.deepcopy()" in found.splitlines()[1]
    # Now semops's, with these settings: the build syncs it (nothing to change).
    ok(stage(project, "research_embed"))
    assert qdrant.points("team-b") == rebuilt
