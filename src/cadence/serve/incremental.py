"""Incremental start (`cadence stream --from RUN_DIR`): the model, label names and standardization of an
earlier run, from its model artefact (models/artefact.py), checked against the stream's declared schema.

A run without an artefact (stopped before its final save) gives its newest checkpoint's weights and config
only. Resuming a stream run directory itself is the learner's (`--out`, state.py), not this.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from cadence.config import RunConfig
from cadence.errors import ConfigError, DataError
from cadence.models import artefact


@dataclass(frozen=True)
class Start:
    """What the learner starts from: the config (the earlier run's model spec, its labels and, for a global
    standardization, its center/scale), the model with its weights, the schema, and a per-feature
    standardization (None: the config's center/scale apply)."""

    config: RunConfig
    model: nn.Module
    n_features: int
    n_classes: int | None
    center: np.ndarray | None = None
    scale: np.ndarray | None = None


def start_from(run_dir: str | Path, config: RunConfig, *, trust_code: bool = False) -> Start:
    """The model of `run_dir` and what the stream config becomes with it.

    Raises:
        ConfigError: the run's inputs do not match what `config.stream` declares (features, classes, task,
            label names, scaling), or its model cannot be rebuilt. CheckpointError / DataError: nothing to
            start from in `run_dir`.
    """
    run_dir = Path(run_dir)
    if not (run_dir / artefact.FILENAME).is_file():
        return _from_checkpoint(run_dir, config)
    trained = artefact.load(run_dir, trust_code=trust_code)
    sc, where = config.stream, f"--from {run_dir}"
    n_features = int(np.prod(trained.input_shape))
    if trained.image:
        raise ConfigError(
            f"{where} is a model of images ({trained.input_shape}); a stream carries flat feature rows. Fix: "
            "start from a model trained on tabular data, or without --from."
        )
    _same(where, "features per message", sc.n_features, n_features, "--features")
    _same(where, "task", sc.task, trained.task, "--task")
    n_classes = trained.n_classes if trained.task == "classification" else None
    _same(where, "classes", sc.n_classes, n_classes, "--classes")
    names = tuple(trained.labels or ())
    if sc.class_names and names and tuple(sc.class_names) != names:
        raise ConfigError(
            f"{where} names its classes {list(names)[:10]}, the stream config {list(sc.class_names)[:10]}. Fix: "
            "drop stream.class_names (the run's carry over), or start without --from."
        )
    overrides: dict = {
        "model": trained.meta["model"],
        "stream.n_features": n_features,
        "stream.task": trained.task,
        "stream.n_classes": n_classes,
        "stream.class_names": list(sc.class_names or names),
    }
    center = scale = None
    if trained.mean is not None:
        mean, std = trained.mean.reshape(-1), trained.std.reshape(-1)
        if sc.center != 0.0 or sc.scale != 1.0:
            raise ConfigError(
                f"{where} standardizes its inputs itself (as it was trained); stream.center/scale would scale "
                "them twice. Fix: drop --center/--scale when starting from a run."
            )
        if len(mean) == 1:  # a global standardization is the config's own center/scale
            overrides |= {"stream.center": float(mean[0]), "stream.scale": float(std[0])}
        else:
            center, scale = mean.astype(np.float32), std.astype(np.float32)
    return Start(config.with_overrides(overrides), trained.module.train(), n_features, n_classes, center, scale)


def _same(where: str, what: str, declared, found, flag: str) -> None:
    if declared is not None and found is not None and declared != found:
        raise ConfigError(
            f"{where} was trained with {found} {what}, the stream config declares {declared}. Fix: set {flag} "
            f"{found} (or drop it: the run's carries over), or start without --from."
        )


def _from_checkpoint(run_dir: Path, config: RunConfig) -> Start:
    """A run without a final artefact: its newest checkpoint's weights; the sizes are read off the weights."""
    from cadence.engine import checkpoint, resume

    try:
        ckpt = checkpoint.find(run_dir)
    except Exception as err:
        raise DataError(f"nothing to start from in {run_dir}: {err}") from None
    base = resume.start_config(run_dir)
    config = config.with_overrides({"model": base.model.model_dump(mode="json")})
    matrices = [v for k, v in ckpt.weights.items() if k.endswith("weight") and v.ndim == 2]
    n_features, n_out = int(matrices[0].shape[1]), int(matrices[-1].shape[0])
    n_classes = n_out if config.stream.task == "classification" else None
    _same(f"--from {run_dir}", "features per message", config.stream.n_features, n_features, "--features")
    _same(f"--from {run_dir}", "classes", config.stream.n_classes, n_classes, "--classes")
    model = resume.start_from(run_dir, config, (n_features,), n_out)
    return Start(config, model, n_features, n_classes)
