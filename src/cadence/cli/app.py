"""The `cadence` command: one short function per command, calling the library."""

from __future__ import annotations

import json
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cadence.errors import CadenceError

app = typer.Typer(
    help="Train PyTorch models under a chosen strategy and compare strategies.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)
out_console = Console()

Opt = typer.Option
# The flags every training command shares, each mapped to its dotted RunConfig key.
FLAG_KEYS = {
    "data": "data.name",
    "data_dir": "data.data_dir",
    "target": "data.target",
    "model": "model.spec",
    "strategy": "strategy.name",
    "batch_size": "strategy.batch_size",
    "chunk_size": "strategy.chunk_size",
    "optimizer": "optimizer.name",
    "lr": "optimizer.lr",
    "momentum": "optimizer.momentum",
    "weight_decay": "optimizer.weight_decay",
    "epochs": "stop.max_epochs",
    "max_updates": "stop.max_updates",
    "max_samples": "stop.max_samples",
    "max_seconds": "stop.max_seconds",
    "early_stopping": "stop.early_stopping_metric",
    "patience": "stop.early_stopping_patience",
    "tol": "stop.tol",
    "eval_every": "eval.every_updates",
    "seed": "seed",
    "threads": "threads",
    "limit": "data.limit",
    "dropout": "model.dropout",
    "on_nonfinite": "stop.on_nonfinite",
    "max_skips": "stop.max_skips",
}


def _config(config_file: Path | None, flags: dict):
    from cadence.config import build_config, load_config

    base = load_config(config_file) if config_file else build_config()
    return base.with_overrides({FLAG_KEYS[k]: v for k, v in flags.items() if v is not None})


@contextmanager
def _warnings_to_stderr():
    """Show library warnings (a corrupt checkpoint skipped, ...) as one yellow line each."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        previous = warnings.showwarning
        warnings.showwarning = lambda msg, *a, **k: err_console.print(
            f"[yellow]warning:[/] {msg}", highlight=False, soft_wrap=True
        )
        try:
            yield
        finally:
            warnings.showwarning = previous


def _fail(err: Exception, debug: bool) -> None:
    if debug:
        raise err
    code = err.exit_code if isinstance(err, CadenceError) else 1
    err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def train(
    config: Annotated[Path | None, Opt("--config", "-c", help="YAML config; flags override it")] = None,
    data: Annotated[str | None, Opt(help="digits | fashion-mnist | mnist | file.csv | image folder")] = None,
    data_dir: Annotated[Path | None, Opt(help="where fashion-mnist/mnist files are")] = None,
    target: Annotated[str | None, Opt(help="target column of a CSV file")] = None,
    model: Annotated[str | None, Opt(help="mlp:128,64 | logreg | cnn | package.module:factory")] = None,
    strategy: Annotated[str | None, Opt(help="full-batch | mini-batch | online")] = None,
    batch_size: Annotated[int | None, Opt(help="mini-batch size")] = None,
    chunk_size: Annotated[int | None, Opt(help="max samples per forward pass (full-batch memory bound)")] = None,
    optimizer: Annotated[
        str | None, Opt(help="gd | sgd | momentum | nesterov | adagrad | rmsprop | adam | adamw")
    ] = None,
    lr: Annotated[float | None, Opt(help="learning rate")] = None,
    momentum: Annotated[float | None, Opt()] = None,
    weight_decay: Annotated[float | None, Opt()] = None,
    dropout: Annotated[float | None, Opt()] = None,
    epochs: Annotated[int | None, Opt(help="max epochs")] = None,
    max_updates: Annotated[int | None, Opt()] = None,
    max_samples: Annotated[int | None, Opt()] = None,
    max_seconds: Annotated[float | None, Opt()] = None,
    early_stopping: Annotated[str | None, Opt(help="validation metric to monitor, e.g. val_loss")] = None,
    patience: Annotated[int | None, Opt(help="early-stopping patience, in evaluations")] = None,
    tol: Annotated[float | None, Opt(help="converged when relative loss improvement < tol")] = None,
    eval_every: Annotated[int | None, Opt(help="evaluate every N updates (and at each epoch end)")] = None,
    limit: Annotated[int | None, Opt(help="use only the first N samples")] = None,
    seed: Annotated[int | None, Opt()] = None,
    threads: Annotated[int | None, Opt(help="torch threads")] = None,
    on_nonfinite: Annotated[str | None, Opt(help="non-finite loss/gradient: stop | skip | rollback")] = None,
    max_skips: Annotated[int | None, Opt(help="non-finite updates in a row before diverged")] = None,
    checkpoint_every: Annotated[int | None, Opt(help="write a checkpoint every N updates")] = None,
    checkpoint_seconds: Annotated[float | None, Opt(help="write a checkpoint every S seconds")] = None,
    keep: Annotated[int | None, Opt(help="checkpoints to keep (default 3)")] = None,
    resume: Annotated[Path | None, Opt(help="continue RUN_DIR exactly from its newest valid checkpoint")] = None,
    allow_changes: Annotated[bool, Opt(help="let --resume continue with a changed config or data")] = False,
    from_run: Annotated[
        Path | None, Opt("--from", help="start a new run from the weights of RUN_DIR (e.g. with new --data)")
    ] = None,
    out: Annotated[Path | None, Opt(help="run directory (default runs/<time>-<strategy>)")] = None,
    as_json: Annotated[bool, Opt("--json", help="print the summary as one JSON object, nothing else")] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="no progress bar or table")] = False,
    debug: Annotated[bool, Opt(help="show tracebacks")] = False,
) -> None:
    """Train one model and write a run directory (config, history, summary.json, model.safetensors).

    SIGINT/SIGTERM finish the current update, write a checkpoint (with --checkpoint-*) and exit with 130.
    """
    flags = {k: v for k, v in locals().items() if k in FLAG_KEYS}
    try:
        from cadence.callbacks import Progress
        from cadence.cli.run_plan import plan_run
        from cadence.data.datasets import load_data
        from cadence.engine import train as train_run

        with _warnings_to_stderr():
            overrides = {FLAG_KEYS[k]: v for k, v in flags.items() if v is not None}
            plan = plan_run(config, overrides, resume, from_run, out, checkpoint_every, checkpoint_seconds, keep)
            cfg, run_dir = plan.config, plan.run_dir
            for note in plan.notes:
                err_console.print(note, highlight=False, soft_wrap=True)
            t0 = time.perf_counter()
            dataset = load_data(cfg.data, seed=cfg.seed)
            data_seconds = time.perf_counter() - t0
            callbacks = [] if (quiet or as_json) else [Progress(f"{cfg.strategy.name.value}")]
            callbacks += plan.callbacks
            model = plan.model(dataset)
            run = train_run(
                model, dataset, cfg, callbacks=callbacks, resume_from=plan.checkpoint, allow_changes=allow_changes
            )
        run.data_seconds = data_seconds
        run.save(run_dir)
    except (CadenceError, OSError) as err:
        _fail(err, debug)
    summary = {**run.summary(), "run_dir": str(run_dir)}
    if as_json:
        print(json.dumps(summary))
    elif not quiet:
        from cadence.reports.table import runs_table

        out_console.print(runs_table([run], title=f"Cadence: {dataset.describe()}"))
        if run.message:
            out_console.print(f"stop reason: {run.stop_reason.value}: {run.message}")
        out_console.print(f"run directory: {run_dir}")
    if run.stop_reason == "interrupted":  # by SIGINT/SIGTERM: the shell convention is 128 + SIGINT
        hint = f" Continue with: cadence train --resume {run_dir}" if plan.callbacks else ""
        err_console.print(f"interrupted: {run.message}.{hint}", highlight=False, soft_wrap=True)
        raise typer.Exit(130)


@app.command()
def compare(
    config: Annotated[Path | None, Opt("--config", "-c", help="YAML config; flags override it")] = None,
    data: Annotated[str | None, Opt(help="data set (default digits)")] = None,
    data_dir: Annotated[Path | None, Opt()] = None,
    target: Annotated[str | None, Opt()] = None,
    model: Annotated[str | None, Opt()] = None,
    batch_size: Annotated[int | None, Opt()] = None,
    optimizer: Annotated[str | None, Opt()] = None,
    epochs: Annotated[int | None, Opt(help="max epochs for every strategy")] = None,
    max_updates: Annotated[int | None, Opt()] = None,
    max_samples: Annotated[int | None, Opt()] = None,
    max_seconds: Annotated[float | None, Opt()] = None,
    limit: Annotated[int | None, Opt()] = None,
    seed: Annotated[int | None, Opt()] = None,
    as_json: Annotated[bool, Opt("--json", help="print one JSON summary per run as a list")] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q")] = False,
    debug: Annotated[bool, Opt()] = False,
) -> None:
    """Train the same model with full-batch, mini-batch and online SGD under one budget; print a table."""
    flags = {k: v for k, v in locals().items() if k in FLAG_KEYS}
    try:
        from cadence.callbacks import Progress
        from cadence.compare import compare_strategies

        cfg = _config(config, flags)
        runs = compare_strategies(cfg, callbacks_for=None if (quiet or as_json) else lambda s: [Progress(s.value)])
    except (CadenceError, OSError) as err:
        _fail(err, debug)
    if as_json:
        print(json.dumps([r.summary() for r in runs]))
        return
    from cadence.reports.table import runs_table

    out_console.print(runs_table(runs))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
