"""How `cadence train` starts: fresh, `--resume RUN_DIR` (exactly where it stopped) or `--from RUN_DIR`
(a new run from old weights): the config, the run directory, the checkpointing callback, the model."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from torch import nn

from cadence.callbacks import Checkpointing
from cadence.config import RunConfig, build_config, load_config
from cadence.engine import checkpoint, resume
from cadence.errors import ConfigError
from cadence.models.builders import check_trusted


@dataclass
class RunPlan:
    config: RunConfig
    run_dir: Path
    callbacks: list = field(default_factory=list)
    checkpoint: checkpoint.Checkpoint | None = None  # resume from this
    start_weights: Path | None = None  # --from: a run directory whose weights start the new run
    notes: list[str] = field(default_factory=list)  # lines for stderr

    def model(self, data) -> nn.Module | None:
        """None (train() builds it) unless the run starts from old weights."""
        if self.start_weights is None:
            return None
        return resume.start_from(self.start_weights, self.config, data.input_shape, data.n_outputs)


def plan_run(
    config_file: Path | None,
    overrides: dict[str, Any],
    resume_dir: Path | None,
    from_dir: Path | None,
    out: Path | None,
    every_updates: int | None,
    every_seconds: float | None,
    keep: int | None,
    trust_code: bool = False,
) -> RunPlan:
    """Decide how a `cadence train` run starts; reads checkpoints but writes nothing.

    Raises:
        ConfigError: both --resume and --from, a bad setting, or a checkpoint/run naming a model factory
            to import that the user did not name again nor trust. CheckpointError: nothing to resume.
    """
    if resume_dir is not None and from_dir is not None:
        raise ConfigError(
            "--resume continues a run exactly; --from starts a new run from its weights. Fix: pass only one."
        )
    settings = {"every_updates": every_updates, "every_seconds": every_seconds, "keep": keep}
    ckpt = None
    notes = []
    if resume_dir is not None:
        ckpt = checkpoint.find(resume_dir)
        base = load_config(config_file) if config_file else resume.resume_config(ckpt)
        saved = ckpt.meta.get("checkpointing") or {}
        settings = {k: saved.get(k) if v is None else v for k, v in settings.items()}
        default_dir = ckpt.path.parent.parent  # <run>/checkpoints/ckpt-N
        notes.append(f"resuming from {resume.summary(ckpt)}")
    elif from_dir is not None:
        base = load_config(config_file) if config_file else resume.start_config(from_dir)
        default_dir = None
        notes.append(f"starting a new run from the weights of {from_dir}")
    else:
        base = load_config(config_file) if config_file else build_config()
        default_dir = None
    cfg = base.with_overrides(overrides, source="command-line flags")
    if (ckpt is not None or from_dir is not None) and config_file is None and "model.spec" not in overrides:
        source = f"checkpoint {ckpt.path}" if ckpt is not None else f"run {from_dir}"
        check_trusted(cfg.model.spec, source, trust_code)
    run_dir = out or default_dir or Path("runs") / f"{datetime.now():%Y%m%d-%H%M%S}-{cfg.strategy.name.value}"
    callbacks = []
    if ckpt is not None or any(v is not None for v in settings.values()):
        keep = 3 if settings["keep"] is None else settings["keep"]
        callbacks.append(Checkpointing(run_dir, settings["every_updates"], settings["every_seconds"], keep))
    return RunPlan(cfg, Path(run_dir), callbacks, ckpt, from_dir, notes)
