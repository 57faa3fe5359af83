"""A Marquez-compatible lineage server for the tests (Marquez cannot be installed here): it takes
Marquez's `POST /api/v1/lineage`, validates each event against the OpenLineage JSON schema and each
facet against its own schema (tests/data/openlineage/, vendored), records the valid ones (201, as
Marquez answers) and refuses the others with 400 and the errors, as Marquez refuses an invalid
event."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMAS = Path(__file__).parent / "data" / "openlineage"
RUN_EVENT = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
ENDPOINT = "/api/v1/lineage"


def _registry() -> Registry:
    resources = []
    for path in sorted(SCHEMAS.rglob("*.json")):
        contents = json.loads(path.read_text())
        resources.append((contents["$id"], Resource.from_contents(contents)))
    return Registry().with_resources(resources)


REGISTRY = _registry()


def _check(reference: str, instance: Any) -> list[str]:
    validator = Draft202012Validator(
        {"$ref": reference}, registry=REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '.'}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


def facets_of(event: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(where, name, facet) for every facet of a run event."""
    for where in ("run", "job"):
        for name, facet in (event.get(where, {}).get("facets") or {}).items():
            yield where, name, facet
    for side in ("inputs", "outputs"):
        for index, dataset in enumerate(event.get(side) or []):
            for kind in ("facets", f"{side[:-1]}Facets"):
                for name, facet in (dataset.get(kind) or {}).items():
                    yield f"{side}/{index}/{kind}", name, facet


def validate(event: dict[str, Any]) -> list[str]:
    """What is wrong with `event`: against the RunEvent schema, and each facet against the schema
    its `_schemaURL` names, under the name that schema gives it."""
    errors = _check(RUN_EVENT, event)
    for where, name, facet in facets_of(event):
        url = facet.get("_schemaURL", "") if isinstance(facet, dict) else ""
        document = url.partition("#")[0]
        try:
            schema = REGISTRY.contents(document)
        except LookupError:
            errors.append(f"{where}/{name}: no schema for _schemaURL {url!r}")
            continue
        if name not in schema.get("properties", {}):
            errors.append(f"{where}/{name}: {document} names no facet {name!r}")
        errors += [f"{where}/{name}/{e}" for e in _check(url, facet)]
    return errors


class LineageServer:
    """The server on 127.0.0.1 in a thread: `events` (accepted), `rejected` ((event, errors))."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.rejected: list[tuple[Any, list[str]]] = []
        self.bodies: list[bytes] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path != ENDPOINT:
                    return self._reply(404, {"error": f"no endpoint {self.path}"})
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.bodies.append(body)
                try:
                    event = json.loads(body)
                except json.JSONDecodeError as exc:
                    return self._reply(400, {"errors": [f"not JSON: {exc}"]})
                errors = validate(event)
                if errors:
                    server.rejected.append((event, errors))
                    return self._reply(400, {"errors": errors})
                server.events.append(event)
                return self._reply(201, {})

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test reads what was recorded, not an access log

        return Handler


@contextlib.contextmanager
def lineage_server() -> Iterator[LineageServer]:
    server = LineageServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        server.thread.join(timeout=10)
