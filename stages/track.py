"""track: mirror this result (params, metrics, history, plots, model) to MLflow, once."""

from semops.params import load_section
from semops.stage import run_stage
from semops.tracking import track_workspace


def main() -> None:
    print(track_workspace(load_section("tracking").experiment))


if __name__ == "__main__":
    run_stage(main)
