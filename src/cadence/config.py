"""Every setting of a run, checked in one place (pydantic). A leaf: imports only errors.

Python, YAML and the CLI all build these models, so all three get the same checks and messages.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cadence.errors import ConfigError, clip, clip_text


class Strategy(StrEnum):
    """Which samples feed each update: the one parameter that changes the training cadence."""

    FULL_BATCH = "full-batch"
    MINI_BATCH = "mini-batch"
    ONLINE = "online"
    STREAM = "stream"


# Default lr per strategy and optimizer, for standardized inputs; `optimizer.lr` unset (or null) means
# this table's value, and `cadence compare` uses it for entries without an lr (comparison/grid.py).
# mini-batch: measured by bench/defaults.py over six data sets (iris, digits, diabetes, make_classification,
# make_moons, Fashion-MNIST) with the default early stopping: adam 1e-3 is within 1 point of scikit-learn's
# MLP on all six, 3e-3 fell 1.4 points behind on digits. The other values: a 3x-spaced sweep on digits
# (mlp:128,64, seeds 0-1) at 20 epochs (full-batch), 5 (mini-batch 64) and 2 (online), the best value, one
# step lower where the best was the largest tried or next to a diverging one; online and full-batch adam
# checked again with the default early stopping (bench/defaults.py --set strategy.name=...).
DEFAULT_LRS: dict[Strategy, dict[str, float]] = {
    Strategy.FULL_BATCH: {
        "gd": 0.5,
        "sgd": 0.5,
        "momentum": 0.1,
        "nesterov": 0.1,
        "adagrad": 0.03,
        "rmsprop": 0.003,
        "adam": 0.01,
        "adamw": 0.01,
    },
    Strategy.MINI_BATCH: {
        "gd": 0.3,
        "sgd": 0.3,
        "momentum": 0.03,
        "nesterov": 0.03,
        "adagrad": 0.03,
        "rmsprop": 0.001,
        "adam": 0.001,
        "adamw": 0.001,
    },
    Strategy.ONLINE: {
        "gd": 0.01,
        "sgd": 0.01,
        "momentum": 0.001,
        "nesterov": 0.001,
        "adagrad": 0.01,
        "rmsprop": 0.0003,
        "adam": 0.0003,
        "adamw": 0.0003,
    },
}
DEFAULT_LRS[Strategy.STREAM] = DEFAULT_LRS[Strategy.ONLINE]  # stream is online learning


class _Model(BaseModel):
    # allow_inf_nan=False: an inf or NaN float (lr=inf, tol=nan, ...) is refused in every section.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads true as 1 (`lr: true` trained with lr 1.0). Strict mode would also refuse
        # the strings YAML 1.1 makes of `1e-3`, so only booleans are refused.
        items = value if isinstance(value, tuple | list) else (value,)
        if any(isinstance(v, bool) for v in items) and _numeric(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expected a number, got the boolean {value!r}. Fix: write a number (e.g. 1.0)")
        return value


def _numeric(annotation: Any) -> bool:
    """True for int/float fields and tuples of them (optional or not); never for bool fields."""
    if annotation in (int, float):
        return True
    args = [a for a in get_args(annotation) if a is not type(None) and a is not Ellipsis]
    return bool(args) and bool not in args and all(_numeric(a) for a in args)


class DataConfig(_Model):
    """Where the data comes from and how it is split and scaled."""

    name: str = Field("digits", description="digits | fashion-mnist | mnist | a .csv file | an image folder")
    data_dir: Path | None = Field(None, description="where the fashion-mnist/mnist IDX files are")
    target: str | None = Field(None, description="target column of a CSV file")
    task: Literal["auto", "classification", "regression"] = Field(
        "auto", description="auto: integer targets are classes, float targets regression"
    )
    image_size: tuple[int, int] = Field((28, 28), description="(height, width) images of a folder are resized to")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of the samples held out for validation")
    test_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="share held out for the test (ignored where the data set has its own)"
    )
    standardize: Literal["auto", "feature", "global", "none"] = Field(
        "auto", description="auto: one mean/std over all pixels for images, per feature for tabular data"
    )
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

    spec: str = Field("mlp:128,64", description="mlp:W1,W2,... | logreg | cnn | package.module:factory")
    activation: Literal["relu", "tanh", "sigmoid", "gelu", "leaky_relu"] = Field(
        "relu", description="hidden-layer activation of built models"
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability after each hidden layer")
    batch_norm: bool = Field(False, description="batch normalization after each hidden layer")
    init: Literal["default", "xavier", "glorot", "kaiming", "he", "normal", "orthogonal"] = Field(
        "default", description="weight init of built models (models/init.py); default keeps torch's"
    )
    init_std: float = Field(0.01, gt=0.0, description="standard deviation of init='normal'")

    @field_validator("init")
    @classmethod
    def _one_spelling(cls, v: str) -> str:
        return {"glorot": "xavier", "he": "kaiming"}.get(v, v)


class StrategyConfig(_Model):
    """The training cadence. `batch_size` is used by mini-batch; `chunk_size` bounds memory per chunk."""

    name: Strategy = Field(Strategy.MINI_BATCH, description="which samples feed each update")
    batch_size: int = Field(64, gt=0, description="samples per mini-batch update (mini-batch only)")
    drop_last: bool = Field(False, description="drop the last, smaller batch of each epoch")
    chunk_size: int = Field(8192, gt=0, description="max samples per forward/backward (full-batch)")
    shuffle: bool = Field(True, description="reshuffle the training samples every epoch")
    accumulate: int = Field(1, gt=0, description="micro-batches (of batch_size) summed into one update")

    @model_validator(mode="after")
    def _accumulate(self) -> StrategyConfig:
        if self.accumulate > 1 and self.name == Strategy.FULL_BATCH:
            raise ValueError(
                f"accumulate={self.accumulate} has no effect with full-batch (one update already holds every "
                "sample). Fix: set accumulate=1, or use mini-batch/online."
            )
        return self


class OptimizerConfig(_Model):
    """Optimizer by name; hyperparameters keep torch.optim's names."""

    name: Literal["gd", "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"] = Field(
        "adam", description="torch.optim optimizer by name"
    )
    lr: float | None = Field(
        None, gt=0.0, description="learning rate; default: per strategy and optimizer (adam mini-batch 1e-3)"
    )
    momentum: float | None = Field(
        None, ge=0.0, lt=1.0, description="sgd/rmsprop: 0 unless set; momentum/nesterov: 0.9 unless set"
    )
    weight_decay: float | None = Field(None, ge=0.0, description="default: 0, or 0.01 for adamw")
    betas: tuple[float, float] = Field((0.9, 0.999), description="adam/adamw: decay rates of the moments")
    eps: float = Field(1e-8, gt=0.0, description="adagrad/rmsprop/adam: added to the denominator")
    alpha: float = Field(0.99, gt=0.0, lt=1.0, description="RMSprop smoothing constant (rho)")
    clip_norm: float | None = Field(None, gt=0.0, description="clip the global gradient L2 norm to this")
    clip_value: float | None = Field(None, gt=0.0, description="clip each gradient entry to [-v, v]")

    @model_validator(mode="after")
    def _betas(self) -> OptimizerConfig:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must each be in [0, 1); got {self.betas}")
        return self


class PlateauConfig(_Model):
    """Reduce-on-plateau cuts, as torch's ReduceLROnPlateau; patience counts evaluations."""

    metric: str = Field("val_loss", description="a record key: val_loss, val_accuracy, ... or train_loss")
    mode: Literal["auto", "min", "max"] = Field("auto", description="auto: min for losses/errors, else max")
    factor: float = Field(0.1, gt=0.0, lt=1.0, description="lr multiplier per cut")
    patience: int = Field(10, ge=0, description="evaluations without improvement before a cut")
    threshold: float = Field(1e-4, ge=0.0, description="least change that counts as an improvement")
    threshold_mode: Literal["rel", "abs"] = Field("rel", description="threshold relative to the best, or absolute")
    cooldown: int = Field(0, ge=0, description="evaluations after a cut before counting again")
    min_lr: float = Field(0.0, ge=0.0, description="the cuts never take the lr below this")


class ScheduleConfig(_Model):
    """Learning-rate schedule lr_t = lr0 * warmup/time factor(t) * plateau factor, stepped once per update.

    `per: epoch` evaluates the time factor at the epoch index instead of the update index. `plateau` adds
    reduce-on-plateau cuts to any time schedule; name `plateau` is the constant schedule with cuts.
    """

    name: Literal["constant", "exponential", "inverse-time", "step", "cosine", "cosine-restarts", "plateau"] = (
        Field("constant", description="learning-rate schedule by name")
    )
    per: Literal["update", "epoch"] = Field("update", description="the schedule's time unit")
    gamma: float | None = Field(None, gt=0.0, description="exponential/step: decay factor; inverse-time: power")
    beta: float | None = Field(None, gt=0.0, description="inverse-time: lr0 / (1 + beta*t)**gamma")
    step_size: int | None = Field(None, gt=0, description="step: multiply by gamma every step_size steps")
    T_max: int | None = Field(None, gt=0, description="cosine: steps to anneal over; default: the budget")
    eta_min: float = Field(0.0, ge=0.0, description="cosine: the lowest lr")
    T_0: int | None = Field(None, gt=0, description="cosine-restarts: length of the first cycle")
    T_mult: int = Field(1, ge=1, description="cosine-restarts: each cycle is T_mult times the previous")
    warmup_updates: int = Field(0, ge=0, description="linear warm-up over this many updates, then the schedule")
    plateau: PlateauConfig | None = Field(None, description="reduce-on-plateau cuts on top of the schedule")

    @model_validator(mode="after")
    def _required(self) -> ScheduleConfig:
        needs = {"exponential": ("gamma", 0.999), "inverse-time": ("beta", 0.01), "step": ("step_size", 1000)}
        field, example = needs.get(self.name, (None, None))
        if field and getattr(self, field) is None:
            raise ValueError(
                f"schedule {self.name!r} needs {field} (e.g. {field}={example}). Fix: set schedule.{field}."
            )
        if self.name == "cosine-restarts" and self.T_0 is None:
            raise ValueError(
                "schedule 'cosine-restarts' needs T_0, the first cycle length. Fix: set schedule.T_0."
            )
        if self.gamma is not None and self.gamma >= 1.0 and self.name in ("exponential", "step"):
            raise ValueError(f"schedule {self.name!r} decays with gamma < 1; got gamma={self.gamma}.")
        return self


class StopConfig(_Model):
    """Budgets and stop checks. Every run ends with one StopReason."""

    # Defaults measured by bench/defaults.py: early stopping on val_loss (patience 10, best weights restored)
    # ends most runs; 200 epochs and 10 minutes cap the rest.
    max_epochs: int | None = Field(200, gt=0, description="budget: passes over the training set")
    max_updates: int | None = Field(None, gt=0, description="budget: optimizer steps")
    max_samples: int | None = Field(None, gt=0, description="budget: training samples seen")
    max_seconds: float | None = Field(600.0, gt=0, description="budget: wall-clock seconds")
    tol: float | None = Field(None, ge=0.0, description="converged: relative improvement of smoothed loss < tol")
    convergence_patience: int = Field(3, gt=0, description="evaluations in a row below tol before converged")
    target_loss: float | None = Field(None, description="converged once the training loss is at or below this")
    early_stopping_metric: str | None = Field(
        "val_loss", description="e.g. val_loss, val_accuracy; none: no early stopping"
    )
    early_stopping_patience: int = Field(10, gt=0, description="evaluations without improvement before stopping")
    early_stopping_min_delta: float = Field(0.0, ge=0.0, description="least change that counts as an improvement")
    restore_best_weights: bool = Field(True, description="early-stopped runs end with the best weights seen")
    on_nonfinite: Literal["stop", "skip", "rollback"] = Field(
        "stop",
        description="a non-finite loss or gradient: stop (diverged), skip the update, or rollback to the "
        "last checkpoint with the lr scaled by rollback_lr_factor",
    )
    max_skips: int = Field(10, gt=0, description="non-finite updates in a row tolerated before diverged")
    rollback_lr_factor: float = Field(0.5, gt=0.0, lt=1.0, description="lr multiplier at each rollback")

    @field_validator("early_stopping_metric")
    @classmethod
    def _none_turns_it_off(cls, v: str | None) -> str | None:
        return None if v is not None and v.strip().lower() in ("none", "off", "") else v  # --early-stopping none

    @model_validator(mode="after")
    def _some_budget(self) -> StopConfig:
        if not any((self.max_epochs, self.max_updates, self.max_samples, self.max_seconds)):
            raise ValueError("set at least one budget: max_epochs, max_updates, max_samples or max_seconds")
        return self


class EvalConfig(_Model):
    """When to evaluate: every N updates (if set) and at every epoch end."""

    every_updates: int | None = Field(None, gt=0, description="evaluate every N updates (and at each epoch end)")
    batch_size: int = Field(4096, gt=0, description="samples per forward pass when evaluating")


class RegularizationConfig(_Model):
    """Penalties added to the objective: J = J0 + l1*sum|theta| + l2*sum theta^2, once per update."""

    l1: float = Field(0.0, ge=0.0, description="L1 penalty: J0 + l1*sum|theta|")
    l2: float = Field(0.0, ge=0.0, description="L2 penalty: J0 + l2*sum theta^2")
    exclude: tuple[Literal["bias", "norm"], ...] = Field(
        ("bias", "norm"), description="parameters left unpenalized: biases, normalization layers"
    )


class AugmentConfig(_Model):
    """Per-batch random image augmentation (data/augment.py), seeded by (seed, epoch, position)."""

    shift: int = Field(0, ge=0, description="random translation by up to this many pixels (pad + crop)")
    flip: bool = Field(False, description="horizontal flip with probability 1/2")
    rotate: float = Field(0.0, ge=0.0, le=180.0, description="random rotation in [-rotate, rotate] degrees")

    @property
    def enabled(self) -> bool:
        return bool(self.shift or self.flip or self.rotate)


class DriftConfig(_Model):
    """Drift detection on the prequential error stream (river's detectors) and what to do on a drift."""

    detector: Literal["none", "adwin", "page-hinkley"] = Field(
        "adwin", description="river's detector watching the prequential errors, or none"
    )
    delta: float = Field(0.002, gt=0.0, lt=1.0, description="ADWIN confidence (smaller: fewer false alarms)")
    threshold: float = Field(50.0, gt=0.0, description="Page-Hinkley detection threshold (lambda)")
    reaction: Literal["log", "reset-optimizer", "snapshot"] = Field(
        "log",
        description="log only; reset the optimizer state and multiply the lr by lr_factor; or save a "
        "snapshot of the model and alert",
    )
    lr_factor: float = Field(1.0, gt=0.0, description="reset-optimizer: multiply the lr by this (e.g. 2)")


class StreamConfig(_Model):
    """The stream strategy: the source, its declared message schema, and how the learner checkpoints,
    scores, publishes and reacts to drift (serve/learner.py). Messages are `{"x": [...], "y": label}`."""

    source: str | None = Field(None, description="redis://HOST:PORT/STREAM, a .jsonl file, or - for stdin")
    group: str = Field("cadence", min_length=1, description="Redis consumer group")
    consumer: str = Field("learner", min_length=1, description="this learner's consumer name in the group")
    n_features: int | None = Field(None, gt=0, description="features per message (x); default: from --from")
    task: Literal["classification", "regression"] = Field("classification", description="what y is")
    n_classes: int | None = Field(None, gt=1, description="labels are 0..n_classes-1; default: from --from")
    class_names: tuple[str, ...] = Field((), description="the label names /predict answers with")
    x_field: str = Field("x", description="message field holding the features")
    y_field: str = Field("y", description="message field holding the label (absent: predict only)")
    id_field: str = Field("id", description="message field naming the sample (default: its stream id)")
    max_message_bytes: int = Field(1_000_000, gt=0, description="larger messages are dead-lettered")
    center: float = Field(0.0, description="preprocessing: x' = (x - center) / scale")
    scale: float = Field(1.0, gt=0.0, description="preprocessing: x' = (x - center) / scale")
    batch_size: int = Field(1, gt=0, description="1: one update per sample; k: micro-batches of what arrived")
    read_count: int = Field(256, gt=0, description="messages read per poll")
    parse_workers: int = Field(
        1, ge=0, le=1, description="1: check and parse messages in a worker process while training; 0: inline"
    )
    label_delay: int = Field(0, ge=0, description="train each sample only after this many later ones arrived")
    window: int = Field(1000, gt=0, description="samples in the sliding-window metrics")
    checkpoint_every_samples: int | None = Field(
        50_000, gt=0, description="checkpoint (then ack) every N samples (or checkpoint_seconds, when sooner)"
    )
    checkpoint_seconds: float | None = Field(5.0, gt=0.0, description="checkpoint (then ack) every S seconds")
    keep_checkpoints: int = Field(3, gt=0, description="checkpoints kept in the run directory")
    publish_seconds: float | None = Field(1.0, gt=0.0, description="publish a snapshot to serving this often")
    publish_every_samples: int | None = Field(None, gt=0, description="publish a snapshot every N samples")
    gate_tolerance: float = Field(
        0.02, ge=0.0, description="publish only if the windowed metric is not worse than the served one by more"
    )
    keep_snapshots: int = Field(5, gt=0, description="published snapshots kept on disk for replicas")
    record_every_samples: int = Field(1000, gt=0, description="a history record every N samples")
    max_deliveries: int = Field(3, gt=0, description="a message failing in training this often is dead-lettered")
    claim_idle_ms: int = Field(30_000, gt=0, description="take over other consumers' entries idle this long")
    lease_ms: int = Field(10_000, gt=0, description="one active learner per group: the lease it renews")
    idle_seconds: float | None = Field(None, gt=0.0, description="stop after this long without a message")
    max_samples: int | None = Field(None, gt=0, description="stop after training this many samples")
    ledger: bool = Field(False, description="keep every trained message id in the checkpoints (audits)")
    drift: DriftConfig = DriftConfig()


class EnsembleConfig(_Model):
    """K members trained with seeds seed, seed+1, ...; predictions averaged (engine/ensemble.py)."""

    members: int = Field(1, gt=0, description="train K members with seeds seed..seed+K-1; average them")


class DistributedConfig(_Model):
    """Data-parallel training in processes started by torchrun (`cadence train --nproc N`; engine/distributed.py).
    Read only where WORLD_SIZE > 1; the number of processes is torchrun's, not a run setting."""

    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="torch.distributed backend: auto is nccl on cuda, gloo on cpu"
    )
    timeout_seconds: float = Field(
        300.0,
        gt=0.0,
        description="how long a process waits for the others (joining, each all-reduce) before the job fails "
        "naming it: a dead or stuck process never hangs the job",
    )


class RunConfig(_Model):
    """One training run: data, model, strategy, optimizer, schedule, stop rules."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    strategy: StrategyConfig = StrategyConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    stop: StopConfig = StopConfig()
    eval: EvalConfig = EvalConfig()
    seed: int = Field(0, ge=0, description="seeds the split, the init, the sample order and augmentation")
    device: str = Field(
        "cpu",
        pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
        description="torch device: auto | cpu | cuda | cuda:N | mps; auto takes cuda when present, except for "
        "runs the CPU's compiled one-sample kernel trains faster",
    )
    engine: Literal["auto", "autograd"] = Field(
        "auto", description="auto: the fastest engine that computes the same as autograd; autograd: always it"
    )
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16: autocast forward passes to bfloat16")
    regularization: RegularizationConfig = RegularizationConfig()
    augment: AugmentConfig = AugmentConfig()
    ensemble: EnsembleConfig = EnsembleConfig()
    stream: StreamConfig = StreamConfig()
    threads: int | None = Field(None, gt=0, description="torch threads; default chosen per strategy")
    distributed: DistributedConfig = DistributedConfig()

    @model_validator(mode="after")
    def _default_lr(self) -> RunConfig:
        """An unset lr becomes the default of the strategy and optimizer. `lr` stays out of the optimizer's
        fields_set, so `with_overrides` (another strategy or optimizer) picks that one's default again."""
        opt = self.optimizer
        if opt.lr is None:
            lr = DEFAULT_LRS[self.strategy.name][opt.name]
            fields = {**{k: getattr(opt, k) for k in type(opt).model_fields}, "lr": lr}
            resolved = OptimizerConfig.model_construct(_fields_set=opt.model_fields_set - {"lr"}, **fields)
            object.__setattr__(self, "optimizer", resolved)  # frozen model, still being validated
        return self

    @model_validator(mode="after")
    def _augment_needs_shared_scale(self) -> RunConfig:
        if self.augment.enabled and self.data.standardize == "feature":
            raise ValueError(
                "augment moves pixels to other positions, but data.standardize='feature' scales each pixel "
                "by its own std (near 0 at the borders), so moved pixels land far out of range. "
                "Fix: set data.standardize to 'global' (or 'none') when augmenting."
            )
        return self

    def with_overrides(self, overrides: dict[str, Any], source: str = "overrides") -> RunConfig:
        """Return a copy with dotted keys (`optimizer.lr`) replaced, checked like the original.

        Args:
            source: where the overrides come from, for messages ("command-line flags", "train() arguments").
        """
        tree = self.model_dump(mode="python")
        for dotted, value in overrides.items():
            node = tree
            *parents, leaf = str(dotted).split(".")
            for i, part in enumerate(parents):
                if (
                    part in node and node[part] is None
                ):  # an optional section (schedule.plateau) set by its first key
                    node[part] = {}
                if not isinstance(node.get(part), dict):
                    where = ".".join(parents[: i + 1])
                    raise ConfigError(
                        f"unknown config key {clip(dotted)}: {clip(where)} is not a section. "
                        f"Allowed sections: {', '.join(k for k, v in tree.items() if isinstance(v, dict))}."
                    )
                node = node[part]
            node[leaf] = value
        unset = "lr" not in self.optimizer.model_fields_set and "optimizer.lr" not in overrides
        if unset and isinstance(tree.get("optimizer"), dict):  # (`optimizer=None` is build_config's to refuse)
            tree["optimizer"]["lr"] = None  # a default lr follows a new strategy or optimizer
        return build_config(tree, source=source)


MAX_LISTED_ERRORS = 20  # a tree of thousands of bad values still makes a message of a screen


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    errors = err.errors()
    for e in errors[:MAX_LISTED_ERRORS]:
        where = clip_text(".".join(str(p) for p in e["loc"])) or "(top level)"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(e["loc"][:-1])
            lines.append(f"unknown key '{where}' = {clip(e.get('input'))}; allowed keys here: {allowed}")
        else:
            lines.append(f"'{where}' = {clip(e.get('input'))}: {e['msg']}")
    if len(errors) > MAX_LISTED_ERRORS:
        lines.append(f"... and {len(errors) - MAX_LISTED_ERRORS} more")
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


MAX_YAML_VALUES = 100_000  # after expanding aliases; a config file holds a few hundred


def read_yaml(path: str | Path) -> Any:
    """The YAML document in `path`, refusing one whose aliases expand past MAX_YAML_VALUES values.

    yaml.safe_load builds an alias-bomb (`a: &a [1,1,1,...]`, `b: &b [*a,*a,...]`, ...) cheaply as shared
    lists, but everything that walks the result (validation, messages, dumps) then walks 9^7 items.

    Raises:
        ConfigError: the file is missing, unreadable, not YAML, or too large once expanded.
    """
    path = Path(path)
    try:
        loader = yaml.SafeLoader(path.read_text())
        try:
            node = loader.get_single_node()
            if node is not None:
                _check_size(node, {}, path)
            return None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist. Fix: pass the path of a YAML file.") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {clip_text(str(err), 600)}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} nests too deeply. Fix: write a flat mapping of sections.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(
            f"config file {path} could not be read: {err}. Fix: pass a readable UTF-8 YAML file."
        ) from None


def _check_size(node: yaml.Node, sizes: dict[int, int], path: Path) -> int:
    """Values under `node` with every alias expanded; each node is counted once (sizes), so this is linear."""
    key = id(node)
    if key in sizes:
        if sizes[key] < 0:
            raise ConfigError(f"config file {path} holds a recursive alias. Fix: remove the self-reference.")
        return sizes[key]
    sizes[key] = -1  # being counted: meeting it again below means a cycle
    children = node.value if isinstance(node, yaml.CollectionNode) else []
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in children for n in pair]
    size = 1 + sum(_check_size(child, sizes, path) for child in children)
    if size > MAX_YAML_VALUES:
        raise ConfigError(
            f"config file {path} expands to more than {MAX_YAML_VALUES:,} values (nested YAML aliases?). "
            "Fix: write the settings out; a config needs a few hundred values at most."
        )
    sizes[key] = size
    return size


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML config file into a checked RunConfig.

    Raises:
        ConfigError: the file is missing, not YAML, not a mapping, or holds a bad setting.
    """
    tree = read_yaml(path)
    if tree is not None and not isinstance(tree, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of sections (data, model, strategy, ...); "
            f"got a {type(tree).__name__}"
        )
    return build_config(tree, source=str(path))
