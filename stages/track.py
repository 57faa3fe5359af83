"""track: mirror this result (params, metrics, history, plots, model) to MLflow, once."""

from semops import paths
from semops.config.schema import load_section
from semops.io import write_json
from semops.stage import run_stage
from semops.tracking.mirror import track_workspace


def main() -> None:
    result_id, message = track_workspace(load_section("tracking").experiment)
    write_json(paths.TRACKED, {"result_id": result_id})
    print(message)


if __name__ == "__main__":
    run_stage(main)
