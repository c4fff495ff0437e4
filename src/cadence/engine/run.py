"""`Run`: what `train` returns (config, history, stop reason, final metrics, the engine that ran) and how it
is saved: atomically, as checkpoints are (temp folder, fsync, rename)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from safetensors import SafetensorError
from torch import nn

from cadence.config import RunConfig
from cadence.engine.checkpoint import TEMP, _fsync, _write_file
from cadence.engine.stopping import StopReason
from cadence.errors import SaveError
from cadence.models import artefact

FILES = ("config.yaml", "history.jsonl", "history.csv", "summary.json", artefact.FILENAME)


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
    engine: str = "autograd"  # which engine applied the updates (engine/fast): autograd, c-kernel, batch
    engine_fallback: str | None = None  # why no faster engine ran, or None
    device: str = "cpu"  # where the model and data were (config.device resolved: auto -> cpu or cuda)
    threads: int = 1  # torch threads the run used (config.threads, or chosen from the work and the machine)
    processes: int = 1  # data-parallel processes that trained it together (torchrun's WORLD_SIZE)
    rank: int = 0  # this process's rank among them; rank 0 writes the run directory

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
            "engine": self.engine,
            "engine_fallback": self.engine_fallback,
            "device": self.device,
            "threads": self.threads,
            "processes": self.processes,
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
        Path(path).write_text(self._jsonl())

    def to_csv(self, path: str | Path) -> None:
        """Write the history as CSV, one row per evaluation (columns: the union of record keys)."""
        Path(path).write_text(self._csv(), newline="")

    def _jsonl(self) -> str:
        return "".join(json.dumps(record) + "\n" for record in self.history)

    def _csv(self) -> str:
        keys: list[str] = []
        for record in self.history:
            keys += [k for k in record if k not in keys]
        out = io.StringIO(newline="")
        writer = csv.DictWriter(out, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.history)
        return out.getvalue()

    def save(self, run_dir: str | Path) -> Path:
        """Write config.yaml, history.jsonl/.csv, summary.json and model.safetensors (the weights, with what
        `cadence.load` needs to predict on raw inputs) into `run_dir`, atomically.

        All five go into a temp folder beside `run_dir`, each fsynced; then renames swap it into place, so a
        reader sees the old folder or the new one, never a mix. The other entries of an existing `run_dir`
        (the run's checkpoints/, its loggers' files, ...) are carried into the new one.

        Raises:
            SaveError: `run_dir` is a file, or the write failed (full disk, read-only): the message names
                the path and the free space, and `run_dir` is left as it was.

        In a data-parallel job only rank 0 writes; the other processes (which hold the same run) return the path.
        """
        run_dir = Path(run_dir).absolute()
        if self.rank != 0:
            return run_dir
        if run_dir.exists() and not run_dir.is_dir():
            raise SaveError(f"cannot save the run to {run_dir}: it is a file. Fix: pass a folder path.")
        files = {
            "config.yaml": yaml.safe_dump(self.config.model_dump(mode="json"), sort_keys=False).encode(),
            "history.jsonl": self._jsonl().encode(),
            "history.csv": self._csv().encode(),
            "summary.json": (json.dumps(self.summary(), indent=2) + "\n").encode(),
        }
        parent = run_dir.parent
        tmp = parent / f"{TEMP}{run_dir.name}-{os.getpid()}"
        try:
            parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            for name, data in files.items():
                _write_file(tmp / name, data)
            artefact.save(tmp / artefact.FILENAME, self.model, self.config, self.inputs)
            _fsync(tmp / artefact.FILENAME)
            _fsync(tmp)
        except (OSError, SafetensorError) as err:  # safetensors reports a full disk as its own error
            shutil.rmtree(tmp, ignore_errors=True)
            weights = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
            raise _save_error(run_dir, err, weights + sum(len(d) for d in files.values())) from None
        self._swap(tmp, run_dir)
        return run_dir

    @staticmethod
    def _swap(tmp: Path, run_dir: Path) -> None:
        """Put the complete temp folder in place of `run_dir` by renames alone (no space needed)."""
        if run_dir.exists():
            for entry in run_dir.iterdir():
                if entry.name not in FILES:
                    os.replace(entry, tmp / entry.name)
            old = run_dir.parent / f"{TEMP}old-{run_dir.name}-{os.getpid()}"
            os.replace(run_dir, old)
            os.replace(tmp, run_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, run_dir)
        _fsync(run_dir.parent)


def _save_error(run_dir: Path, err: Exception, needed: int) -> SaveError:
    where = run_dir.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        free = f"{shutil.disk_usage(where).free:,} bytes free on {where}"
    except OSError:
        free = f"free space on {where} unknown"
    kept = f"{run_dir} is left as it was" if run_dir.exists() else f"nothing was written to {run_dir}"
    what = getattr(err, "strerror", None) or err
    filename = getattr(err, "filename", None)
    return SaveError(
        f"could not save the run to {run_dir}: {what}{f' ({filename})' if filename else ''}; {free}, about "
        f"{needed:,} bytes needed. {kept}. "
        "Fix: free some space, or pass another --out (run.save(path))."
    )
