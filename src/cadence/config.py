"""Every setting of a run, checked in one place (pydantic). A leaf: imports only errors.

Python, YAML and the CLI all build these models, so all three get the same checks and messages.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cadence.errors import ConfigError


class Strategy(StrEnum):
    """Which samples feed each update: the one parameter that changes the training cadence."""

    FULL_BATCH = "full-batch"
    MINI_BATCH = "mini-batch"
    ONLINE = "online"
    STREAM = "stream"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Model):
    """Where the data comes from and how it is split and scaled."""

    name: str = Field("digits", description="digits | fashion-mnist | mnist | a .csv file | an image folder")
    data_dir: Path | None = None
    target: str | None = Field(None, description="target column of a CSV file")
    task: Literal["auto", "classification", "regression"] = "auto"
    image_size: tuple[int, int] = (28, 28)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    standardize: Literal["feature", "global", "none"] = "feature"
    limit: int | None = Field(None, gt=0, description="use only the first N training samples")

    @model_validator(mode="after")
    def _fractions(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction must be < 1; got {self.val_fraction} + {self.test_fraction}"
            )
        return self


class ModelConfig(_Model):
    """A built-in model by spec (`mlp:128,64`, `cnn`, `logreg`) or `package.module:factory`."""

    spec: str = "mlp:128,64"
    activation: Literal["relu", "tanh", "sigmoid", "gelu", "leaky_relu"] = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    batch_norm: bool = False


class StrategyConfig(_Model):
    """The training cadence. `batch_size` is used by mini-batch; `chunk_size` bounds memory per chunk."""

    name: Strategy = Strategy.MINI_BATCH
    batch_size: int = Field(64, gt=0)
    drop_last: bool = False
    chunk_size: int = Field(8192, gt=0, description="max samples per forward/backward (full-batch)")
    shuffle: bool = True


class OptimizerConfig(_Model):
    """Optimizer by name; hyperparameters keep torch.optim's names."""

    name: Literal["gd", "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0.0)
    momentum: float | None = Field(None, ge=0.0, lt=1.0)
    weight_decay: float | None = Field(None, ge=0.0, description="default: 0, or 0.01 for adamw")
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)
    alpha: float = Field(0.99, gt=0.0, lt=1.0, description="RMSprop smoothing constant (rho)")

    @model_validator(mode="after")
    def _betas(self) -> OptimizerConfig:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must each be in [0, 1); got {self.betas}")
        return self


class ScheduleConfig(_Model):
    """Learning-rate schedule, stepped once per update."""

    name: Literal["constant"] = "constant"


class StopConfig(_Model):
    """Budgets and stop checks. Every run ends with one StopReason."""

    max_epochs: int | None = Field(10, gt=0)
    max_updates: int | None = Field(None, gt=0)
    max_samples: int | None = Field(None, gt=0)
    max_seconds: float | None = Field(None, gt=0)
    tol: float | None = Field(None, ge=0.0, description="converged: relative improvement of smoothed loss < tol")
    convergence_patience: int = Field(3, gt=0)
    target_loss: float | None = None
    early_stopping_metric: str | None = Field(None, description="e.g. val_loss, val_accuracy")
    early_stopping_patience: int = Field(5, gt=0)
    early_stopping_min_delta: float = Field(0.0, ge=0.0)
    restore_best_weights: bool = True
    on_nonfinite: Literal["stop", "skip", "rollback"] = Field(
        "stop",
        description="a non-finite loss or gradient: stop (diverged), skip the update, or rollback to the "
        "last checkpoint with the lr scaled by rollback_lr_factor",
    )
    max_skips: int = Field(10, gt=0, description="non-finite updates in a row tolerated before diverged")
    rollback_lr_factor: float = Field(0.5, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _some_budget(self) -> StopConfig:
        if not any((self.max_epochs, self.max_updates, self.max_samples, self.max_seconds)):
            raise ValueError("set at least one budget: max_epochs, max_updates, max_samples or max_seconds")
        return self


class EvalConfig(_Model):
    """When to evaluate: every N updates (if set) and at every epoch end."""

    every_updates: int | None = Field(None, gt=0)
    batch_size: int = Field(4096, gt=0)


class RunConfig(_Model):
    """One training run: data, model, strategy, optimizer, schedule, stop rules."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    strategy: StrategyConfig = StrategyConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    stop: StopConfig = StopConfig()
    eval: EvalConfig = EvalConfig()
    seed: int = Field(0, ge=0)
    device: str = "cpu"
    threads: int | None = Field(None, gt=0, description="torch threads; default chosen per strategy")

    def with_overrides(self, overrides: dict[str, Any]) -> RunConfig:
        """Return a copy with dotted keys (`optimizer.lr`) replaced, checked like the original."""
        tree = self.model_dump(mode="python")
        for dotted, value in overrides.items():
            if value is None:
                continue
            node = tree
            *parents, leaf = str(dotted).split(".")
            for i, part in enumerate(parents):
                if not isinstance(node.get(part), dict):
                    where = ".".join(parents[: i + 1])
                    raise ConfigError(
                        f"unknown config key {dotted!r}: {where!r} is not a section. "
                        f"Allowed sections: {', '.join(k for k, v in tree.items() if isinstance(v, dict))}."
                    )
                node = node[part]
            node[leaf] = value
        return build_config(tree)


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(e["loc"][:-1])
            lines.append(f"unknown key '{where}' = {e.get('input')!r}; allowed keys here: {allowed}")
        else:
            lines.append(f"'{where}' = {e.get('input')!r}: {e['msg']}")
    return f"invalid configuration in {source}:\n  " + "\n  ".join(lines)


def _allowed_keys(loc: tuple) -> str:
    model: type[BaseModel] = RunConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            break
        model = field.annotation
    return ", ".join(model.model_fields)


def build_config(tree: dict[str, Any] | None = None, source: str = "config") -> RunConfig:
    """Build a RunConfig from a nested dict, raising ConfigError with every bad key named.

    Raises:
        ConfigError: an unknown key, a value out of range, or inconsistent settings.
    """
    try:
        return RunConfig.model_validate(tree or {})
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML config file into a checked RunConfig.

    Raises:
        ConfigError: the file is missing, not YAML, not a mapping, or holds a bad setting.
    """
    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist. Fix: pass the path of a YAML file.") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"config file {path} could not be read: {err}. Fix: pass a readable UTF-8 YAML file."
        ) from None
    if tree is not None and not isinstance(tree, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of sections (data, model, strategy, ...); "
            f"got a {type(tree).__name__}"
        )
    return build_config(tree, source=str(path))
