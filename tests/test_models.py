"""models: numpy predictors equal to the libraries that trained them; safe, stable save/load."""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from projectkit import REPO

from semops.config.schema import EarlyStopping, GbdtConfig, LogregConfig, MlpConfig, TrainConfig
from semops.errors import SemopsError
from semops.tabular import models
from semops.tabular.metrics import log_loss, scores_to_proba, softmax
from semops.tabular.models import predict, training
from semops.tabular.models.base import EarlyStopper, TrainingData
from semops.tabular.models.gbdt import TreeEnsemble, export_trees, keep_rounds
from semops.tabular.models.linear import LinearClassifier, fit_logreg

N_FEATURES = 5


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """scikit-learn's OpenMP threads crawl when the machine is busy; one thread is fast enough."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def make_data(
    n: int, n_classes: int, seed: int, nan_rate: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES))
    signal = x[:, 0] + x[:, 1] * x[:, 2] + 0.5 * rng.normal(size=n)
    y = np.digitize(signal, np.quantile(signal, np.linspace(0, 1, n_classes + 1)[1:-1]))
    if nan_rate:
        x[rng.random(x.shape) < nan_rate] = np.nan
    return x, y.astype(np.int64)


def training_data(n_classes: int, seed: int = 0) -> TrainingData:
    x, y = make_data(240, n_classes, seed)
    x = x.astype(np.float32)
    return TrainingData(x[:160], y[:160], x[160:], y[160:], n_classes)


# ------------------------------------------------------------------------- gbdt


@pytest.fixture(scope="module", params=[2, 3], ids=["binary", "multiclass"])
def hgb(request: pytest.FixtureRequest) -> tuple[Any, np.ndarray]:
    """A fitted HistGradientBoostingClassifier (NaNs in training) and NaN-holed test rows."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    n_classes: int = request.param
    x, y = make_data(400, n_classes, seed=n_classes, nan_rate=0.1)
    x[:, 4] = np.nan_to_num(x[:, 4])  # one feature without NaNs in training...
    model = HistGradientBoostingClassifier(
        max_iter=25, max_leaf_nodes=15, min_samples_leaf=5, early_stopping=False, random_state=0
    ).fit(x, y)
    test, _ = make_data(300, n_classes, seed=99, nan_rate=0.2)  # ...but with NaNs at prediction
    test[0] = np.nan
    test[1] = [np.inf, -np.inf, 1e300, -1e300, 0.0]
    return model, test


def test_tree_ensemble_equals_sklearn(hgb: tuple[Any, np.ndarray]) -> None:
    model, test = hgb
    assert np.isnan(test[:, 4]).any()
    ours = TreeEnsemble(export_trees(model)).predict_proba(test)
    theirs = model.predict_proba(test)
    assert ours.shape == theirs.shape == (len(test), len(model.classes_))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=1e-12)
    assert (ours.argmax(axis=1) == model.predict(test)).all()


def test_tree_ensemble_accepts_float32(hgb: tuple[Any, np.ndarray]) -> None:
    model, test = hgb
    test32 = test[2:].astype(np.float32)
    ours = TreeEnsemble(export_trees(model)).predict_proba(test32)
    np.testing.assert_allclose(ours, model.predict_proba(test32), rtol=0, atol=1e-9)


def test_keep_rounds_truncates_to_the_first_iterations(hgb: tuple[Any, np.ndarray]) -> None:
    model, test = hgb
    tensors = export_trees(model)
    per_round = len(model._predictors[0])
    staged = list(model.staged_predict_proba(test))
    assert len(staged) == 25
    for rounds in (1, 7, 25):
        kept = keep_rounds(tensors, rounds * per_round)
        assert len(kept["roots"]) == rounds * per_round
        n_nodes = len(kept["feature"])
        assert all(
            len(kept[k]) == n_nodes for k in ("threshold", "left", "right", "is_leaf", "value")
        )
        inner = kept["is_leaf"] == 0
        assert (kept["left"][inner] < n_nodes).all() and (kept["right"][inner] < n_nodes).all()
        np.testing.assert_allclose(
            TreeEnsemble(kept).predict_proba(test), staged[rounds - 1], atol=1e-9
        )
    assert len(keep_rounds(tensors, 7 * per_round)["feature"]) < len(tensors["feature"])
    # No trees at all: the baseline prediction.
    empty = TreeEnsemble(keep_rounds(tensors, 0)).predict_proba(test)
    np.testing.assert_allclose(
        empty, scores_to_proba(np.tile(tensors["baseline"], (len(test), 1))), atol=1e-15
    )


def test_gbdt_fit_stops_early_and_keeps_the_best_round() -> None:
    data = training_data(2)
    # Large steps on small data overfit quickly: the validation loss turns up.
    model_cfg = GbdtConfig(
        "gbdt", max_iter=100, learning_rate=0.8, max_leaf_nodes=8, min_samples_leaf=3
    )
    train_cfg = TrainConfig(seed=0, epochs=1, early_stopping=EarlyStopping(patience=4))
    fitted = training.fit(model_cfg, train_cfg, data)
    losses = [row["val_loss"] for row in fitted.history]
    assert len(fitted.history) == fitted.best_epoch + 4 < 100
    assert losses[fitted.best_epoch - 1] == min(losses)
    assert len(fitted.tensors["roots"]) == fitted.best_epoch
    kept = TreeEnsemble(fitted.tensors).predict_proba(data.x_val)
    assert log_loss(kept, data.y_val) == pytest.approx(min(losses), rel=1e-12)


# ----------------------------------------------------------------------- linear


@pytest.mark.parametrize("n_classes", [2, 3])
def test_linear_classifier_equals_sklearn(n_classes: int) -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = make_data(300, n_classes, seed=n_classes)
    test, _ = make_data(100, n_classes, seed=7)
    reference = LogisticRegression(C=0.7, max_iter=1000).fit(x, y)
    ours = LinearClassifier(reference.coef_, reference.intercept_).predict_proba(test)
    assert ours.shape == (100, n_classes)
    np.testing.assert_allclose(ours, reference.predict_proba(test), rtol=0, atol=1e-12)
    # Ours solves the objective exactly (Newton); sklearn's default tol stops ~1e-4 short of it.
    exact = LogisticRegression(C=0.7, max_iter=100_000, tol=1e-12).fit(x, y)
    fitted = fit_logreg(x.astype(np.float32), y, n_classes, c=0.7)
    np.testing.assert_allclose(fitted.predict_proba(test), exact.predict_proba(test), atol=1e-6)


# -------------------------------------------------------------------------- mlp


@pytest.mark.parametrize(("layers", "n_classes"), [(1, 2), (2, 3), (4, 2)])
def test_numpy_mlp_equals_the_torch_network(layers: int, n_classes: int) -> None:
    import torch

    from semops.tabular.models.mlp import build_network
    from semops.tabular.models.mlp_predict import from_tensors

    torch.manual_seed(layers)
    # Dropout is active in train mode, the identity in eval mode (what the numpy version does).
    network = build_network(
        N_FEATURES, n_classes, MlpConfig("mlp", hidden=16, layers=layers, dropout=0.5)
    )
    network.eval()
    x, _ = make_data(200, n_classes, seed=1)
    x = (3 * x).astype(np.float32)
    with torch.no_grad():
        expected = torch.softmax(network(torch.from_numpy(x)), dim=1).numpy()
    tensors = {k: v.detach().numpy().copy() for k, v in network.state_dict().items()}
    # layers=4 names its last Linear "12.weight": the layer order must be numeric, not textual.
    assert len(tensors) == 2 * (layers + 1)
    got = from_tensors({}, tensors).predict_proba(x)
    assert got.shape == (200, n_classes)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def mlp_settings(
    seed: int = 0, epochs: int = 4, patience: int = 10
) -> tuple[MlpConfig, TrainConfig]:
    model = MlpConfig("mlp", hidden=16, layers=2, dropout=0.2, lr=0.01, batch_size=32, device="cpu")
    return model, TrainConfig(
        seed=seed, epochs=epochs, early_stopping=EarlyStopping(patience=patience)
    )


def test_mlp_training_is_byte_identical_for_the_same_seed(tmp_path: Path) -> None:
    data = training_data(3)
    weights = []
    for run, seed in enumerate((0, 0, 1)):
        fitted = training.fit(*mlp_settings(seed), data)
        models.save(fitted, tmp_path / str(run), {}, {})
        weights.append((tmp_path / str(run) / models.WEIGHTS).read_bytes())
    assert weights[0] == weights[1]
    assert weights[0] != weights[2]


def test_mlp_keeps_the_weights_of_its_best_epoch() -> None:
    from semops.tabular.models.mlp_predict import from_tensors

    data = training_data(2)
    fitted = training.fit(*mlp_settings(epochs=30, patience=2), data)
    losses = [row["val_loss"] for row in fitted.history]
    assert fitted.best_epoch == int(np.argmin(losses)) + 1
    assert len(fitted.history) <= 30
    if len(fitted.history) < 30:
        assert len(fitted.history) == fitted.best_epoch + 2
    proba = from_tensors({}, fitted.tensors).predict_proba(data.x_val)
    assert log_loss(proba, data.y_val) == pytest.approx(losses[fitted.best_epoch - 1], abs=1e-5)


# ------------------------------------------------------------------- save / load


def fitted_model(kind: str) -> tuple[models.Fitted, TrainingData]:
    data = training_data(3 if kind == "mlp" else 2)
    train_cfg = TrainConfig(seed=0, epochs=3)
    model_cfg: Any = {
        "mlp": MlpConfig("mlp", hidden=8, lr=0.01, batch_size=32, device="cpu"),
        "logreg": LogregConfig("logreg"),
        "gbdt": GbdtConfig("gbdt", max_iter=10, min_samples_leaf=5),
    }[kind]
    return training.fit(model_cfg, train_cfg, data), data


def read_safetensors_header(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header: dict[str, Any] = json.loads(raw[8 : 8 + length])
    body = max(
        end for k, v in header.items() if k != "__metadata__" for _, end in [v["data_offsets"]]
    )
    assert 8 + length + body == len(raw)  # the header and the raw tensor bytes are all there is
    return header


@pytest.mark.parametrize("kind", ["mlp", "logreg", "gbdt"])
def test_save_then_load_gives_identical_predictions(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    fitted, data = fitted_model(kind)
    directory = tmp_path / "model"
    models.save(
        fitted,
        directory,
        {"classes": ["a", "b", "c"][: data.n_classes], "features": ["f"] * 5},
        {"features": ["f"] * 5},
    )
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [models.FEATURIZER, models.META, models.WEIGHTS]
    )

    header = read_safetensors_header(directory / models.WEIGHTS)
    assert set(header) - {"__metadata__"} == set(fitted.tensors)
    meta = json.loads((directory / models.META).read_text())
    assert meta["kind"] == kind
    assert meta["n_features"] == N_FEATURES
    assert meta["n_classes"] == data.n_classes
    assert meta["config"]["name"] == kind

    def no_pickle(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("models.load unpickled something")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "Unpickler", no_pickle)
    classifier, loaded_meta = predict.load(directory)
    assert loaded_meta == meta

    predictor = predict.predictor(kind)
    in_memory = predictor.from_tensors(meta, fitted.tensors)
    for x in (data.x_train, data.x_val):
        np.testing.assert_array_equal(classifier.predict_proba(x), in_memory.predict_proba(x))
    proba = classifier.predict_proba(data.x_val)
    assert proba.shape == (len(data.x_val), data.n_classes)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    # Saving again gives the same bytes.
    models.save(
        fitted,
        tmp_path / "again",
        {"classes": meta["classes"], "features": meta["features"]},
        {"features": ["f"] * 5},
    )
    for name in (models.FEATURIZER, models.META, models.WEIGHTS):
        assert (tmp_path / "again" / name).read_bytes() == (directory / name).read_bytes()


def test_load_rejects_unknown_kind_and_bad_weights(tmp_path: Path) -> None:
    fitted, _ = fitted_model("logreg")
    models.save(fitted, tmp_path, {}, {})
    for corrupt in (
        b"",
        b"\x00\x01 not safetensors",
        (tmp_path / models.WEIGHTS).read_bytes()[:-3],
    ):
        (tmp_path / models.WEIGHTS).write_bytes(corrupt)
        with pytest.raises(SemopsError, match=r"model\.safetensors: cannot load weights"):
            predict.load(tmp_path)
    (tmp_path / models.WEIGHTS).unlink()
    with pytest.raises(SemopsError, match=r"model\.safetensors: cannot load weights"):
        predict.load(tmp_path)
    (tmp_path / models.META).write_text(json.dumps({"kind": "pickle"}))
    with pytest.raises(SemopsError, match="unknown model kind 'pickle'"):
        predict.load(tmp_path)


# ------------------------------------------------------------------ EarlyStopper


def test_early_stopper_counts_epochs_without_improvement() -> None:
    stopper = EarlyStopper(patience=2, min_delta=0.0)
    assert stopper.improved(1.0, 1)
    assert stopper.improved(0.8, 2)
    assert not stopper.improved(0.8, 3)  # equal is not better
    assert not stopper.should_stop
    assert stopper.improved(0.7, 4)  # an improvement resets the count
    assert stopper.stale == 0
    assert not stopper.improved(0.9, 5)
    assert not stopper.should_stop
    assert not stopper.improved(0.75, 6)
    assert stopper.should_stop
    assert (stopper.best, stopper.best_epoch) == (0.7, 4)


def test_early_stopper_min_delta() -> None:
    stopper = EarlyStopper(patience=1, min_delta=0.1)
    assert stopper.improved(1.0, 1)
    assert not stopper.improved(0.95, 2)  # better, but by less than min_delta
    assert stopper.should_stop
    assert stopper.best == 1.0
    assert stopper.improved(0.85, 3)
    assert (stopper.best_epoch, stopper.should_stop) == (3, False)


def test_early_stopper_nan_loss_is_never_an_improvement() -> None:
    stopper = EarlyStopper(patience=1, min_delta=0.0)
    assert not stopper.improved(float("nan"), 1)
    assert stopper.best_epoch == 0
    assert stopper.should_stop


# ----------------------------------------------------------------------- helpers


def test_softmax_is_stable_and_normalised() -> None:
    logits = np.array([[1000.0, 1000.0, -1000.0], [0.0, np.log(3.0), -np.inf]])
    proba = softmax(logits)
    np.testing.assert_allclose(proba, [[0.5, 0.5, 0.0], [0.25, 0.75, 0.0]], atol=1e-15)


def test_log_loss_matches_sklearn() -> None:
    from sklearn.metrics import log_loss as sk_log_loss

    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(3), size=50)
    labels = rng.integers(0, 3, 50)
    assert log_loss(proba, labels) == pytest.approx(
        sk_log_loss(labels, proba, labels=[0, 1, 2]), rel=1e-12
    )


def test_our_adamw_matches_torch_adamw() -> None:
    """Operation for operation, but for the correctly rounded square root: equal to a few ulp."""
    import torch

    from semops.tabular.models.mlp import AdamW, build_network

    x, y = make_data(64, 3, seed=4)
    features, labels = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
    torch.manual_seed(0)
    ours_net = build_network(x.shape[1], 3, MlpConfig(name="mlp", hidden=8, layers=2, dropout=0.0))
    torch_net = build_network(x.shape[1], 3, MlpConfig(name="mlp", hidden=8, layers=2, dropout=0.0))
    torch_net.load_state_dict(ours_net.state_dict())
    ours = AdamW(list(ours_net.parameters()), lr=0.01, weight_decay=0.1)
    reference = torch.optim.AdamW(torch_net.parameters(), lr=0.01, weight_decay=0.1)
    for _ in range(25):
        for net, optimizer in ((ours_net, ours), (torch_net, reference)):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(features), labels).backward()
            optimizer.step()
    for mine, theirs in zip(ours_net.parameters(), torch_net.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


def test_diverging_training_is_a_clear_error() -> None:
    model, train = mlp_settings(epochs=5)
    exploding = dataclasses.replace(model, lr=1e12)
    with pytest.raises(SemopsError, match=r"training diverged .* lower model.lr \(now 1e\+12\)"):
        training.fit(exploding, train, training_data(2))


def test_exact_matmul_does_not_depend_on_the_order_of_additions() -> None:
    """What makes the MLP's CPU weights the same on every CPU: BLAS kernels differ in the order
    they add a product's terms; here every order gives the same bits."""
    import torch

    from semops.tabular.models.exact import exact_matmul

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(64, 300, generator=generator) * torch.logspace(-3, 3, 300)
    b = torch.randn(300, 16, generator=generator)
    order = torch.randperm(300, generator=generator)
    exact = exact_matmul(a, b)
    assert torch.equal(exact, exact_matmul(a[:, order], b[order]))
    assert not torch.equal(a @ b, a[:, order] @ b[order])  # float32 sums do depend on it
    # Each term is rounded to ~21 bits of its row's (column's) largest: the error is bounded by
    # the sum of the terms' magnitudes, not by the (possibly cancelled) result.
    error = (exact.double() - a.double() @ b.double()).abs()
    assert bool((error <= 1e-5 * (a.double().abs() @ b.double().abs())).all())


def test_exact_layers_train_like_torchs_own() -> None:
    import torch

    from semops.tabular.models.exact import ExactLinear

    torch.manual_seed(0)
    exact = ExactLinear(12, 5)
    plain = torch.nn.Linear(12, 5)
    plain.load_state_dict(exact.state_dict())
    x = torch.randn(32, 12, requires_grad=True)
    x_plain = x.detach().clone().requires_grad_(True)
    exact(x).square().sum().backward()
    plain(x_plain).square().sum().backward()
    for mine, theirs in ((x.grad, x_plain.grad), (exact.weight.grad, plain.weight.grad)):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(exact.bias.grad, plain.bias.grad, rtol=1e-5, atol=1e-5)


def test_train_stage_weights_do_not_depend_on_mkls_code_path(tmp_path: Path) -> None:
    """MKL picks its kernels by CPU; MKL_CBWR makes it take other paths here, as other CPUs
    would: the trained weights must not change."""
    import yaml
    from stagekit import params_with, run_stage, write_params

    data = yaml.safe_load((REPO / "conf/data/credit_sample.yaml").read_text())
    data["source"]["path"] = str(REPO / data["source"]["path"])
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    write_params(prepared, params_with(data=data))
    for stage in ("download", "clean", "featurize"):
        assert run_stage(prepared, stage).returncode == 0
    weights = []
    for mkl_path in ("", "COMPATIBLE", "AVX2"):
        workdir = tmp_path / (mkl_path or "default")
        shutil.copytree(prepared, workdir)
        result = run_stage(workdir, "train", **({"MKL_CBWR": mkl_path} if mkl_path else {}))
        assert result.returncode == 0, result.stderr
        weights.append((workdir / "data/models/model" / models.WEIGHTS).read_bytes())
    assert weights[1:] == weights[:1] * 2


@pytest.mark.parametrize(
    "model_cfg",
    [
        MlpConfig("mlp", hidden=8, layers=1),
        LogregConfig("logreg"),
        GbdtConfig("gbdt", max_iter=12, learning_rate=0.3, max_leaf_nodes=4, min_samples_leaf=3),
    ],
    ids=lambda cfg: cfg.name,
)
def test_every_trainer_reports_each_epoch_as_it_ends(model_cfg: Any) -> None:
    reported: list[dict[str, float]] = []
    train_cfg = TrainConfig(seed=0, epochs=6, early_stopping=EarlyStopping(patience=50))
    fitted = training.fit(model_cfg, train_cfg, training_data(2), reported.append)
    assert reported == fitted.history
    assert len(reported) == training.epoch_budget(model_cfg, train_cfg)
