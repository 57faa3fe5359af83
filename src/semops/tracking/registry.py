"""The Model Registry: each result's MLflow Model is a version of `<tracking.experiment>-<data
set>` (`semops-credit`), at most once per result id, whoever logs it (the track stage, a queued
experiment, `semops mirror`).

The alias `champion` follows the version with the best test ROC AUC (ties: the older version):
`models:/semops-credit@champion` is what `make serve` serves. The newest version needs no alias,
and can have none: MLflow reserves `latest`, and `models:/semops-credit/latest` is its own name
for the newest version."""

from __future__ import annotations

import logging
from typing import Any

from semops.config.schema import PARAMS_FILE, load_section
from semops.tracking.bundle import RESULT_TAG
from semops.tracking.describe import ROC_TAG, registered_model_name
from semops.tracking.runlog import inserted_meanwhile

log = logging.getLogger(__name__)

CHAMPION = "champion"
# MLflow's own name of the newest version: `models:/<name>/latest` (an alias cannot be `latest`).
LATEST = "latest"
PAGE = 1000
# How many times set_aliases looks again while other processes move the aliases.
ALIAS_ROUNDS = 5


def params_model_name() -> str:
    """The registered model of params.yaml's experiment and data set (`make serve` serves it)."""
    experiment = load_section("tracking", PARAMS_FILE).experiment
    return registered_model_name(experiment, load_section("data", PARAMS_FILE).name)


def register(client: Any, bundle: dict[str, Any], run_id: str, model_id: str) -> tuple[str, bool]:
    """Register the run's model as a version, unless the result has one; then move the
    champion alias. Returns (version, whether it is new)."""
    section = bundle["model"]
    name = section["registered_name"]
    ensure_registered_model(
        client, name, model_description(name, bundle["tags"].get("dataset", ""))
    )
    version = section["version"]
    added = add_version(client, name, model_id, run_id, version["tags"], version["description"])
    set_aliases(client, name)
    return added


def add_version(
    client: Any,
    name: str,
    model_id: str,
    run_id: str | None,
    tags: dict[str, str],
    description: str,
    key: str = RESULT_TAG,
) -> tuple[str, bool]:
    """A version of the model `model_id`, unless the result it is of (`tags[key]`) has one.
    Returns (version, whether it is new)."""
    result_id = tags[key]
    found = [v for v in versions(client, name) if v.tags.get(key) == result_id]
    if found:
        return str(min(int(v.version) for v in found)), False
    created = client.create_model_version(
        name,
        source=f"models:/{model_id}",
        run_id=run_id,
        tags=tags,
        description=description,
        await_creation_for=0,
        model_id=model_id,
    )
    return settle(client, name, result_id, str(created.version), key)


def settle(
    client: Any, name: str, result_id: str, version: str, key: str = RESULT_TAG
) -> tuple[str, bool]:
    """One version per result (`key`: the tag holding it), also when two processes registered
    it at once on a server: the oldest version stands; a later one deletes itself."""
    found = [int(v.version) for v in versions(client, name) if v.tags.get(key) == result_id]
    oldest = str(min(found, default=int(version)))
    if oldest == version:
        return version, True
    client.delete_model_version(name, version)
    return oldest, False


def model_description(name: str, data_name: str) -> str:
    return (
        f"The models of data set {data_name}: one version per pipeline result. "
        f"models:/{name}@{CHAMPION} is the version with the best test ROC AUC (ties: the older "
        f"one); models:/{name}/{LATEST} the newest."
    )


def ensure_registered_model(
    client: Any, name: str, description: str | None, tags: dict[str, str] | None = None
) -> bool:
    """Create the registered model unless it exists; return whether it was created."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, tags=tags, description=description)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return False
    return True


def versions(client: Any, name: str) -> list[Any]:
    """Every version of the registered model, page by page."""
    found: list[Any] = []
    token = None
    while True:
        page = client.search_model_versions(f"name = '{name}'", max_results=PAGE, page_token=token)
        found += list(page)
        token = page.token
        if not token:
            return found


def choose_aliases(candidates: list[Any]) -> dict[str, str]:
    """{alias: version}: champion the best test ROC AUC (ties: the older version). Versions
    without a test ROC AUC are never champion."""
    scored = [(roc, -int(v.version)) for v in candidates if (roc := _roc(v)) is not None]
    return {CHAMPION: str(-max(scored)[1])} if scored else {}


def _roc(version: Any) -> float | None:
    try:
        return float(version.tags[ROC_TAG])
    except (KeyError, TypeError, ValueError):
        return None


def _lost_race(exc: Any) -> bool:
    """Whether moving an alias failed because another process changed the registry at the same
    moment: the version was deleted meanwhile (a duplicate settled), or another process
    inserted the alias first."""
    return exc.error_code == "RESOURCE_DOES_NOT_EXIST" or inserted_meanwhile(
        exc, "registered_model_alias"
    )


def set_aliases(client: Any, name: str) -> None:
    """Move each alias to its choice among the versions, then look again until the choice
    stands: on a server, processes registering at once each choose from what they saw, and
    the last to move an alias may have seen fewer versions. Whoever moves an alias last looks
    again after, so the alias ends on the choice among all versions (at most ALIAS_ROUNDS
    rounds)."""
    from mlflow.exceptions import MlflowException

    for _ in range(ALIAS_ROUNDS):
        chosen = choose_aliases(versions(client, name))
        current = client.get_registered_model(name).aliases or {}
        moves = {a: v for a, v in chosen.items() if str(current.get(a)) != v}
        if not moves:
            return
        for alias, version in moves.items():
            try:
                client.set_registered_model_alias(name, alias, version)
            except MlflowException as exc:
                if not _lost_race(exc):
                    raise
                continue  # look again at what the other process left
            log.info("track: %s@%s is now version %s", name, alias, version)
    log.warning(
        "track: the aliases of %s were still moving after %d rounds (other processes "
        "registering); the next registration moves them again",
        name,
        ALIAS_ROUNDS,
    )
