"""The report: one self-contained HTML page of the pipeline's results (`make report`, and the
copy the track stage logs to the MLflow run). It opens with no network: the charts are drawn by
the Vega bundle it carries, the pipeline graph is inline SVG.

The track stage's copy (`python -m semops.reporting.report --out PATH`) leaves out two
sections, each saying so: the experiments table (`dvc exp show` does not wait for the lock a
running `dvc repro` holds, but inside a stage it would list neither the experiment being run,
which DVC commits after its stages, nor later ones, and a queued experiment runs in a temporary
copy of the repository) and the sample retrievals (they load the embedder and open the index,
which a queued experiment's copy would first rebuild)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from semops import paths
from semops.config.schema import load_section
from semops.io import write_bytes
from semops.reporting import collect
from semops.reporting.content import Experiments, Report, Research, Sample

# What the track stage's copy says in place of the sections it leaves out.
STAGE_EXPERIMENTS = (
    "Not in the copy the track stage logs: inside the pipeline DVC lists neither the experiment "
    "being run nor later ones. `make report` and `make show` list them; MLflow compares the runs."
)
STAGE_SAMPLES = (
    "Not in the copy the track stage logs: they load the embedder and open the index inside the "
    "pipeline. `make report` shows them."
)


# The sample retrievals and what to say of them (`semops.reporting.samples.for_report`): passed
# in, so that the track stage's copy imports nothing of the research index.
Samples = Callable[[], tuple[tuple[Sample, ...], str]]


def _research(samples: Samples | None, notes: list[str]) -> Research | None:
    found = collect.optional(paths.RESEARCH_METRICS, collect.research, notes, "research index")
    if found is None:
        return None
    if samples is None:
        return replace(found, samples_note=STAGE_SAMPLES)
    shown, note = samples()
    return replace(found, samples=shown, samples_note=note)


def build(
    *, stage: bool = False, drop: str | None = None, samples: Samples | None = None
) -> Report:
    """The report's data from the files in the working directory (the project's root). `stage`:
    the track stage's copy, without the experiments table; else `drop`: the columns `make show`
    leaves out of it. `samples`: the sample retrievals (None: left out)."""
    notes: list[str] = []
    data_cfg = load_section("data")
    experiment, model = load_section("tracking").experiment, load_section("model").name
    title = f"{experiment}: {data_cfg.name}, model {model}"
    found = collect.optional(paths.EVAL_METRICS, collect.metrics, notes, "test metrics")
    metrics, test_rows, per_class = found or ((), None, ())
    data = collect.optional(
        paths.CLEAN_METRICS,
        lambda p: collect.data_summary(p, paths.INPUT_SCHEMA, data_cfg),
        notes,
        "data summary",
    )
    root = Path(".")
    experiments = Experiments(note=STAGE_EXPERIMENTS) if stage else collect.experiments(root, drop)
    return Report(
        title=title,
        metrics=metrics,
        test_rows=test_rows,
        per_class=per_class,
        plots=collect.plots(notes),
        training=collect.optional(paths.TRAIN_METRICS, collect.training, notes, "training") or (),
        experiments=experiments,
        data=data,
        research=_research(samples, notes),
        pipeline=collect.pipeline(root),
        notes=tuple(notes),
        subtitle="logged to MLflow by the track stage" if stage else "made by make report",
    )


def write(
    out: Path, *, stage: bool = False, drop: str | None = None, samples: Samples | None = None
) -> Path:
    """Build the report (see `build`) and write it to `out` atomically; return `out`."""
    from semops.reporting.page import render
    from semops.reporting.vega import vega_script

    page = render(build(stage=stage, drop=drop, samples=samples), vega_script()).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(out, page)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """The track stage's copy (its spool runs this): `--out PATH`."""
    parser = argparse.ArgumentParser(description="write the track stage's copy of the report")
    parser.add_argument("--out", type=Path, required=True)
    write(parser.parse_args(argv).out, stage=True)


if __name__ == "__main__":
    main()
