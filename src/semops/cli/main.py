"""The `semops` command line: compose params, report results, mirror to MLflow, show lineage
(`semops lineage`), score raw rows (`semops predict`), and the research index
(`semops research ask|search|add|remove|sources|rebuild`)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from semops import paths
from semops.cli import predict as predict_command
from semops.cli import research as research_commands
from semops.cli import server as server_command
from semops.errors import SemopsError


def _compose(args: argparse.Namespace) -> None:
    from semops.config.compose import compose_params, write_params_schema

    changed = compose_params(args.overrides)
    write_params_schema()
    print(
        "params.yaml composed from conf/"
        + (f" with {' '.join(args.overrides)}" if args.overrides else "")
    )
    for line in changed:
        print(f"  changed {line}")


def _report(args: argparse.Namespace) -> None:
    from semops.io import read_json
    from semops.reporting.collect import LOWER_IS_BETTER

    if args.html:
        _html_report(args.html, args.drop)
        return
    metrics = read_json(paths.EVAL_METRICS)
    test, base = metrics["test"], metrics["baseline_logreg"]
    print(
        f"\nTest metrics ({metrics['test_rows']} rows)   model  logreg baseline  model - baseline"
    )
    for key, value in test.items():
        if not isinstance(value, int | float) or key not in base:  # per class: the table below
            continue
        name = f"{key} (lower is better)" if key in LOWER_IS_BETTER else key
        print(f"  {name:<28}{value:>8.4f}{base[key]:>12.4f}{value - base[key]:>+14.4f}")
    per_class = test.get("per_class", {})
    if per_class:
        width = max(12, *(len(name) + 2 for name in per_class))
        print(f"\n  {'class':<{width}}precision    recall        f1   support")
        for name, row in per_class.items():
            print(
                f"  {name:<{width}}{row['precision']:>9.4f}{row['recall']:>10.4f}"
                f"{row['f1']:>10.4f}{row['support']:>10d}"
            )
    print(
        "\nNext:\n"
        "  make ui                     MLflow UI on http://127.0.0.1:5000 (runs, plots, models)\n"
        "  make show                   all experiments side by side, best first\n"
        "  dvc exp run -S model=gbdt   try another model; `make exp` runs a small sweep\n"
    )


def _html_report(out: Path, drop: str | None) -> None:
    from semops.reporting import report, samples

    written = report.write(out, drop=drop, samples=samples.for_report)
    size = written.stat().st_size / 1024
    print(f"report: {written} ({size:,.0f} KiB), opens offline: xdg-open {written}")


def _mirror(args: argparse.Namespace) -> None:
    from semops.redaction import URL_CREDENTIALS, redact
    from semops.tracking.mirror import local_store, mirror_pending, tracking_uri

    if args.source and not args.to:
        raise SemopsError("semops mirror: --from needs --to, the store to copy into")
    for option, uri in (("--to", args.to), ("--from", args.source)):
        if uri and URL_CREDENTIALS.search(uri):
            raise SemopsError(
                f"semops mirror: {option} {redact(uri)}: refused a URI with credentials (a "
                "command's arguments show in ps): give them in MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD (environment or .env)"
            )
    target = args.to or tracking_uri()
    source = None
    if args.to:
        from semops.tracking.transfer import same_store

        source = args.source or local_store()
        if same_store(source, target):
            raise SemopsError(f"semops mirror: --to {redact(target)} is the store copied from")
    done, failed = mirror_pending(target)
    here = redact(target)
    for result_id, run_id, new, meant_for in done:
        notes = [] if new else ["already there"]
        if meant_for and meant_for != here:
            notes.append(f"it was produced for {meant_for}")
        print(f"mirror: {result_id} -> run {run_id}" + (f" ({'; '.join(notes)})" if notes else ""))
    print(f"mirror: {len(done)} pending result(s) mirrored to {here}")
    problems = (
        [f"{len(failed)} result(s) still pending:\n  " + "\n  ".join(failed)] if failed else []
    )
    if source is not None:
        try:
            problems += _copy_store(source, target)
        except SemopsError as exc:  # the target out of reach: said with what is still pending
            raise SemopsError("\n".join([*problems, str(exc)])) from exc
    if problems:
        raise SemopsError("\n".join(problems))


def _lineage(args: argparse.Namespace) -> None:
    from semops.lineage.graph import render
    from semops.lineage.transport import read_events

    source = args.file or paths.lineage_events()
    print("\n".join(render(read_events(source), str(source))))


def _copy_store(source: str, target: str) -> list[str]:
    """Copy `source` into `target` and say what was done; return what failed."""
    from semops.redaction import redact
    from semops.tracking.transfer import copy_store

    copied = copy_store(source, target)
    print(
        f"mirror: {copied.runs} run(s) copied from {redact(source)} to {redact(target)}, "
        f"{copied.runs_there} already there"
    )
    print(
        f"mirror: {copied.versions} model version(s) registered, "
        f"{copied.versions_there} already there"
    )
    for name, aliases in copied.aliases.items():
        for alias, version in sorted(aliases.items()):
            print(f"mirror: {name}@{alias} is version {version}")
    if copied.aliases:
        print("mirror: champion is the best test ROC AUC of all the versions there, teammates' too")
    for line in copied.skipped:
        print(f"mirror: left out {line}")
    if not copied.failed:
        return []
    return [f"{len(copied.failed)} part(s) not copied:\n  " + "\n  ".join(copied.failed)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semops", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    compose = commands.add_parser("compose", help="compose conf/ into params.yaml (validated)")
    compose.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. model=logreg train.epochs=50"
    )
    compose.set_defaults(func=_compose)
    report = commands.add_parser(
        "report", help="print the test metrics and where to look next; --html: the whole report"
    )
    report.add_argument(
        "--html",
        nargs="?",
        type=Path,
        const=paths.REPORT_PAGE,
        metavar="PATH",
        help="write the report as one HTML page that opens offline (default reports/index.html): "
        "metrics, plots, experiments, data, research index, pipeline graph",
    )
    report.add_argument(
        "--drop",
        metavar="REGEX",
        help="experiment table columns to leave out, as `dvc exp show --drop` (make report "
        "passes make show's)",
    )
    report.set_defaults(func=_report)
    mirror = commands.add_parser(
        "mirror",
        help="log results that could not reach MLflow; with --to, copy the local store there",
    )
    mirror.add_argument(
        "--to",
        metavar="URI",
        help="the store to log pending results to and copy the local store into, once "
        "(a team's server: http://HOST:5050); default: MLFLOW_TRACKING_URI, no copy",
    )
    mirror.add_argument(
        "--from",
        dest="source",
        metavar="URI",
        help="the store --to copies (default: the project's sqlite store, mlruns/mlflow.db)",
    )
    mirror.set_defaults(func=_mirror)
    lineage = commands.add_parser(
        "lineage",
        help="the last pipeline run's lineage: each stage's input datasets -> stage -> outputs",
    )
    lineage.add_argument(
        "--file",
        type=Path,
        help="the OpenLineage event file (default: data/lineage/events.jsonl of this project)",
    )
    lineage.set_defaults(func=_lineage)
    predict_command.add_parser(commands)
    research_commands.add_parser(commands)
    server_command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    from semops import log
    from semops.environment import load_project_env

    args = build_parser().parse_args(argv)
    log.configure()
    load_project_env()
    try:
        args.func(args)
    except SemopsError as exc:
        logging.getLogger("semops").error("error: %s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()
