"""The `compare:` settings: which grid to run (strategies x optimizers x schedules x seeds), under which
budget, with how many workers. Checked by pydantic like RunConfig; the rest of the YAML file is a RunConfig.

Entries may be written short (`mini-batch:32`, `adam:0.001`, `constant`) or as mappings
(`{name: adam, lr: 0.001}`); both build the same models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cadence.config import OptimizerConfig, RunConfig, ScheduleConfig, Strategy, build_config, read_yaml
from cadence.errors import ConfigError, clip

BUDGET_MODES = ("epochs", "samples", "updates", "seconds")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # no inf/NaN budgets or goals


class StrategyChoice(_Model):
    """One strategy of the grid; `batch_size` only for mini-batch (None: the run config's batch size)."""

    name: Strategy
    batch_size: int | None = Field(None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _short(cls, value: Any) -> Any:
        if isinstance(value, str):
            name, _, batch = value.partition(":")
            if batch and name.strip() != Strategy.MINI_BATCH:
                raise ValueError(f"only mini-batch takes a batch size (mini-batch:32); got {value!r}")
            if batch and not batch.strip().isdigit():
                raise ValueError(f"batch size must be a positive integer as in mini-batch:32; got {value!r}")
            return {"name": name.strip(), **({"batch_size": int(batch)} if batch else {})}
        return value

    @model_validator(mode="after")
    def _not_stream(self) -> StrategyChoice:
        if self.name == Strategy.STREAM:
            raise ValueError(
                "stream reads a live Stream and cannot be compared on an in-memory data set; "
                "use full-batch, mini-batch or online"
            )
        if self.batch_size is not None and self.name != Strategy.MINI_BATCH:
            raise ValueError(f"only mini-batch takes a batch size; got batch_size for {self.name.value}")
        return self


def _optimizer_short(value: Any) -> Any:
    if isinstance(value, str):
        name, _, lr = value.partition(":")
        if not lr:
            return {"name": name.strip()}
        try:
            return {"name": name.strip(), "lr": float(lr)}
        except ValueError:
            raise ValueError(f"write an optimizer as name or name:lr (adam:0.001); got {value!r}") from None
    return value


def _schedule_short(value: Any) -> Any:
    return {"name": value.strip()} if isinstance(value, str) else value


class BudgetConfig(_Model):
    """Exactly one budget, the same for every run: the quantity the comparison holds equal."""

    epochs: int | None = Field(None, gt=0)
    samples: int | None = Field(None, gt=0)
    updates: int | None = Field(None, gt=0)
    seconds: float | None = Field(None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _short(cls, value: Any) -> Any:
        if isinstance(value, str):  # "samples=12570"
            mode, sep, amount = value.partition("=")
            if not sep:
                raise ValueError(f"write a budget as mode=amount, e.g. samples=12570; got {value!r}")
            return {mode.strip(): amount.strip()}
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> BudgetConfig:
        given = [m for m in BUDGET_MODES if getattr(self, m) is not None]
        if len(given) != 1:
            raise ValueError(f"set exactly one of {', '.join(BUDGET_MODES)}; got {given or 'none'}")
        return self

    @property
    def mode(self) -> str:
        return next(m for m in BUDGET_MODES if getattr(self, m) is not None)

    @property
    def amount(self) -> float:
        return getattr(self, self.mode)

    def describe(self) -> str:
        amount = f"{self.amount:g}" if self.mode == "seconds" else f"{int(self.amount):,}"
        return f"equal {self.mode} ({amount} per run)"


class CompareConfig(_Model):
    """The grid, the budget every run gets, the goal runs race to, and the worker count."""

    strategies: list[StrategyChoice] = Field(
        default_factory=lambda: [StrategyChoice(name=s) for s in ("full-batch", "mini-batch", "online")]
    )
    optimizers: list[OptimizerConfig] = Field(
        default_factory=lambda: [OptimizerConfig(name=o) for o in ("sgd", "momentum", "adam")],
        description="entries without an lr get the default lr for each strategy (compare/grid.py)",
    )
    schedules: list[ScheduleConfig] = Field(default_factory=lambda: [ScheduleConfig()])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="a count n (seeds 0..n-1) or a list")
    budget: BudgetConfig = Field(default_factory=lambda: BudgetConfig(epochs=5))
    goal: float | None = Field(None, description="validation value to reach; default: chosen from the results")
    goal_metric: str | None = Field(None, description="default val_accuracy (classification), val_r2 (regression)")
    evals_per_run: int = Field(20, gt=0, description="evaluations spread over each run (plus each epoch end)")
    workers: int | None = Field(None, gt=0, description="parallel worker processes; default: the usable cores")
    tune_lr: bool = Field(False, description="run an lr range test per configuration first and train at its lr")

    @field_validator("optimizers", mode="before")
    @classmethod
    def _optimizer_entries(cls, value: Any) -> Any:
        return [_optimizer_short(v) for v in value] if isinstance(value, list) else value

    @field_validator("schedules", mode="before")
    @classmethod
    def _schedule_entries(cls, value: Any) -> Any:
        return [_schedule_short(v) for v in value] if isinstance(value, list) else value

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_count(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise ValueError(f"the number of seeds must be >= 1; got {value}")
            return list(range(value))
        return value

    @model_validator(mode="after")
    def _grid(self) -> CompareConfig:
        for field in ("strategies", "optimizers", "schedules", "seeds"):
            values = getattr(self, field)
            if not values:
                raise ValueError(f"{field} is empty; give at least one")
            keys = [v.model_dump_json() if isinstance(v, BaseModel) else v for v in values]
            if len(set(keys)) != len(keys):
                raise ValueError(f"{field} lists the same entry twice: {values}")
        if any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be >= 0; got {self.seeds}")
        if self.tune_lr:
            fixed = [o.name for o in self.optimizers if "lr" in o.model_fields_set]
            if fixed:
                raise ValueError(
                    f"tune_lr finds each configuration's lr, but optimizers {fixed} give one. "
                    "Fix: drop their lr (write adam, not adam:0.001), or drop tune_lr."
                )
        return self

    def dump(self) -> dict:
        """JSON-ready settings; optimizers keep only what was written, so a default lr stays a default."""
        tree = self.model_dump(mode="json", exclude_none=True)
        tree["optimizers"] = [o.model_dump(mode="json", exclude_unset=True) for o in self.optimizers]
        tree["strategies"] = [s.model_dump(mode="json", exclude_none=True) for s in self.strategies]
        return tree


def _format(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in ("compare", *e["loc"]))
        if e["type"] == "extra_forbidden":
            lines.append(
                f"unknown key '{where}'; allowed keys in compare: {', '.join(CompareConfig.model_fields)}"
            )
        else:
            lines.append(f"'{where}' = {clip(e.get('input'))}: {e['msg']}")
    return f"invalid compare settings in {source}:\n  " + "\n  ".join(lines)


def build_compare_config(tree: dict[str, Any] | None = None, source: str = "compare settings") -> CompareConfig:
    """A checked CompareConfig from a dict (keys as in the YAML `compare:` section).

    Raises:
        ConfigError: an unknown key, an empty or repeated grid entry, or a bad budget.
    """
    try:
        return CompareConfig.model_validate(tree or {})
    except ValidationError as err:
        raise ConfigError(_format(err, source)) from None


def load_compare_file(path: str | Path) -> tuple[RunConfig, CompareConfig]:
    """Read a YAML file holding RunConfig sections plus an optional `compare:` section.

    Raises:
        ConfigError: a missing or malformed file, or a bad setting in either part.
    """
    path = Path(path)
    tree = read_yaml(path) or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections; got a {type(tree).__name__}")
    compare = tree.pop("compare", None) or {}
    if not isinstance(compare, dict):
        raise ConfigError(
            f"'compare' in {path} must be a mapping (strategies, optimizers, ...); got {clip(compare)}"
        )
    _refuse_per_run_keys(tree, path)
    return build_config(tree, source=str(path)), build_compare_config(compare, source=str(path))


# Settings the grid sets for every run, so a value in the run sections could not be honoured.
PER_RUN = {
    ("stop", "max_epochs"): "compare: {budget: {epochs: 5}}",
    ("stop", "max_updates"): "compare: {budget: {updates: 1000}}",
    ("stop", "max_samples"): "compare: {budget: {samples: 12570}}",
    ("stop", "max_seconds"): "compare: {budget: {seconds: 10}}",
    ("strategy", "name"): "compare: {strategies: [full-batch, mini-batch:64, online]}",
    ("optimizer", None): "compare: {optimizers: [sgd, {name: adam, lr: 0.001, weight_decay: 0.01}]}",
    ("schedule", None): "compare: {schedules: [constant]}",
    ("seed", None): "compare: {seeds: 3}",
}


def _refuse_per_run_keys(tree: dict, path: Path) -> None:
    for (section, key), fix in PER_RUN.items():
        value = tree.get(section)
        present = section in tree if key is None else isinstance(value, dict) and key in value
        if present:
            where = section if key is None else f"{section}.{key}"
            raise ConfigError(
                f"{path} sets {where}, but a comparison sets it for every run from the compare: section. "
                f"Fix: remove {where} and write e.g. {fix}."
            )


def dump_compare_file(config: dict, compare: dict) -> str:
    """The YAML `cadence compare -c FILE` reads back into the same comparison.

    Args:
        config: `RunConfig.model_dump(mode="json")`; what the grid sets per run is dropped (PER_RUN).
        compare: `CompareConfig.dump()`.
    """
    tree = {k: v for k, v in config.items() if (k, None) not in PER_RUN}
    for section in ("stop", "strategy"):
        tree[section] = {k: v for k, v in config[section].items() if (section, k) not in PER_RUN}
    return yaml.safe_dump({**tree, "compare": compare}, sort_keys=False)


__all__ = [
    "BUDGET_MODES",
    "BudgetConfig",
    "CompareConfig",
    "StrategyChoice",
    "build_compare_config",
    "dump_compare_file",
    "load_compare_file",
]
