"""Loggers write every evaluation record while the run goes on; each test reads back what was written with
the tool's own reader (csv, TensorBoard's EventAccumulator, MlflowClient)."""

from __future__ import annotations

import csv
import json

import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

import cadence
from cadence.callbacks import CSVLogger, MLflowLogger, TensorBoardLogger
from cadence.callbacks.loggers import make_logger
from cadence.cli.app import app
from cadence.engine.events import Callback
from cadence.errors import ConfigError

RUN = dict(model="mlp:16", strategy="mini-batch", batch_size=64, max_epochs=2, eval_every_updates=5, threads=1)
RUN |= dict(optimizer="sgd", lr=0.01)  # the settings these tests were written with (the defaults then)


class RowsSeen(Callback):
    """Counts the rows of a CSV file at every epoch end: the logger must have written them already."""

    def __init__(self, path):
        self.path, self.counts = path, []

    def on_epoch_end(self, state):
        with open(self.path) as f:
            self.counts.append(sum(1 for _ in f) - 1)


def test_csv_logger_writes_each_record_as_it_comes(digits, tmp_path):
    path = tmp_path / "metrics.csv"
    seen = RowsSeen(path)
    run = cadence.train(data=digits, callbacks=[CSVLogger(path), seen], **RUN)
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["updates"]) for r in rows] == [h["updates"] for h in run.history]
    assert [float(r["val_accuracy"]) for r in rows] == [h["val_accuracy"] for h in run.history]
    # 20 updates per epoch, an evaluation every 5: 4 rows by the first epoch's end, 8 by the second's
    assert seen.counts == [4, 8]


def test_tensorboard_logger_writes_scalars_at_the_update_count(digits, tmp_path):
    run = cadence.train(data=digits, callbacks=[TensorBoardLogger(tmp_path / "tb")], **RUN)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    val_loss = events.Scalars("val_loss")
    assert [e.step for e in val_loss] == [h["updates"] for h in run.history]
    assert [e.value for e in val_loss] == pytest.approx([h["val_loss"] for h in run.history], rel=1e-6)
    assert "config/text_summary" in events.Tags()["tensors"]


def test_mlflow_logger_records_params_metrics_and_the_end(digits, tmp_path):
    logger = MLflowLogger(tmp_path / "mlruns", run_name="digits")
    run = cadence.train(data=digits, callbacks=[logger], **RUN)
    client = MlflowClient(tracking_uri=logger.tracking_uri)
    history = client.get_metric_history(logger.run_id, "val_accuracy")
    assert [(m.step, m.value) for m in history] == [(h["updates"], h["val_accuracy"]) for h in run.history]
    logged = client.get_run(logger.run_id)
    assert logged.data.params["optimizer.lr"] == "0.01" and logged.data.params["model.spec"] == "mlp:16"
    assert logged.data.tags["stop_reason"] == "budget" and logged.info.status == "FINISHED"
    assert logged.data.metrics["final_test_accuracy"] == pytest.approx(run.test_metrics["test_accuracy"])
    assert logged.info.run_name == "digits"


def test_unknown_logger_names_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="unknown logger 'wandb'. Allowed: csv, tensorboard, mlflow"):
        make_logger("wandb", tmp_path)


def test_cli_logger_flags_write_into_the_run_directory(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--limit", "300", "-m", "mlp:8", "-e", "2", "--threads", "1", "-o", str(out), "--json"]
    result = CliRunner().invoke(app, [*args, "--logger", "csv", "--logger", "tensorboard", "--logger", "mlflow"])
    assert result.exit_code == 0, result.output
    updates = [json.loads(line)["updates"] for line in (out / "history.jsonl").read_text().splitlines()]
    with open(out / "metrics.csv") as f:
        assert [int(r["updates"]) for r in csv.DictReader(f)] == updates
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train_loss")] == updates
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "cadence"]
    (logged,) = client.search_runs([experiment.experiment_id])
    assert [m.step for m in client.get_metric_history(logged.info.run_id, "val_loss")] == updates
