"""`Run`: what `train` returns — config, history, stop reason, final metrics — and how it is saved."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from torch import nn

from cadence.config import RunConfig
from cadence.engine.stopping import StopReason
from cadence.models import artefact


@dataclass
class Run:
    """The result of one training run."""

    config: RunConfig
    model: nn.Module
    history: list[dict]
    stop_reason: StopReason
    updates: int
    samples_seen: int
    epochs: float
    seconds: float
    train_seconds: float
    eval_seconds: float
    test_metrics: dict = field(default_factory=dict)
    val_metrics: dict = field(default_factory=dict)
    confusion_matrix: list[list[int]] | None = None
    data_seconds: float | None = None
    restored_best: bool = False
    message: str = ""
    skipped_updates: int = 0  # non-finite updates not applied (stop.on_nonfinite skip/rollback)
    inputs: dict | None = None  # what the saved model needs to read raw inputs (models/artefact.py)

    def __repr__(self) -> str:  # the dataclass repr holds the config, model and history: 280 KB after 1k epochs
        name = next((k for k in ("test_accuracy", "test_r2") if k in self.test_metrics), None)
        shown = f", {name}={self.test_metrics[name]:.4f}" if name else ""
        c = self.config
        return (
            f"Run({c.strategy.name.value} + {c.optimizer.name}, lr={c.optimizer.lr:g}, "
            f"stop_reason={self.stop_reason.value!r}, updates={self.updates:,}, epochs={self.epochs:g}{shown}, "
            f"history={len(self.history)} records)"
        )

    @property
    def batch_size(self) -> int:
        """Samples per batch: 1 online, the whole training set full-batch, `strategy.batch_size` mini-batch
        (an update sums `strategy.accumulate` such batches)."""
        strategy = self.config.strategy
        if strategy.name == "online":
            return 1
        if strategy.name == "full-batch":
            return round(self.samples_seen / self.epochs) if self.epochs else 0  # n_train
        return strategy.batch_size

    def to_pandas(self):
        """The history as a pandas DataFrame, one row per evaluation (needs pandas: `pip install pandas`)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Run.to_pandas() needs pandas. Fix: pip install 'cadence[pandas]'.") from None
        return pd.DataFrame.from_records(self.history)

    @property
    def samples_per_s(self) -> float:
        """Training throughput: samples over the seconds spent in updates alone (evaluation excluded)."""
        return self.samples_seen / self.train_seconds if self.train_seconds > 0 else 0.0

    def summary(self) -> dict:
        """Flat JSON-ready summary: stop reason, counters, timings, throughput, final metrics."""
        out = {
            "stop_reason": self.stop_reason.value,
            "strategy": self.config.strategy.name.value,
            "optimizer": self.config.optimizer.name,
            "lr": self.config.optimizer.lr,
            "batch_size": self.batch_size,
            "seed": self.config.seed,
            "updates": self.updates,
            "samples_seen": self.samples_seen,
            "epochs": round(self.epochs, 6),
            "seconds": round(self.seconds, 4),
            "train_seconds": round(self.train_seconds, 4),
            "eval_seconds": round(self.eval_seconds, 4),
            "data_seconds": None if self.data_seconds is None else round(self.data_seconds, 4),
            "samples_per_s": round(self.samples_per_s, 1),
            "skipped_updates": self.skipped_updates,
            **{k: v for k, v in self.val_metrics.items()},
            **{k: v for k, v in self.test_metrics.items()},
        }
        if self.confusion_matrix is not None:
            out["test_confusion_matrix"] = self.confusion_matrix
        if self.message:
            out["message"] = self.message
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}

    def to_jsonl(self, path: str | Path) -> None:
        """Write the history, one JSON object per evaluation."""
        with open(path, "w") as f:
            for record in self.history:
                f.write(json.dumps(record) + "\n")

    def to_csv(self, path: str | Path) -> None:
        """Write the history as CSV, one row per evaluation (columns: the union of record keys)."""
        keys: list[str] = []
        for record in self.history:
            keys += [k for k in record if k not in keys]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.history)

    def save(self, run_dir: str | Path) -> Path:
        """Write config.yaml, history.jsonl/.csv, summary.json and model.safetensors (the weights, with what
        `cadence.load` needs to predict on raw inputs) into `run_dir`."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(self.config.model_dump(mode="json"), sort_keys=False))
        self.to_jsonl(run_dir / "history.jsonl")
        self.to_csv(run_dir / "history.csv")
        (run_dir / "summary.json").write_text(json.dumps(self.summary(), indent=2) + "\n")
        artefact.save(run_dir / artefact.FILENAME, self.model, self.config, self.inputs)
        return run_dir
