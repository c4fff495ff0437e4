"""train_ensemble(): K members trained by `train` with seeds seed, seed+1, ... on one data split, and the
ensemble that averages their predictions (models/ensemble.py), evaluated like a single run."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cadence.config import RunConfig
from cadence.data.datasets import Dataset
from cadence.engine.checkpoint import TEMP, _fsync, _write_file
from cadence.engine.evaluate import evaluate
from cadence.engine.events import Callback
from cadence.engine.loop import as_dataset, resolve_config, train
from cadence.engine.run import Run
from cadence.models.ensemble import Ensemble


@dataclass
class EnsembleRun:
    """The members' runs and the averaged model with its validation and test metrics."""

    members: list[Run]
    model: Ensemble
    val_metrics: dict
    test_metrics: dict

    def summary(self) -> dict:
        """{"ensemble": its metrics and member count, "members": each member's summary}."""
        return {
            "ensemble": {"members": len(self.members), **self.val_metrics, **self.test_metrics},
            "members": [r.summary() for r in self.members],
        }

    def save(self, run_dir: str | Path) -> Path:
        """Each member's run in member-<i>/ (each saved atomically, as a run), then ensemble.json, written to a
        temp file, fsynced and renamed into place: a crash leaves the old summary or the new, never half."""
        run_dir = Path(run_dir)
        for i, r in enumerate(self.members):
            r.save(run_dir / f"member-{i}")
        tmp = run_dir / f"{TEMP}ensemble.json-{os.getpid()}"
        _write_file(tmp, (json.dumps(self.summary(), indent=2) + "\n").encode())
        os.replace(tmp, run_dir / "ensemble.json")
        _fsync(run_dir)
        return run_dir

    @property
    def diverged(self) -> list[int]:
        """The members whose run stopped `diverged` (their last good weights are in the ensemble)."""
        return [i for i, r in enumerate(self.members) if r.stop_reason == "diverged"]


def train_ensemble(
    model: str | None = None,
    data: Dataset | tuple | str | None = None,
    config: RunConfig | dict | None = None,
    *,
    members: int | None = None,
    callbacks_for: Callable[[int], Sequence[Callback]] | None = None,
    **overrides,
) -> EnsembleRun:
    """Train `members` models (default `config.ensemble.members`) differing only in seed; average them.

    Arguments as `train(model, data, config, **overrides)`; `model` is a spec such as "mlp:128,64" (each
    member builds its own), or None for `config.model.spec`. Member i uses seed + i (its init, sample order
    and augmentation); every member sees the same data split, made once with the base seed, so the
    ensemble's test set is each member's test set.

    Raises:
        ConfigError, DataError: as `train`, before any member is trained.
    """
    if model is not None and not isinstance(model, str):  # the old order: (data, config, members)
        warnings.warn(
            "train_ensemble(data, config, members) is deprecated; the arguments are now "
            "(model, data, config, members=...) as for train(). Fix: pass data=... by keyword.",
            DeprecationWarning,
            stacklevel=2,
        )
        model, data, config, members = None, model, data, config if isinstance(config, int) else members
    if isinstance(model, str):
        overrides = {**overrides, "model.spec": model}
    if isinstance(data, str):
        overrides, data = {**overrides, "data.name": data}, None
    config = resolve_config(config, overrides, caller="train_ensemble()")
    k = members or config.ensemble.members
    base = config.with_overrides({"ensemble.members": 1})
    data = as_dataset(data, base)
    runs = [
        train(
            None,
            data,
            base.with_overrides({"seed": base.seed + i}),
            callbacks=callbacks_for(i) if callbacks_for else (),
        )
        for i in range(k)
    ]
    model = Ensemble([r.model for r in runs], data.task)
    batch = base.eval.batch_size
    val = evaluate(model, data.x_val, data.y_val, data.task, data.n_classes, batch)
    test = evaluate(model, data.x_test, data.y_test, data.task, data.n_classes, batch, prefix="test_")
    return EnsembleRun(runs, model, val, test)
