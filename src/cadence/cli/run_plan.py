"""How `cadence train` starts: fresh, `--resume RUN_DIR` (exactly where it stopped) or `--from RUN_DIR`
(a new run from old weights): the config, the run directory (checked before anything is trained), the
checkpointing callback, the model."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from torch import nn

from cadence.callbacks import Checkpointing
from cadence.config import RunConfig, build_config, load_config
from cadence.engine import checkpoint, resume
from cadence.engine.events import Callback
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
    overwrite: bool = False,
    trust_code: bool = False,
) -> RunPlan:
    """Decide how a `cadence train` run starts; reads checkpoints but writes nothing.

    Raises:
        ConfigError: both --resume and --from, a bad setting, a run directory that cannot be used
            (`check_run_dir`), or a checkpoint/run naming a model factory to import that the user did not
            name again nor trust. CheckpointError: nothing to resume.
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
    run_dir = Path(
        out or default_dir or Path("runs") / f"{datetime.now():%Y%m%d-%H%M%S}-{cfg.strategy.name.value}"
    )
    continuing = default_dir is not None and run_dir.absolute() == Path(default_dir).absolute()
    check_run_dir(run_dir, overwrite=overwrite, continuing=continuing)
    callbacks: list = [ReplaceRun(run_dir)] if overwrite and not continuing else []
    if ckpt is not None or any(v is not None for v in settings.values()):
        keep = 3 if settings["keep"] is None else settings["keep"]
        callbacks.append(Checkpointing(run_dir, settings["every_updates"], settings["every_seconds"], keep))
    return RunPlan(cfg, run_dir, callbacks, ckpt, from_dir, notes)


# What a run writes into its directory (Run.save, Checkpointing, EnsembleRun.save, the loggers); a folder
# holding one of the first six is another run's.
RUN_ENTRIES = ("summary.json", "config.yaml", "model.safetensors", "history.jsonl", "ensemble.json", "checkpoints")
RUN_WRITES = (*RUN_ENTRIES, "history.csv", "metrics.csv", "tensorboard", "mlruns")


class ReplaceRun(Callback):
    """--overwrite: removes what the replaced run wrote into the run directory (its files, checkpoints,
    logs and ensemble members; nothing else) when the new run starts, after every check has passed, so the
    two runs never mix."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def on_run_start(self, state) -> None:
        if not self.run_dir.is_dir() or (state.group is not None and state.group.rank != 0):
            return  # rank 0 alone writes a data-parallel job's run directory
        for entry in self.run_dir.iterdir():
            if entry.name in RUN_WRITES or entry.name.startswith("member-"):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def check_run_dir(run_dir: Path, overwrite: bool = False, continuing: bool = False) -> None:
    """Refuse, before anything is trained or written, a run directory the run could not finish in: a file,
    a folder that cannot be created or written (the final save writes beside it and renames), or the folder
    of another run unless `overwrite` (or `continuing` it, as --resume does).

    Raises:
        ConfigError: naming the path, what is wrong and the fix.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(
            f"--out {run_dir} is a file, not a folder. Fix: pass a folder path (it is created if missing), "
            "or remove the file."
        )
    where = run_dir.absolute().parent
    while not where.exists():
        where = where.parent
    for folder in [where, run_dir] if run_dir.is_dir() else [where]:
        if not folder.is_dir():
            raise ConfigError(
                f"--out {run_dir} cannot be created: {folder} is a file. Fix: pass a folder path under a folder."
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            why = "a read-only file system" if os.statvfs(folder).f_flag & os.ST_RDONLY else "not writable by you"
            raise ConfigError(
                f"--out {run_dir} cannot be written: {folder} is {why}. Fix: pass --out a folder you can write."
            )
    if run_dir.is_dir() and not (overwrite or continuing):
        found = [name for name in RUN_ENTRIES if (run_dir / name).exists()]
        found += sorted(p.name for p in run_dir.glob("member-*"))[:1]
        if found:
            raise ConfigError(
                f"--out {run_dir} holds another run ({', '.join(found)}). Fix: pass another --out, --overwrite "
                f"to replace that run, or --resume {run_dir} to continue it."
            )
