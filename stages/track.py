"""track: mirror this result to MLflow, once: the tabular run (params, metrics, history, plots,
the raw data set, the MLflow Model and its registry version) and the research run."""

from semops import paths
from semops.config.schema import load_section
from semops.errors import SemopsError
from semops.io import read_json, write_json
from semops.redaction import redact
from semops.stage import run_stage
from semops.tracking.bundle import RESEARCH, TABULAR
from semops.tracking.mirror import track_workspace, tracking_uri


def previous_research_result(uri: str) -> list[str]:
    """The research result the previous track run here logged or spooled for the store at
    `uri`: not spooled again. One recorded for another store (or for none: an older record)
    is spooled again; its result id keeps it from being logged twice to one store."""
    try:
        previous = read_json(paths.TRACKED)
        store = read_json(paths.TRACKED_STORE)
    except SemopsError:
        return []
    if not isinstance(previous, dict) or store != {"tracking_uri": redact(uri)}:
        return []
    found = previous.get("research_result_id")
    return [found] if isinstance(found, str) else []


def main() -> None:
    experiment = load_section("tracking").experiment
    uri = tracking_uri()
    ids, message = track_workspace(experiment, delivered=previous_research_result(uri), uri=uri)
    tracked = {"result_id": ids[TABULAR]}
    if RESEARCH in ids:
        tracked["research_result_id"] = ids[RESEARCH]
    write_json(paths.TRACKED, tracked)
    write_json(paths.TRACKED_STORE, {"tracking_uri": redact(uri)})
    print(message)


if __name__ == "__main__":
    run_stage(main)
