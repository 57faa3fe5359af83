"""evaluate: test metrics, curves and confusion matrix, beside a logistic-regression baseline."""

from semops import paths
from semops.config.schema import load_section
from semops.io import write_csv, write_json
from semops.stage import run_stage
from semops.tabular import evaluation as ev
from semops.tabular.featureio import load_features
from semops.tabular.models import predict
from semops.tabular.models.linear import fit_logreg


def main() -> None:
    cfg = load_section("evaluate")
    classifier, meta = predict.load(paths.MODEL_DIR)
    x_train, y_train, _ = load_features(paths.processed_split("train"))
    x_test, y_test, _ = load_features(paths.processed_split("test"))
    classes = meta["classes"]
    proba = classifier.predict_proba(x_test)
    scores = ev.classification_metrics(proba, y_test, cfg.threshold, classes)
    baseline = ev.scalar_metrics(
        ev.classification_metrics(
            fit_logreg(x_train, y_train, len(classes)).predict_proba(x_test),
            y_test,
            cfg.threshold,
        )
    )
    write_json(
        paths.EVAL_METRICS,
        {
            "test_rows": len(y_test),
            "test": scores,
            "baseline_logreg": baseline,
            "lift_over_baseline": ev.lift(scores, baseline),
        },
    )
    predicted = ev.predicted_labels(proba, cfg.threshold)
    write_csv(paths.ROC_PLOT, ev.roc_points(proba, y_test))
    write_csv(paths.PR_PLOT, ev.pr_points(proba, y_test))
    write_csv(paths.CALIBRATION_PLOT, ev.calibration_points(proba, y_test, cfg.calibration_bins))
    write_csv(
        paths.CONFUSION_PLOT,
        {
            "actual": [classes[i] for i in y_test],
            "predicted": [classes[i] for i in predicted],
        },
    )
    print("evaluate: " + ", ".join(f"{k} {v:.4f}" for k, v in ev.scalar_metrics(scores).items()))


if __name__ == "__main__":
    run_stage(main)
