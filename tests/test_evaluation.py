"""evaluation: metrics equal scikit-learn's; curves are well formed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from projectkit import REPO
from sklearn import metrics as skm
from stagekit import run_stage

import semops.tabular.evaluation as ev
from semops.config.compose import compose_params


def binary_case(seed: int = 0, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    score = np.clip(0.3 * labels + 0.7 * rng.random(n), 0.0, 1.0)  # informative but imperfect
    return np.column_stack([1 - score, score]), labels


def multiclass_case(seed: int = 0, n: int = 300, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[labels]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return proba, labels


KEYS = ["accuracy", "brier", "f1", "log_loss", "pr_auc", "roc_auc"]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_binary_metrics_equal_sklearn(seed: int, threshold: float) -> None:
    proba, labels = binary_case(seed)
    score = proba[:, 1]
    predicted = (score >= threshold).astype(int)
    expected = {
        "accuracy": skm.accuracy_score(labels, predicted),
        "brier": skm.brier_score_loss(labels, score),
        "f1": skm.f1_score(labels, predicted),
        "log_loss": skm.log_loss(labels, proba),
        "pr_auc": skm.average_precision_score(labels, score),
        "roc_auc": skm.roc_auc_score(labels, score),
    }
    result = ev.classification_metrics(proba, labels, threshold, ["good", "bad"])
    assert list(result) == KEYS  # binary: the scalars only, as before
    assert all(isinstance(v, float) for v in result.values())
    for key in KEYS:
        assert result[key] == pytest.approx(expected[key], abs=1e-6), key


def test_binary_threshold_changes_the_thresholded_metrics_only() -> None:
    proba, labels = binary_case()
    low, high = (
        ev.classification_metrics(proba, labels, 0.2),
        ev.classification_metrics(proba, labels, 0.8),
    )
    assert low["f1"] != high["f1"]
    assert low["accuracy"] != high["accuracy"]
    for key in ("roc_auc", "pr_auc", "brier", "log_loss"):
        assert low[key] == high[key]


def test_binary_metrics_of_a_perfect_and_an_inverted_model() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    perfect = np.column_stack([1.0 - labels, labels]).astype(np.float64) * 0.98 + 0.01
    assert ev.classification_metrics(perfect, labels, 0.5)["roc_auc"] == 1.0
    assert ev.classification_metrics(perfect, labels, 0.5)["accuracy"] == 1.0
    assert ev.classification_metrics(perfect[:, ::-1], labels, 0.5)["roc_auc"] == 0.0


@pytest.mark.parametrize("k", [3, 5])
def test_multiclass_metrics_are_macro_and_equal_sklearn(k: int) -> None:
    proba, labels = multiclass_case(seed=k, k=k)
    onehot = np.eye(k)[labels]
    predicted = proba.argmax(axis=1)
    expected = {
        "accuracy": skm.accuracy_score(labels, predicted),
        "brier": np.mean(np.sum((proba - onehot) ** 2, axis=1)),
        "f1": skm.f1_score(labels, predicted, average="macro"),
        "log_loss": skm.log_loss(labels, proba),
        "pr_auc": np.mean(
            [skm.average_precision_score(onehot[:, c], proba[:, c]) for c in range(k)]
        ),
        "roc_auc": np.mean([skm.roc_auc_score(onehot[:, c], proba[:, c]) for c in range(k)]),
    }
    result = ev.classification_metrics(proba, labels, threshold=0.5)
    assert list(result) == MULTICLASS_KEYS
    for key in KEYS:
        assert result[key] == pytest.approx(expected[key], abs=1e-6), key
    # Macro differs from the weighted average when classes are unbalanced.
    weighted = skm.f1_score(labels, predicted, average="weighted")
    assert result["f1"] != pytest.approx(weighted, abs=1e-9)


MULTICLASS_KEYS = [
    *sorted([*KEYS, "f1_weighted", "roc_auc_weighted"]),
    "per_class",
    "confusion_matrix",
]


@pytest.mark.parametrize(("k", "seed"), [(3, 0), (3, 1), (5, 2)])
def test_multiclass_weighted_per_class_and_confusion_equal_sklearn(k: int, seed: int) -> None:
    # Unbalanced classes, so macro and weighted averages differ.
    proba, labels = multiclass_case(seed=seed, n=400, k=k)
    labels = np.where(labels == 0, labels, np.where(np.arange(400) % 3 == 0, 0, labels))
    predicted = proba.argmax(axis=1)
    names = [f"class {c}" for c in "abcde"[:k]]
    result = ev.classification_metrics(proba, labels, 0.5, names)
    for average in ("macro", "weighted"):
        key = "roc_auc" if average == "macro" else "roc_auc_weighted"
        expected = skm.roc_auc_score(labels, proba, average=average, multi_class="ovr")
        assert result[key] == pytest.approx(expected, abs=1e-6), key
        key = "f1" if average == "macro" else "f1_weighted"
        expected = skm.f1_score(labels, predicted, average=average)
        assert result[key] == pytest.approx(expected, abs=1e-6), key
    assert result["roc_auc"] != pytest.approx(result["roc_auc_weighted"], abs=1e-6)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, predicted, zero_division=0
    )
    assert list(result["per_class"]) == names
    for c, name in enumerate(names):
        row = result["per_class"][name]
        assert row["precision"] == pytest.approx(precision[c], abs=1e-6)
        assert row["recall"] == pytest.approx(recall[c], abs=1e-6)
        assert row["f1"] == pytest.approx(f1[c], abs=1e-6)
        assert row["support"] == support[c]
        assert isinstance(row["support"], int)
    matrix = skm.confusion_matrix(labels, predicted)
    assert result["confusion_matrix"] == {
        actual: {name: int(matrix[i, j]) for j, name in enumerate(names)}
        for i, actual in enumerate(names)
    }


def test_a_class_never_predicted_has_zero_precision() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    proba = np.array([[0.8, 0.1, 0.1]] * 2 + [[0.1, 0.8, 0.1]] * 2 + [[0.6, 0.3, 0.1]] * 2)
    result = ev.classification_metrics(proba, labels, 0.5, ["a", "b", "c"])
    assert result["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert result["confusion_matrix"]["c"] == {"a": 2, "b": 0, "c": 0}


def test_multiclass_entries_are_named_by_class_index_without_names() -> None:
    proba, labels = multiclass_case(k=3)
    result = ev.classification_metrics(proba, labels, 0.5)
    assert list(result["per_class"]) == ["0", "1", "2"]


def test_lift_and_scalars_leave_the_per_class_entries_out() -> None:
    proba, labels = multiclass_case(k=3)
    model = ev.classification_metrics(proba, labels, 0.5, ["a", "b", "c"])
    baseline = ev.scalar_metrics(ev.classification_metrics(proba[:, ::-1], labels, 0.5))
    assert list(baseline) == sorted([*KEYS, "f1_weighted", "roc_auc_weighted"])
    assert set(ev.lift(model, baseline)) == set(baseline)


def test_multiclass_threshold_is_ignored() -> None:
    proba, labels = multiclass_case()
    assert ev.classification_metrics(proba, labels, 0.1) == ev.classification_metrics(
        proba, labels, 0.9
    )


@pytest.mark.parametrize("case", [binary_case, multiclass_case])
def test_metrics_are_rounded_to_six_decimals(case: object) -> None:
    proba, labels = case()  # type: ignore[operator]
    result = ev.classification_metrics(proba, labels, 0.5)
    values = [*ev.scalar_metrics(result).values()]
    for row in result.get("per_class", {}).values():
        values += [row["precision"], row["recall"], row["f1"]]
    for value in values:
        assert value == round(value, 6)


def test_predicted_labels() -> None:
    binary = np.array([[0.6, 0.4], [0.2, 0.8], [0.5, 0.5]])
    assert ev.predicted_labels(binary, 0.5).tolist() == [0, 1, 1]
    assert ev.predicted_labels(binary, 0.45).tolist() == [0, 1, 1]
    assert ev.predicted_labels(binary, 0.9).tolist() == [0, 0, 0]
    multi = np.array([[0.2, 0.5, 0.3], [0.7, 0.1, 0.2]])
    assert ev.predicted_labels(multi, 0.99).tolist() == [1, 0]


def test_lift_is_model_minus_baseline() -> None:
    model = {"roc_auc": 0.91, "brier": 0.1}
    baseline = {"roc_auc": 0.85, "brier": 0.12}
    assert ev.lift(model, baseline) == {"roc_auc": 0.06, "brier": -0.02}
    assert ev.lift(model, model) == {"roc_auc": 0.0, "brier": 0.0}


# -------------------------------------------------------------------------- curves


@pytest.mark.parametrize("case", [binary_case, multiclass_case])
def test_roc_points_are_monotone_from_0_to_1(case: object) -> None:
    proba, labels = case()  # type: ignore[operator]
    points = ev.roc_points(proba, labels)
    fpr, tpr = np.array(points["fpr"]), np.array(points["tpr"])
    assert len(fpr) == len(tpr) > 2
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
    assert (fpr[0], tpr[0]) == (0.0, 0.0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)


@pytest.mark.parametrize("case", [binary_case, multiclass_case])
def test_pr_points_have_monotone_recall(case: object) -> None:
    proba, labels = case()  # type: ignore[operator]
    points = ev.pr_points(proba, labels)
    recall, precision = np.array(points["recall"]), np.array(points["precision"])
    assert len(recall) == len(precision) > 2
    assert (np.diff(recall) <= 0).all()
    assert recall[0] == 1.0 and recall[-1] == 0.0
    assert ((precision >= 0) & (precision <= 1)).all()


def test_binary_roc_matches_sklearn_curve() -> None:
    proba, labels = binary_case()
    fpr, tpr, _ = skm.roc_curve(labels, proba[:, 1])
    points = ev.roc_points(proba, labels)
    np.testing.assert_allclose(points["fpr"], fpr, atol=1e-6)
    np.testing.assert_allclose(points["tpr"], tpr, atol=1e-6)


def test_multiclass_curves_are_micro_averaged() -> None:
    proba, labels = multiclass_case(k=3)
    truth = np.eye(3)[labels].ravel()
    fpr, _, _ = skm.roc_curve(truth, proba.ravel())
    assert ev.roc_points(proba, labels)["fpr"] == pytest.approx(list(fpr), abs=1e-6)


# --------------------------------------------------------------------- calibration


@pytest.mark.parametrize("bins", [1, 5, 10, 20])
def test_calibration_counts_sum_to_n(bins: int) -> None:
    proba, labels = binary_case(n=257)
    points = ev.calibration_points(proba, labels, bins)
    assert sum(points["count"]) == 257
    assert all(c > 0 for c in points["count"])  # empty bins are left out
    assert len(points["count"]) <= bins
    assert len(points["mean_predicted"]) == len(points["fraction_positive"]) == len(points["count"])
    assert points["mean_predicted"] == sorted(points["mean_predicted"])


def test_calibration_counts_every_class_score_for_multiclass() -> None:
    proba, labels = multiclass_case(n=100, k=4)
    points = ev.calibration_points(proba, labels, 10)
    assert sum(points["count"]) == 100 * 4


def test_calibration_bins_by_hand() -> None:
    score = np.array([0.0, 0.05, 0.15, 0.95, 1.0, 0.99])
    labels = np.array([0, 0, 1, 1, 1, 0])
    points = ev.calibration_points(np.column_stack([1 - score, score]), labels, bins=10)
    # Bins [0, .1): 0.0, 0.05; [.1, .2): 0.15; [.9, 1.0] (1.0 joins the last bin): 0.95, 1.0, 0.99.
    assert points["count"] == [2, 1, 3]
    assert points["mean_predicted"] == pytest.approx(
        [0.025, 0.15, (0.95 + 1.0 + 0.99) / 3], abs=1e-6
    )
    assert points["fraction_positive"] == pytest.approx([0.0, 1.0, 2 / 3], abs=1e-6)


def test_calibration_of_a_calibrated_model_is_near_the_diagonal() -> None:
    rng = np.random.default_rng(5)
    score = rng.random(20_000)
    labels = (rng.random(20_000) < score).astype(int)
    points = ev.calibration_points(np.column_stack([1 - score, score]), labels, 10)
    np.testing.assert_allclose(points["fraction_positive"], points["mean_predicted"], atol=0.03)


# ------------------------------------------------------------- the bundled data sets


@pytest.mark.parametrize("name", ["food_reviews", "election"])
def test_new_data_sets_run_from_download_to_evaluate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Each is one file in conf/data/: composed as `make run O=data=<name>` composes it."""
    monkeypatch.chdir(tmp_path)  # no data/raw here: composing checks no downloaded columns
    compose_params([f"data={name}"], output=tmp_path / "params.yaml", conf_dir=REPO / "conf")
    for stage in ("download", "clean", "featurize", "train", "evaluate"):
        result = run_stage(tmp_path, stage)
        assert result.returncode == 0, f"{stage}: {result.stderr[-3000:]}"
    metrics = json.loads((tmp_path / "reports/metrics.json").read_text())
    spec = json.loads((tmp_path / "data/processed/featurizer.json").read_text())
    test = metrics["test"]
    if name == "food_reviews":
        assert spec["features"][-1].startswith("review~")
        assert len(spec["text"]["review"]["terms"]) == 300  # featurize.text_features
        assert len(spec["features"]) == 300  # product (an id) is dropped, nothing else left
        assert test["roc_auc"] > 0.7
        assert "per_class" not in test
    else:
        classes = ["conservative", "labour", "liberal democrat"]
        assert spec["target"]["classes"] == classes
        assert test["roc_auc"] > 0.75 and test["roc_auc_weighted"] > 0.75
        assert list(test["per_class"]) == classes
        matrix = test["confusion_matrix"]
        assert sum(sum(row.values()) for row in matrix.values()) == metrics["test_rows"]
        assert set(metrics["lift_over_baseline"]) == set(metrics["baseline_logreg"])
        assert "per_class" not in metrics["baseline_logreg"]
