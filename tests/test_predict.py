"""Scoring raw rows (semops.tabular.scoring) and `semops predict`: the same numbers as the
pipeline's own test predictions, in batches of any size, with errors that name the column."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import run
from projectkit import clean_env

from semops.config.schema import (
    DataConfig,
    FeaturizeConfig,
    FileSource,
    LogregConfig,
    SplitConfig,
    TrainConfig,
    ValidRange,
)
from semops.errors import SemopsError
from semops.paths import SPLITS
from semops.tabular import models
from semops.tabular.batchscore import score_file
from semops.tabular.clean import assign_splits, clean_and_split, clean_table, row_hash
from semops.tabular.featureio import LABEL
from semops.tabular.features import fit_featurizer, transform
from semops.tabular.models import base, predict, training
from semops.tabular.scoring import InputError, RawScorer, prediction_frame

DATA = DataConfig(
    name="toy",
    source=FileSource("file", "raw.csv", "0" * 64),
    target="y",
    positive="yes",
    drop=["id"],
    valid={"age": ValidRange(18, 90)},
)
SPLIT = SplitConfig(0.6, 0.2, 0.2)


def raw_rows(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(10, 95, n)
    city = rng.choice(np.array(["Paris", " paris", "Lyon", "NICE", None], dtype=object), n)
    income = np.where(rng.random(n) < 0.1, np.nan, rng.normal(50, 10, n))
    y = np.where(age + rng.normal(0, 15, n) > 50, "yes", "no")
    return pd.DataFrame(
        {"id": [f"r{i}" for i in range(n)], "age": age, "city": city, "income": income, "y": y}
    )


def train_model(
    folder: Path, raw: pd.DataFrame, data: DataConfig = DATA
) -> tuple[dict[str, pd.DataFrame], Any]:
    """The clean, featurize and train stages' functions on `raw`: a model folder as the train
    stage leaves it, and the splits."""
    parts, _, schema = clean_and_split(raw, data, SPLIT)
    spec = fit_featurizer(parts["train"], schema, data.positive, FeaturizeConfig())
    processed = {name: transform(part, spec) for name, part in parts.items()}

    def matrix(name: str) -> tuple[np.ndarray, np.ndarray]:
        table = processed[name]
        features = np.column_stack([table[f].to_numpy() for f in spec["features"]])
        return features.astype(np.float32), table[LABEL].to_numpy()

    splits = base.TrainingData(*matrix("train"), *matrix("val"), n_classes=2)
    fitted = training.fit(LogregConfig("logreg"), TrainConfig(seed=0, epochs=1), splits)
    meta = {"features": spec["features"], "classes": spec["target"]["classes"]}
    models.save(fitted, folder, meta, spec)
    return parts, matrix("test")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, Any]:
    folder = tmp_path_factory.mktemp("model") / "model"
    raw = raw_rows()
    _, test = train_model(folder, raw)
    return folder, raw, test


def test_raw_test_rows_score_as_the_pipeline_scores_its_test_split(trained: Any) -> None:
    folder, raw, (x_test, _) = trained
    table, _ = clean_table(raw, DATA)
    hashes = row_hash(raw, SPLIT.seed)[table.index]
    codes = assign_splits(hashes, table[DATA.target].to_numpy(), DATA.target, SPLIT)
    raw_test = raw.loc[table.index[codes == SPLITS.index("test")]]
    classifier, _ = predict.load(folder)
    expected = classifier.predict_proba(x_test)
    scorer = RawScorer.load(folder)
    np.testing.assert_allclose(scorer.predict_proba(raw_test), expected, atol=1e-6)
    # The schema's example rows are the first raw test rows.
    example = pd.DataFrame(scorer.schema["example"])
    np.testing.assert_allclose(scorer.predict_proba(example), expected[: len(example)], atol=1e-6)
    scored = scorer.score(raw)
    assert list(scored.columns) == ["proba_no", "proba_yes", "prediction"]
    np.testing.assert_allclose(scored[["proba_no", "proba_yes"]].sum(axis=1), 1.0)
    # The label: evaluate's rule at threshold 0.5, ties to the positive class.
    positive = scored["proba_yes"] >= 0.5
    assert (scored["prediction"] == np.where(positive, "yes", "no")).all()


def test_a_tie_is_the_positive_class() -> None:
    frame = prediction_frame(np.array([[0.5, 0.5], [0.6, 0.4]]), ["no", "yes"])
    assert frame["prediction"].tolist() == ["yes", "no"]


def test_columns_by_their_raw_type(tmp_path: Path) -> None:
    """A numeric-coded categorical is one category however it is spelt (1, 1.0, "1"); a column
    of text declared numeric reads an unparseable value as missing, as clean did."""
    raw = raw_rows()
    raw["grade"] = np.where(np.arange(len(raw)) % 7 == 0, np.nan, np.arange(len(raw)) % 3)
    raw["score"] = [("?" if i % 11 == 0 else str(i % 40)) for i in range(len(raw))]
    data = dataclasses.replace(DATA, types={"grade": "categorical", "score": "numeric"})
    folder = tmp_path / "model"
    train_model(folder, raw, data)
    scorer = RawScorer.load(folder)
    assert "grade=1" in scorer.spec["features"]
    rows = raw.head(12).reset_index(drop=True)
    grades: list[Any] = [None if np.isnan(v) else f"{v:.0f}" for v in rows["grade"]]
    as_text = rows.assign(grade=grades)
    np.testing.assert_array_equal(scorer.predict_proba(rows), scorer.predict_proba(as_text))
    unreadable = rows.assign(score=["?", "n/a", *rows["score"][2:]])
    blanks: list[Any] = [None, None, *rows["score"][2:]]
    missing = rows.assign(score=blanks)
    np.testing.assert_array_equal(scorer.predict_proba(unreadable), scorer.predict_proba(missing))
    rows.to_csv(tmp_path / "rows.csv", index=False)
    scored = score_file(scorer, tmp_path / "rows.csv", tmp_path / "out.parquet")
    np.testing.assert_allclose(
        pd.read_parquet(scored.output)[["proba_no", "proba_yes"]].to_numpy(),
        scorer.predict_proba(rows),
    )


def test_missing_values_unseen_categories_and_impossible_values_score(trained: Any) -> None:
    folder, raw, _ = trained
    scorer = RawScorer.load(folder)
    rows = raw.head(3).copy()
    odd = rows.copy()
    odd["city"] = ["Atlantis", None, "  LYON "]  # unseen, missing, another spelling of lyon
    odd["age"] = [200, np.nan, rows["age"].iloc[2]]  # 200: outside data.valid, as missing
    proba = scorer.predict_proba(odd)
    assert np.isfinite(proba).all()
    as_missing = odd.copy()
    as_missing["age"] = [np.nan, np.nan, rows["age"].iloc[2]]
    np.testing.assert_array_equal(proba, scorer.predict_proba(as_missing))
    lyon = rows.copy()
    lyon["city"] = ["Atlantis", None, "lyon"]
    lyon["age"] = as_missing["age"]
    np.testing.assert_array_equal(proba, scorer.predict_proba(lyon))


@pytest.mark.parametrize(
    ("change", "column", "words"),
    [
        (lambda t: t.drop(columns="income"), "income", "is missing"),
        (lambda t: t.assign(age=["31", "forty", "2"]), "age", "'forty'"),
        (lambda t: t.assign(income=[True, False, True]), "income", "true/false"),
    ],
)
def test_bad_rows_name_the_column(trained: Any, change: Any, column: str, words: str) -> None:
    folder, raw, _ = trained
    with pytest.raises(InputError, match=column) as caught:
        RawScorer.load(folder).score(change(raw.head(3).reset_index(drop=True)))
    assert caught.value.column == column
    assert words in str(caught.value)


def test_numbers_as_text_are_read_as_numbers(trained: Any) -> None:
    folder, raw, _ = trained
    scorer = RawScorer.load(folder)
    rows = raw.head(4).reset_index(drop=True)
    as_text = rows.assign(age=[str(v) for v in rows["age"]], income=rows["income"].astype(object))
    np.testing.assert_array_equal(scorer.predict_proba(rows), scorer.predict_proba(as_text))


@pytest.mark.parametrize(("source", "output"), [("csv", "parquet"), ("parquet", "csv")])
def test_a_file_scores_the_same_in_any_batch_size(
    trained: Any, tmp_path: Path, source: str, output: str
) -> None:
    folder, raw, _ = trained
    scorer = RawScorer.load(folder)
    path = tmp_path / f"rows.{source}"
    raw.to_csv(path, index=False) if source == "csv" else raw.to_parquet(path)
    whole = score_file(scorer, path, tmp_path / f"whole.{output}", batch_rows=10_000)
    small = score_file(scorer, path, tmp_path / f"small.{output}", batch_rows=7)
    assert whole.rows == small.rows == len(raw)
    assert whole.kept == ["id", "y"]  # what the model does not read: the id, the target
    read = (lambda p: pd.read_csv(p)) if output == "csv" else pd.read_parquet
    first, second = read(whole.output), read(small.output)
    pd.testing.assert_frame_equal(first, second)
    assert list(first.columns) == ["id", "y", "proba_no", "proba_yes", "prediction"]
    np.testing.assert_allclose(
        first[["proba_no", "proba_yes"]].to_numpy(), scorer.predict_proba(raw), atol=1e-12
    )


def test_a_bad_value_fails_naming_column_and_row_and_leaves_no_output(
    trained: Any, tmp_path: Path
) -> None:
    folder, raw, _ = trained
    scorer = RawScorer.load(folder)
    output = tmp_path / "out.parquet"
    output.write_bytes(b"previous result")
    bad = raw.assign(income=[("" if np.isnan(v) else repr(v)) for v in raw["income"]])
    bad.loc[123, "income"] = "lots"  # numbers as text, an empty text as missing, then this
    bad.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(InputError, match=r"'income'.*row 123.*'lots'"):
        score_file(scorer, tmp_path / "bad.parquet", output, batch_rows=50)
    assert output.read_bytes() == b"previous result"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match=r"'income'.*lots"):
        score_file(scorer, tmp_path / "bad.csv", output, batch_rows=50)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "bad.parquet", "out.parquet"]
    with pytest.raises(SemopsError, match="--keep: column 'nope'"):
        score_file(scorer, tmp_path / "bad.csv", output, keep=["id", "nope"])
    result = run(["semops", "predict", "--input", "bad.csv", "--output", "x.parquet",
                  "--batch-rows", "0"], tmp_path, check=False)  # fmt: skip
    assert result.returncode == 2
    assert "--batch-rows: a whole number of rows of at least 1, not '0'" in result.stderr


def test_semops_predict_command(trained: Any, tmp_path: Path) -> None:
    folder, raw, _ = trained
    raw.to_csv(tmp_path / "rows.csv", index=False)
    out = tmp_path / "pred.parquet"
    command = ["semops", "predict", "--model", str(folder), "--input", "rows.csv"]
    result = subprocess.run(
        [*command, "--output", str(out), "--keep", "id"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"{len(raw)} rows scored" in result.stdout
    assert pq.read_schema(out).names == ["id", "proba_no", "proba_yes", "prediction"]
    raw.drop(columns="city").to_csv(tmp_path / "rows.csv", index=False)
    result = run([*command, "--output", "x.parquet"], tmp_path, check=False)
    assert result.returncode == 1
    assert "column 'city' is missing" in result.stderr
    assert not (tmp_path / "x.parquet").exists()
    result = run(["semops", "predict", "--model", "no-such-exp", "--input", "rows.csv",
                  "--output", "x.parquet"], tmp_path, check=False)  # fmt: skip
    assert result.returncode == 1
    assert "not a folder, an MLflow model URI" in result.stderr or "no DVC repo" in result.stderr


def test_predict_a_dvc_experiment_by_name(project_copy: Path, tmp_path: Path) -> None:
    """A queued experiment's model, read from DVC's cache at the experiment's commit."""
    run(["dvc", "exp", "run", "--queue", "-n", "logreg-exp", "-S", "model=logreg"], project_copy)
    run(["dvc", "exp", "run", "--run-all"], project_copy, timeout=900)
    raw = pq.read_table(next((project_copy / "data/raw").glob("*/table.parquet"))).to_pandas()
    raw.head(50).to_parquet(tmp_path / "rows.parquet")
    by_name = tmp_path / "exp.parquet"
    run(["semops", "predict", "--model", "logreg-exp", "--input", str(tmp_path / "rows.parquet"),
         "--output", str(by_name)], project_copy)  # fmt: skip
    workspace = tmp_path / "workspace.parquet"
    run(["semops", "predict", "--input", str(tmp_path / "rows.parquet"),
         "--output", str(workspace)], project_copy)  # fmt: skip
    run(["dvc", "exp", "apply", "logreg-exp"], project_copy)
    run(["dvc", "checkout"], project_copy)
    applied = tmp_path / "applied.parquet"
    run(["semops", "predict", "--input", str(tmp_path / "rows.parquet"),
         "--output", str(applied)], project_copy)  # fmt: skip
    pd.testing.assert_frame_equal(pd.read_parquet(by_name), pd.read_parquet(applied))
    assert not pd.read_parquet(by_name).equals(pd.read_parquet(workspace))  # mlp vs logreg


@pytest.mark.parametrize("source", ["csv", "parquet"])
def test_an_input_without_rows_gives_an_output_with_the_columns(
    trained: Any, tmp_path: Path, source: str
) -> None:
    folder, raw, _ = trained
    path = tmp_path / f"empty.{source}"
    empty = raw.head(0)
    empty.to_csv(path, index=False) if source == "csv" else empty.to_parquet(path)
    scored = score_file(RawScorer.load(folder), path, tmp_path / "out.parquet")
    assert scored.rows == 0
    assert pq.read_schema(scored.output).names == ["id", "y", "proba_no", "proba_yes", "prediction"]
    assert pq.read_metadata(scored.output).num_rows == 0
