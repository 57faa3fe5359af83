"""The `semops` command line: compose params, report results, mirror to MLflow."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from semops.errors import SemopsError


def _compose(args: argparse.Namespace) -> None:
    from semops.compose import compose_params

    compose_params(args.overrides)
    print(
        "params.yaml composed from conf/"
        + (f" with {' '.join(args.overrides)}" if args.overrides else "")
    )


def _report(args: argparse.Namespace) -> None:
    from semops import paths
    from semops.io import read_json

    metrics = read_json(paths.EVAL_METRICS)
    test, base = metrics["test"], metrics["baseline_logreg"]
    print(f"\nTest metrics ({metrics['test_rows']} rows)   model   logreg baseline   lift")
    for key in test:
        print(f"  {key:<22}{test[key]:>9.4f}{base[key]:>12.4f}{test[key] - base[key]:>+12.4f}")
    print(
        "\nNext:\n"
        "  make ui                     MLflow UI on http://127.0.0.1:5000 (runs, plots, models)\n"
        "  dvc exp show                all experiments side by side\n"
        "  dvc exp run -S model=gbdt   try another model; `make exp` runs a small sweep\n"
    )


def _mirror(args: argparse.Namespace) -> None:
    from semops.tracking import mirror_pending, tracking_uri

    done = mirror_pending()
    for result_id, run_id, new in done:
        print(f"mirror: {result_id} -> run {run_id}" + ("" if new else " (already there)"))
    print(f"mirror: {len(done)} pending result(s) mirrored to {tracking_uri()}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semops", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    compose = commands.add_parser("compose", help="compose conf/ into params.yaml (validated)")
    compose.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. model=logreg train.lr=0.01"
    )
    compose.set_defaults(func=_compose)
    commands.add_parser(
        "report", help="print the test metrics and where to look next"
    ).set_defaults(func=_report)
    commands.add_parser("mirror", help="log results that could not reach MLflow").set_defaults(
        func=_mirror
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except SemopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
