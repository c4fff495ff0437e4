"""The `tune:` settings: the search space (dotted RunConfig keys -> ranges or choices), the trial and time
budget, the objective (metric, folds) and the pruner. Checked by pydantic like RunConfig, and the whole space
is tried against the run config before the first trial, so a bad range fails at once, not in trial 17.

    tune:
      trials: 20
      metric: val_accuracy
      space:
        optimizer.name: [sgd, momentum, adam]           # a list: one of these
        optimizer.lr: {low: 1.0e-4, high: 1.0, log: true}
        strategy.batch_size: [32, 64, 128, 256]
        schedule.name: [constant, step]
        schedule.step_size: {low: 100, high: 2000, when: {schedule.name: [step]}}
        model.depth: {low: 1, high: 3}                  # hidden layers of an mlp: spec
        model.width: {low: 32, high: 512, log: true}    # one width per hidden layer
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cadence.config import RunConfig, build_config, read_yaml
from cadence.errors import ConfigError, clip

ARCHITECTURE = ("model.depth", "model.width")  # not RunConfig keys: they rebuild an mlp:W1,...,Wd spec
NOT_SEARCHED = ("seed",)  # each trial gets its own seed, recorded with it


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamSpec(_Model):
    """One searched setting: `choices`, or a range [low, high] (ints if both ends are ints; `log` for a
    log-uniform draw, `step` for a grid). `when` suggests it only if earlier settings took given values."""

    choices: list[Any] | None = None
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = Field(None, gt=0)
    when: dict[str, list[Any]] | None = None

    @model_validator(mode="before")
    @classmethod
    def _short(cls, value: Any) -> Any:
        return {"choices": value} if isinstance(value, list) else value

    @model_validator(mode="after")
    def _one_kind(self) -> ParamSpec:
        ranged = self.low is not None or self.high is not None
        if (self.choices is not None) == ranged:
            raise ValueError("give either choices (a list) or a range (low and high)")
        if self.choices is not None:
            if not self.choices:
                raise ValueError("choices is empty; give at least one value")
            if self.log or self.step is not None:
                raise ValueError("log and step apply to a range, not to choices")
            bad = [c for c in self.choices if not isinstance(c, str | int | float | bool) and c is not None]
            if bad:
                raise ValueError(f"choices must be plain values (text, numbers, true/false); got {bad}")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high")
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or not self.low < self.high:
            raise ValueError(f"a range needs finite low < high; got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0; got low={self.low}")
        if self.log and self.step is not None:
            raise ValueError("a range is either log or stepped, not both")
        return self

    @property
    def kind(self) -> str:
        """categorical, int or float."""
        if self.choices is not None:
            return "categorical"
        ints = isinstance(self.low, int) and isinstance(self.high, int)
        return "int" if ints and (self.step is None or float(self.step).is_integer()) else "float"

    def candidates(self) -> list[Any]:
        """The values `check_space` tries: every choice, or both ends of the range."""
        if self.choices is not None:
            return list(self.choices)
        return [self.low, self.high] if self.kind == "float" else [int(self.low), int(self.high)]


def _default_space() -> dict[str, ParamSpec]:
    return {
        "optimizer.name": ParamSpec(choices=["sgd", "momentum", "adam"]),
        "optimizer.lr": ParamSpec(low=1e-4, high=1.0, log=True),
        "strategy.batch_size": ParamSpec(choices=[32, 64, 128, 256]),
    }


class TuneConfig(_Model):
    """How to search: the space, the budget (trials and/or seconds), the objective and the pruner."""

    space: dict[str, ParamSpec] = Field(
        default_factory=_default_space, description="dotted RunConfig key -> choices or a range"
    )
    trials: int | None = Field(20, gt=0, description="trials in the study, over every worker together")
    seconds: float | None = Field(None, gt=0, description="stop starting trials after this many seconds")
    metric: str | None = Field(None, description="validation metric; default val_accuracy / val_r2")
    folds: int = Field(1, ge=1, description="1: the validation split; k >= 2: k-fold CV over train + val")
    pruner: Literal["median", "successive-halving", "none"] = "median"
    sampler: Literal["tpe", "random"] = "tpe"
    startup_trials: int = Field(5, ge=0, description="trials before TPE models the space and pruning starts")
    pruner_warmup: int | None = Field(
        None, ge=0, description="median: epochs a trial runs before it may be pruned; default a third of a fold's"
    )
    max_retries: int = Field(2, ge=0, description="re-runs (same parameters) of a trial whose worker died")
    heartbeat_interval: int = Field(30, gt=0, description="RDB storage: seconds between a trial's heartbeats")
    grace_period: int | None = Field(None, gt=0, description="RDB: a trial silent this long is failed (2x)")
    final: bool = Field(True, description="re-run the best config once at the end and report its test metrics")
    refit: bool = Field(
        True, description="the final run trains on train + validation (scikit-learn's refit); false: train only"
    )

    @field_validator("space")
    @classmethod
    def _keys(cls, space: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        if not space:
            raise ValueError("space is empty; give at least one setting to search, e.g. optimizer.lr")
        seen: list[str] = []
        for key, spec in space.items():
            if key in NOT_SEARCHED:
                raise ValueError(f"{key!r} cannot be searched: every trial gets its own seed, recorded with it")
            for other in spec.when or {}:
                if other not in seen:
                    raise ValueError(
                        f"{key!r} depends on {other!r} (when), which must be a searched setting listed before it"
                    )
            seen.append(key)
        if "model.width" in space and space["model.width"].kind == "float":
            raise ValueError("model.width is a number of units: give integer low/high or integer choices")
        if "model.depth" in space and space["model.depth"].kind == "float":
            raise ValueError("model.depth is a number of layers: give integer low/high or integer choices")
        return space

    @model_validator(mode="after")
    def _budget(self) -> TuneConfig:
        if self.trials is None and self.seconds is None:
            raise ValueError("set a budget: trials, seconds, or both")
        return self

    @property
    def grace(self) -> int:
        return self.grace_period or 2 * self.heartbeat_interval


def mlp_widths(config: RunConfig) -> list[int]:
    """The hidden widths of an `mlp:W1,W2,...` spec.

    Raises:
        ConfigError: the spec is not an mlp (model.depth/model.width search its widths).
    """
    spec = config.model.spec
    name, _, rest = spec.partition(":")
    if name.strip() != "mlp":
        raise ConfigError(
            f"model.depth / model.width search the hidden layers of an mlp, but model.spec is {spec!r}. "
            "Fix: set model.spec to an mlp (e.g. mlp:128,64) or drop those keys from the space."
        )
    try:
        return [int(w) for w in rest.split(",") if w.strip()] if rest.strip() else []
    except ValueError:
        raise ConfigError(f"model.spec {spec!r} is not mlp:W1,W2,... with integer widths.") from None


def apply_params(base: RunConfig, params: dict[str, Any], seed: int | None = None) -> RunConfig:
    """`base` with a trial's parameters (and seed) set, checked by pydantic.

    `model.depth` and `model.width.<i>` (1-based layer) rebuild the mlp spec; missing layers keep the base
    spec's width (its last one past its depth).

    Raises:
        ConfigError: a value the run config rejects.
    """
    overrides = {k: v for k, v in params.items() if not k.startswith(ARCHITECTURE)}
    if any(k.startswith(ARCHITECTURE) for k in params):
        widths = mlp_widths(base)
        depth = int(params.get("model.depth", len(widths)))
        fallback = widths[-1] if widths else 64
        layers = [
            int(params.get(f"model.width.{i + 1}", widths[i] if i < len(widths) else fallback))
            for i in range(depth)
        ]
        overrides["model.spec"] = "mlp:" + ",".join(str(w) for w in layers)
    if seed is not None:
        overrides["seed"] = seed
    return base.with_overrides(overrides)


def suggest(trial, space: dict[str, ParamSpec], base: RunConfig) -> dict[str, Any]:
    """Ask an Optuna trial for one value per setting, in the space's order (define-by-run).

    A setting with `when` is asked only if every named earlier setting took one of the listed values;
    `model.width` is asked once per hidden layer (`model.width.1`, ...), after `model.depth`.
    """
    params: dict[str, Any] = {}
    for key, spec in space.items():
        if spec.when and not all(params.get(k) in values for k, values in spec.when.items()):
            continue
        if key == "model.width":
            depth = int(params.get("model.depth", len(mlp_widths(base))))
            for i in range(depth):
                params[f"model.width.{i + 1}"] = _ask(trial, f"model.width.{i + 1}", spec)
            continue
        params[key] = _ask(trial, key, spec)
    return params


def _ask(trial, name: str, spec: ParamSpec) -> Any:
    if spec.kind == "categorical":
        return trial.suggest_categorical(name, spec.choices)
    if spec.kind == "int":
        step = int(spec.step) if spec.step else 1
        return trial.suggest_int(name, int(spec.low), int(spec.high), step=step, log=spec.log)
    return trial.suggest_float(name, float(spec.low), float(spec.high), step=spec.step, log=spec.log)


def check_space(base: RunConfig, settings: TuneConfig) -> None:
    """Build a config from every candidate value of every setting (with the settings that depend on it), so
    a key the run config does not have, or a value it rejects, is an error before the first trial.

    Raises:
        ConfigError: naming the setting, the value and the run config's own message.
    """
    space = settings.space
    first = {k: spec.candidates()[0] for k, spec in space.items()}
    if any(k in ARCHITECTURE for k in space):
        mlp_widths(base)
    for key, spec in space.items():
        for value in spec.candidates():
            params = {key: value}
            for other, dep in space.items():  # settings that apply given this value, at their first value
                if (
                    other != key
                    and dep.when
                    and all((params.get(k, first.get(k)) in vals) for k, vals in dep.when.items())
                ):
                    params[other] = first[other]
            params = {_param_name(k): v for k, v in params.items()}
            try:
                apply_params(base, params)
            except ConfigError as err:
                raise ConfigError(
                    f"tune.space: {key} = {value!r} does not make a valid run config: {err}"
                ) from None


def _param_name(key: str) -> str:
    return "model.width.1" if key == "model.width" else key


def _format(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in ("tune", *e["loc"]))
        if e["type"] == "extra_forbidden":
            allowed = (
                ", ".join(ParamSpec.model_fields) if "space" in e["loc"] else ", ".join(TuneConfig.model_fields)
            )
            lines.append(f"unknown key '{where}'; allowed keys here: {allowed}")
        else:
            lines.append(f"'{where}' = {clip(e.get('input'))}: {e['msg']}")
    return f"invalid tune settings in {source}:\n  " + "\n  ".join(lines)


def build_tune_config(tree: dict[str, Any] | None = None, source: str = "tune settings") -> TuneConfig:
    """A checked TuneConfig from a dict (keys as in the YAML `tune:` section).

    Raises:
        ConfigError: an unknown key, an empty or malformed space, or no budget.
    """
    try:
        return TuneConfig.model_validate(tree or {})
    except ValidationError as err:
        raise ConfigError(_format(err, source)) from None


def load_tune_file(path: str | Path) -> tuple[RunConfig, TuneConfig]:
    """Read a YAML file of RunConfig sections plus a `tune:` section.

    Raises:
        ConfigError: a missing or malformed file, or a bad setting in either part.
    """
    path = Path(path)
    tree = read_yaml(path) or {}  # alias bombs and unreadable files refused as for `cadence train -c`
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections; got a {type(tree).__name__}")
    settings = tree.pop("tune", None) or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"'tune' in {path} must be a mapping (space, trials, ...); got {clip(settings)}")
    return build_config(tree, source=str(path)), build_tune_config(settings, source=str(path))


__all__ = [
    "ParamSpec",
    "TuneConfig",
    "apply_params",
    "build_tune_config",
    "check_space",
    "load_tune_file",
    "mlp_widths",
    "suggest",
]
