"""Where the stages' lineage events go: OpenLineage's own settings when any is given (the
`OPENLINEAGE_*` variables, in the environment or the project's .env, or an `openlineage.yml`),
else the event file, data/lineage/events.jsonl, so lineage works with no server. None of it is a
params.yaml key: changing where events go reruns no stage."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openlineage.client import OpenLineageClient
from openlineage.client.client import Event
from openlineage.client.serde import Serde
from openlineage.client.transport.transport import Config, Transport

from semops import paths
from semops.errors import SemopsError
from semops.io import locked

# OpenLineage's client takes its transport from these (client.py); any of them set means the
# user chose one, and the event file is not used. OPENLINEAGE_DISABLED counts only as the client
# reads it (true): "false" leaves the events where they would go without it.
SETTINGS = ("OPENLINEAGE_URL", "OPENLINEAGE_CONFIG")
DISABLED = "OPENLINEAGE_DISABLED"
DYNAMIC_PREFIX = "OPENLINEAGE__"
CONFIG_FILE = "openlineage.yml"


@dataclass
class EventFileConfig(Config):
    path: str

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> EventFileConfig:
        return cls(path=str(params.get("path") or paths.lineage_events()))


class EventFileTransport(Transport):
    """Appends each event as one JSON line, under a lock: stages of parallel experiments write the
    same file at once. Named in an openlineage.yml as `type: semops.lineage.transport.
    EventFileTransport` (its `path` optional)."""

    kind = "semops_event_file"
    config_class = EventFileConfig

    def __init__(self, config: EventFileConfig) -> None:
        self.path = Path(config.path)

    def emit(self, event: Event) -> None:
        line = Serde.to_json(event) + "\n"
        # One write of the whole line while holding the lock: readers never see half an event
        # from another writer between its parts.
        lock = self.path.with_name(self.path.name + ".lock")
        with locked(lock), self.path.open("a", encoding="utf-8") as out:
            out.write(line)


def configured() -> bool:
    """Whether OpenLineage's own settings choose the transport."""
    return (
        any(os.environ.get(name) for name in SETTINGS)
        or os.environ.get(DISABLED, "").lower() in {"true", "1"}
        or any(name.startswith(DYNAMIC_PREFIX) for name in os.environ)
        or Path(CONFIG_FILE).is_file()
        or (Path.home() / ".openlineage" / CONFIG_FILE).is_file()
    )


def client() -> OpenLineageClient:
    if configured():
        return OpenLineageClient()
    return OpenLineageClient(transport=EventFileTransport(EventFileConfig.from_dict({})))


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of an event file, oldest first."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SemopsError(
            f"{path}: no lineage events yet (the stages write them there when no other "
            "OpenLineage transport is set; README: Lineage)"
        ) from None
    lines = text.splitlines()
    if text and not text.endswith("\n"):
        lines = lines[:-1]  # an event a stage is writing now: it is read once it is whole
    events = []
    for number, line in enumerate(lines, 1):
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise SemopsError(f"{path}:{number}: not a JSON event ({exc})") from None
    return events
