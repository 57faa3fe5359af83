"""A stage's datasets as DVC sees them: the deps and outs dvc.yaml declares for it (params
interpolated, as DVC reads them; no second list), each named by its path and versioned by DVC's
md5 (a directory's `.dir` hash) as dvc_data computes it for DVC, through DVC's state cache (DVC
hashed the deps just before the stage; it finds the outs hashed after it), with the Parquet
schema, row counts, sizes, and each column's null count from the Parquet footers."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from openlineage.client.event_v2 import InputDataset, OutputDataset
from openlineage.client.facet_v2 import (
    data_quality_metrics_input_dataset,
    dataset_version_dataset,
    input_statistics_input_dataset,
    output_statistics_output_dataset,
    schema_dataset,
)

from semops import paths

PARQUET = ".parquet"


def namespace() -> str:
    """The datasets' namespace: this machine's repository. Names are paths relative to it, so a
    queued experiment's copy names the same datasets as the repository it belongs to."""
    return f"file://{socket.gethostname()}{paths.project_root()}"


@contextlib.contextmanager
def dvc_stage(name: str) -> Iterator[Any]:
    """The stage `name` of dvc.yaml in the working directory (DVC runs stages from the root)."""
    from dvc.repo import Repo

    repo = Repo(str(Path.cwd()))
    try:
        yield repo.stage.load_one(name=name)
    finally:
        with contextlib.suppress(Exception):  # lineage never fails the stage it observes
            repo.close()


def is_dataset(dep: Any) -> bool:
    """Data a stage reads: not its params, nor its code (the job's source code location)."""
    return hasattr(dep, "fs_path") and not hasattr(dep, "params") and dep.def_path[-3:] != ".py"


def inputs(stage: Any) -> list[InputDataset]:
    found = []
    for dep in filter(is_dataset, stage.deps):
        facets, stats = _described(dep)
        input_facets: dict[str, Any] = {}
        if stats:
            input_facets["inputStatistics"] = (
                input_statistics_input_dataset.InputStatisticsInputDatasetFacet(**_sizes(stats))
            )
            quality = _quality(stats)
            if quality is not None:
                input_facets["dataQualityMetrics"] = quality
        found.append(
            InputDataset(namespace(), dep.def_path, facets=facets, inputFacets=input_facets)
        )
    return found


def outputs(stage: Any) -> list[OutputDataset]:
    found = []
    for out in stage.outs:
        facets, stats = _described(out)
        output_facets: dict[str, Any] = {}
        if stats:
            output_facets["outputStatistics"] = (
                output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(**_sizes(stats))
            )
        found.append(
            OutputDataset(namespace(), out.def_path, facets=facets, outputFacets=output_facets)
        )
    return found


def metrics(stage: Any) -> dict[str, Any]:
    """The stage's metrics files (dvc.yaml `metrics:`; reports/clean.json holds the rows clean
    dropped and why), by path: figures the stage computed anyway."""
    found = {}
    for out in stage.outs:
        if out.is_metric and Path(out.fs_path).suffix == ".json" and Path(out.fs_path).is_file():
            found[out.def_path] = json.loads(Path(out.fs_path).read_text(encoding="utf-8"))
    return found


def _described(item: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A dep's or out's dataset facets (none while it is missing: a failed stage's outs), and
    its sizes and Parquet files."""
    path = Path(item.fs_path)
    if not path.exists():
        return {}, None
    from dvc_data.hashfile.build import build

    # What DVC's Output.get_hash runs, without writing objects to its cache.
    _, meta, obj = build(
        item.cache, item.fs_path, item.fs, item.hash_name, ignore=item.dvcignore, dry_run=True
    )
    facets: dict[str, Any] = {
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(str(obj.hash_info.value))
    }
    files = [path] if path.suffix == PARQUET else sorted(path.rglob(f"*{PARQUET}"))
    footers = [pq.ParquetFile(f).metadata for f in files if f.is_file()]
    schemas = {m.schema.to_arrow_schema() for m in footers}
    if len(schemas) == 1:
        schema = next(iter(schemas))
        facets["schema"] = schema_dataset.SchemaDatasetFacet(
            fields=[
                schema_dataset.SchemaDatasetFacetFields(name=f.name, type=str(f.type))
                for f in schema
            ]
        )
    stats = {
        "size": meta.size,
        "files": meta.nfiles or 1,
        "footers": footers,
        "rows": sum(m.num_rows for m in footers) if footers else None,
    }
    return facets, stats


def _sizes(stats: dict[str, Any]) -> dict[str, Any]:
    return {"rowCount": stats["rows"], "size": stats["size"], "fileCount": stats["files"]}


def _quality(stats: dict[str, Any]) -> Any:
    """Each column's null count, from the writers' statistics in the Parquet footers (nothing
    read); absent where a footer lacks them."""
    counts: dict[str, int] = {}
    for footer in stats["footers"]:
        for group in range(footer.num_row_groups):
            row_group = footer.row_group(group)
            for column in range(row_group.num_columns):
                chunk = row_group.column(column)
                if chunk.statistics is None or not chunk.statistics.has_null_count:
                    return None
                name = chunk.path_in_schema
                counts[name] = counts.get(name, 0) + chunk.statistics.null_count
    if not stats["footers"]:
        return None
    module = data_quality_metrics_input_dataset
    return module.DataQualityMetricsInputDatasetFacet(
        rowCount=stats["rows"],
        bytes=stats["size"],
        fileCount=stats["files"],
        columnMetrics={name: module.ColumnMetrics(nullCount=n) for name, n in counts.items()},
    )
