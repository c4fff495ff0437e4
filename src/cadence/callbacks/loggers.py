"""Loggers as callbacks: each evaluation record (history entry) goes to a CSV file, TensorBoard or MLflow while
the run goes on, with the config and final metrics at the end. TensorBoard and MLflow are optional extras,
imported when a logger is made (`pip install 'cadence[tensorboard]'` / `'cadence[mlflow]'`).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

from cadence.engine.events import Callback, TrainState
from cadence.errors import ConfigError

LOGGERS = ("csv", "tensorboard", "mlflow")


class _RecordLogger(Callback):
    """Calls `write(record)` once for every new history record, in order; `step` is its update count."""

    exact_updates = False  # runs of updates never pass an evaluation, so no record is seen late

    def __init__(self) -> None:
        self._written = 0
        self._silent = False  # in the processes of a data-parallel job but rank 0, which alone writes

    def _silence(self, state: TrainState) -> bool:
        self._silent = state.group is not None and state.group.rank != 0
        return self._silent

    def on_update_end(self, state: TrainState) -> None:
        if not self._silent:
            self._flush(state.history)
        return None

    def on_run_end(self, state: TrainState, run) -> None:
        if self._silent:
            return
        self._flush(run.history)  # the record of a run that ended between evaluations
        self.finish(run)

    def _flush(self, history: list[dict]) -> None:
        for record in history[self._written :]:
            self.write(record)
        self._written = len(history)

    def write(self, record: dict) -> None:
        raise NotImplementedError

    def finish(self, run) -> None:
        pass


class CSVLogger(_RecordLogger):
    """Appends each record to `path` as a CSV row as soon as it exists (columns: the first record's keys).

    Unlike the run directory's history.csv, written at the end, this file grows during the run.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._file = None
        self._writer: csv.DictWriter | None = None

    def on_run_start(self, state: TrainState) -> None:
        if self._silence(state):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", newline="")  # noqa: SIM115 (open for the whole run, closed in finish)
        self._writer = None
        self._written = len(state.history)  # a resumed run's earlier records are in its history.csv

    def write(self, record: dict) -> None:
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, fieldnames=list(record), extrasaction="ignore")
            self._writer.writeheader()
        self._writer.writerow(record)
        self._file.flush()

    def finish(self, run) -> None:
        if self._file is not None:
            self._file.close()


class TensorBoardLogger(_RecordLogger):
    """Each numeric record value as a scalar at step = updates (torch.utils.tensorboard); the config as
    text at the start; hyperparameters with the final metrics at the end (TensorBoard's HPARAMS tab)."""

    def __init__(self, log_dir: str | Path) -> None:
        super().__init__()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "the tensorboard logger needs the tensorboard package. Fix: pip install 'cadence[tensorboard]'."
            ) from None
        self.log_dir = Path(log_dir)
        self._writer_class = SummaryWriter
        self._writer = None

    def on_run_start(self, state: TrainState) -> None:
        if self._silence(state):
            return
        import yaml

        self._writer = self._writer_class(log_dir=str(self.log_dir))
        self._written = len(state.history)
        config = yaml.safe_dump(state.config.model_dump(mode="json"), sort_keys=False)
        self._writer.add_text("config", f"```\n{config}```", global_step=state.updates)

    def write(self, record: dict) -> None:
        for key, value in _numbers(record).items():
            if key != "updates":
                self._writer.add_scalar(key, value, global_step=int(record["updates"]))

    def finish(self, run) -> None:
        params = {k: v for k, v in _flat_params(run.config).items() if isinstance(v, int | float | str | bool)}
        final = {f"final/{k}": v for k, v in _numbers({**run.val_metrics, **run.test_metrics}).items()}
        self._writer.add_hparams(params, final, run_name=".")
        self._writer.close()


class MLflowLogger(_RecordLogger):
    """One MLflow run: the flattened config as params, each record's numbers as metrics at step = updates,
    the stop reason as a tag, final metrics at the end. Uses an MlflowClient, never the global active run.

    Args:
        tracking: a directory for MLflow's local file store (`mlflow ui --backend-store-uri DIR` shows
            it), or any tracking URI (`sqlite:///mlflow.db`, `http://...`).
    """

    def __init__(self, tracking: str | Path, experiment: str = "cadence", run_name: str | None = None):
        super().__init__()
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError(
                "the mlflow logger needs MLflow. Fix: pip install 'cadence[mlflow]' (mlflow-skinny is enough)."
            ) from None
        text = str(tracking)
        if "://" not in text:
            # MLflow 3 keeps the file store behind this opt-in ("maintenance mode"); its sqlite store is the
            # other local backend, but creating one runs ~8 s of migrations and needs SQLAlchemy + Alembic.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            text = Path(text).resolve().as_uri()
        self.tracking_uri = text
        self._client = MlflowClient(tracking_uri=self.tracking_uri)
        self.experiment, self.run_name = experiment, run_name
        self.run_id: str | None = None

    def on_run_start(self, state: TrainState) -> None:
        if self._silence(state):
            return
        found = self._client.get_experiment_by_name(self.experiment)
        experiment_id = found.experiment_id if found else self._client.create_experiment(self.experiment)
        self.run_id = self._client.create_run(experiment_id, run_name=self.run_name).info.run_id
        self._written = len(state.history)
        params = {k: str(v) for k, v in _flat_params(state.config).items()}
        items = list(params.items())
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self._client.log_batch(self.run_id, params=[_param(k, v) for k, v in items[i : i + 100]])

    def write(self, record: dict) -> None:
        step = int(record["updates"])
        for key, value in _numbers(record).items():
            if key != "updates":
                self._client.log_metric(self.run_id, key, value, step=step)

    def finish(self, run) -> None:
        for key, value in _numbers({**run.val_metrics, **run.test_metrics}).items():
            self._client.log_metric(self.run_id, f"final_{key}", value, step=run.updates)
        self._client.set_tag(self.run_id, "stop_reason", run.stop_reason.value)
        status = "FINISHED" if run.stop_reason.value in ("budget", "converged", "early-stopped") else "FAILED"
        self._client.set_terminated(self.run_id, status=status)


def make_logger(name: str, run_dir: str | Path) -> Callback:
    """The logger `name` (csv | tensorboard | mlflow) writing under `run_dir`: metrics.csv, tensorboard/,
    mlruns/.

    Raises:
        ConfigError: an unknown name, or the logger's optional package is missing.
    """
    run_dir = Path(run_dir)
    if name == "csv":
        return CSVLogger(run_dir / "metrics.csv")
    if name == "tensorboard":
        return TensorBoardLogger(run_dir / "tensorboard")
    if name == "mlflow":
        return MLflowLogger(run_dir / "mlruns", run_name=run_dir.name)
    raise ConfigError(f"unknown logger {name!r}. Allowed: {', '.join(LOGGERS)}.")


def _numbers(record: dict) -> dict[str, float]:
    """The finite numbers of a record (NaN train_loss of an empty interval and lists are left out)."""
    return {
        k: float(v)
        for k, v in record.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def _flat_params(config) -> dict[str, Any]:
    """{"optimizer.lr": 0.01, ...}: the config's leaves under their dotted keys."""
    out: dict[str, Any] = {}

    def walk(tree: dict, prefix: str) -> None:
        for k, v in tree.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                out[prefix + k] = ",".join(map(str, v)) if isinstance(v, list) else v

    walk(config.model_dump(mode="json"), "")
    return out


def _param(key: str, value: str):
    from mlflow.entities import Param

    return Param(key, value[:6000])  # MLflow's limit on a param value
