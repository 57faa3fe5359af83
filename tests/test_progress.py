"""Progress: a bar on a terminal; in a log, one line every N steps and one at the end."""

from __future__ import annotations

import logging

import pytest

from semops.progress import Progress


def test_without_a_terminal_a_line_every_n_steps_and_at_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="semops.test")
    log = logging.getLogger("semops.test")
    with Progress(log, "train", 25, "epoch", log_every=10, terminal=False) as progress:
        for epoch in range(25):
            progress.update(train_loss=1 / (epoch + 1), val_loss=0.5)
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "train: epoch 10/25  train_loss 0.1000  val_loss 0.5000",
        "train: epoch 20/25  train_loss 0.0500  val_loss 0.5000",
        "train: epoch 25/25  train_loss 0.0400  val_loss 0.5000",
    ]


def test_an_error_adds_no_final_line_and_a_terminal_gets_a_bar(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO, logger="semops.test")
    log = logging.getLogger("semops.test")
    with pytest.raises(RuntimeError), Progress(log, "x", None, "rows", 100, terminal=False) as p:
        p.update(5)
        raise RuntimeError
    assert caplog.records == []
    with Progress(log, "predict", 4, "rows", 1, terminal=True) as bar:
        bar.update(4)
    assert caplog.records == []
    assert "predict: 100%" in capsys.readouterr().err
