"""The `cadence` command: one short function per command, calling the library."""

from __future__ import annotations

import json
import sys
import time
import warnings
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

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
# How tables are printed (cadence.reports.layout.FORMATS; spelled here so `--help` imports no reports code).
Format = Literal["table", "tsv", "json", "markdown"]
FORMAT_HELP = "table: fits the terminal, wide when piped; tsv, json: raw values; markdown. Other lines: stderr"
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
    "schedule": "schedule.name",
    "schedule_per": "schedule.per",
    "gamma": "schedule.gamma",
    "beta": "schedule.beta",
    "step_size": "schedule.step_size",
    "t_max": "schedule.T_max",
    "t_0": "schedule.T_0",
    "warmup_updates": "schedule.warmup_updates",
    "plateau_metric": "schedule.plateau.metric",
    "plateau_patience": "schedule.plateau.patience",
    "plateau_factor": "schedule.plateau.factor",
    "l1": "regularization.l1",
    "l2": "regularization.l2",
    "clip_norm": "optimizer.clip_norm",
    "clip_value": "optimizer.clip_value",
    "accumulate": "strategy.accumulate",
    "precision": "precision",
    "init": "model.init",
    "standardize": "data.standardize",
    "shift": "augment.shift",
    "flip": "augment.flip",
    "rotate": "augment.rotate",
    "ensemble": "ensemble.members",
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
    schedule: Annotated[
        str | None, Opt(help="constant | exponential | inverse-time | step | cosine | cosine-restarts | plateau")
    ] = None,
    schedule_per: Annotated[str | None, Opt(help="update | epoch: the schedule's time unit")] = None,
    gamma: Annotated[float | None, Opt(help="exponential/step decay factor; inverse-time power")] = None,
    beta: Annotated[float | None, Opt(help="inverse-time: lr0 / (1 + beta*t)^gamma")] = None,
    step_size: Annotated[int | None, Opt(help="step schedule: decay every N steps")] = None,
    t_max: Annotated[int | None, Opt("--t-max", help="cosine: steps to anneal over (default: the budget)")] = None,
    t_0: Annotated[int | None, Opt("--t-0", help="cosine-restarts: first cycle length")] = None,
    warmup_updates: Annotated[int | None, Opt(help="linear warm-up over N updates")] = None,
    plateau_metric: Annotated[str | None, Opt(help="cut the lr when this metric stalls, e.g. val_loss")] = None,
    plateau_patience: Annotated[int | None, Opt(help="evaluations without improvement before a cut")] = None,
    plateau_factor: Annotated[float | None, Opt(help="lr multiplier per plateau cut")] = None,
    l1: Annotated[float | None, Opt(help="L1 penalty: J0 + l1*sum|theta|")] = None,
    l2: Annotated[float | None, Opt(help="L2 penalty: J0 + l2*sum theta^2")] = None,
    clip_norm: Annotated[float | None, Opt(help="clip the gradient's global L2 norm")] = None,
    clip_value: Annotated[float | None, Opt(help="clip each gradient entry to [-v, v]")] = None,
    accumulate: Annotated[int | None, Opt(help="micro-batches of batch-size per update")] = None,
    precision: Annotated[str | None, Opt(help="fp32 | bf16 (autocast)")] = None,
    init: Annotated[str | None, Opt(help="default | xavier | kaiming | normal | orthogonal")] = None,
    standardize: Annotated[str | None, Opt(help="feature | global | none")] = None,
    shift: Annotated[int | None, Opt(help="augment: random shift up to N pixels")] = None,
    flip: Annotated[bool | None, Opt("--flip/--no-flip", help="augment: random horizontal flips")] = None,
    rotate: Annotated[float | None, Opt(help="augment: random rotation up to N degrees")] = None,
    ensemble: Annotated[int | None, Opt(help="train K members with seeds seed..seed+K-1; average them")] = None,
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
    output_format: Annotated[Format, Opt("--format", help=FORMAT_HELP)] = "table",
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
            if cfg.ensemble.members > 1:
                _train_ensemble(cfg, dataset, run_dir, as_json, quiet, output_format)
                return
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
        from cadence.reports.layout import print_table
        from cadence.reports.table import runs_table

        print_table(out_console, runs_table([run], title=f"Cadence: {dataset.describe()}"), output_format)
        notes = out_console if output_format == "table" else err_console  # stdout holds only the table
        if run.message:
            notes.print(f"stop reason: {run.stop_reason.value}: {run.message}", highlight=False)
        notes.print(f"run directory: {run_dir}", highlight=False, soft_wrap=True)
    if run.stop_reason == "interrupted":  # by SIGINT/SIGTERM: the shell convention is 128 + SIGINT
        hint = f" Continue with: cadence train --resume {run_dir}" if plan.callbacks else ""
        err_console.print(f"interrupted: {run.message}.{hint}", highlight=False, soft_wrap=True)
        raise typer.Exit(130)


def _train_ensemble(cfg, dataset, run_dir: Path, as_json: bool, quiet: bool, output_format: str) -> None:
    from cadence.engine import train_ensemble
    from cadence.reports.layout import print_table
    from cadence.reports.table import runs_table

    result = train_ensemble(dataset, cfg)
    result.save(run_dir)
    if as_json:
        print(json.dumps({**result.summary(), "run_dir": str(run_dir)}))
        return
    if not quiet:
        title = f"Cadence: {dataset.describe()}, ensemble members"
        print_table(out_console, runs_table(result.members, title=title), output_format)
        notes = out_console if output_format == "table" else err_console
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in result.test_metrics.items())
        notes.print(f"ensemble of {len(result.members)}: {metrics}", highlight=False, soft_wrap=True)
        notes.print(f"run directory: {run_dir}", highlight=False, soft_wrap=True)


def _compare_settings(config_file: Path | None, flags: dict, grid: dict):
    """(RunConfig, CompareConfig) from an optional YAML file (with a `compare:` section), then flags."""
    from cadence.comparison import build_compare_config, load_compare_file
    from cadence.config import build_config
    from cadence.errors import ConfigError

    base, settings = load_compare_file(config_file) if config_file else (build_config(), build_compare_config())
    base = base.with_overrides({FLAG_KEYS[k]: v for k, v in flags.items() if v is not None})
    tree = settings.dump()
    budgets = {mode: grid.pop(mode) for mode in ("epochs", "samples", "updates", "seconds") if grid.get(mode)}
    if len(budgets) > 1:
        raise ConfigError(
            f"give one budget, the quantity every run gets the same of; got {budgets}. "
            "Fix: keep one of --epochs, --max-samples, --max-updates, --max-seconds."
        )
    if budgets:
        tree["budget"] = budgets
    for key in ("strategies", "optimizers", "schedules"):
        if grid.get(key):
            tree[key] = [part.strip() for part in grid[key].split(",") if part.strip()]
    keys = ("seeds", "goal", "goal_metric", "workers", "tune_lr")
    tree.update({k: grid[k] for k in keys if grid.get(k) is not None})
    settings = build_compare_config(tree, source="command-line flags")
    if grid.get("lr") is not None and settings.tune_lr:
        raise ConfigError("--tune-lr finds each configuration's lr; --lr gives one. Fix: drop one of them.")
    if grid.get("lr") is not None:  # one lr for every optimizer entry, under every strategy
        tree = settings.dump()
        tree["optimizers"] = [{**o, "lr": grid["lr"]} for o in tree["optimizers"]]
        settings = build_compare_config(tree, source="--lr")
    return base, settings


@app.command()
def compare(
    config: Annotated[
        Path | None, Opt("--config", "-c", help="YAML: run settings plus a compare: section")
    ] = None,
    data: Annotated[str | None, Opt(help="data set (default digits)")] = None,
    data_dir: Annotated[Path | None, Opt()] = None,
    target: Annotated[str | None, Opt(help="target column of a CSV file")] = None,
    model: Annotated[str | None, Opt(help="mlp:128,64 | logreg | cnn | package.module:factory")] = None,
    batch_size: Annotated[int | None, Opt(help="mini-batch size where the strategy does not give one")] = None,
    limit: Annotated[int | None, Opt(help="use only the first N samples")] = None,
    strategies: Annotated[
        str | None, Opt(help="comma list; default full-batch,mini-batch,online (mini-batch:32 sets a batch)")
    ] = None,
    optimizers: Annotated[
        str | None, Opt(help="comma list; default sgd,momentum,adam (adam:0.001 sets an lr)")
    ] = None,
    schedules: Annotated[str | None, Opt(help="comma list; default constant")] = None,
    seeds: Annotated[int | None, Opt(help="seeds per configuration (default 3)")] = None,
    lr: Annotated[float | None, Opt(help="one lr for every run (default: per strategy and optimizer)")] = None,
    epochs: Annotated[int | None, Opt(help="budget: equal epochs (the default, 5)")] = None,
    max_samples: Annotated[int | None, Opt(help="budget: equal samples seen")] = None,
    max_updates: Annotated[int | None, Opt(help="budget: equal updates")] = None,
    max_seconds: Annotated[float | None, Opt(help="budget: equal wall seconds")] = None,
    goal: Annotated[float | None, Opt(help="validation value to race to (default: from the results)")] = None,
    goal_metric: Annotated[str | None, Opt(help="default val_accuracy (classification) / val_r2")] = None,
    workers: Annotated[int | None, Opt(help="worker processes (default: the usable cores)")] = None,
    threads: Annotated[int | None, Opt(help="torch threads per worker (default 1)")] = None,
    tune_lr: Annotated[
        bool, Opt("--tune-lr", help="lr range test per configuration first; its runs train at the found lr")
    ] = False,
    out: Annotated[Path | None, Opt(help="report directory (default runs/compare-<time>)")] = None,
    as_json: Annotated[bool, Opt("--json", help="print the runs as one JSON list, nothing else")] = False,
    output_format: Annotated[Format, Opt("--format", help=FORMAT_HELP)] = "table",
    quiet: Annotated[bool, Opt("--quiet", "-q", help="no live display or table")] = False,
    debug: Annotated[bool, Opt(help="show tracebacks")] = False,
) -> None:
    """Compare strategies x optimizers x schedules over seeds under one budget; write results.json, plots
    and report.html, and say which to use."""
    flags = {k: v for k, v in locals().items() if k in FLAG_KEYS}
    grid = {"strategies": strategies, "optimizers": optimizers, "schedules": schedules, "seeds": seeds, "lr": lr}
    grid |= {"epochs": epochs, "samples": max_samples, "updates": max_updates, "seconds": max_seconds}
    grid |= {"goal": goal, "goal_metric": goal_metric, "workers": workers, "tune_lr": tune_lr or None}
    try:
        from cadence.comparison import compare as run_comparison
        from cadence.comparison.config import dump_compare_file
        from cadence.reports import recommend, write_report
        from cadence.reports.layout import print_table
        from cadence.reports.table import compare_table

        base, settings = _compare_settings(config, flags, grid)
        out = out or Path("runs") / f"compare-{datetime.now():%Y%m%d-%H%M%S}"

        def save(partial) -> None:  # after every finished run, so Ctrl-C or a crash keeps what is done
            partial.save(out / "results.json")

        result = run_comparison(
            base,
            settings,
            live=not (quiet or as_json),
            on_result=save,
            meta={"command": " ".join(["cadence", *sys.argv[1:]])},
        )
        out.mkdir(parents=True, exist_ok=True)
        result.save(out / "results.json")
        (out / "compare.yaml").write_text(dump_compare_file(result.meta["config"], result.meta["compare"]))
        tree = result.to_dict()
        advice = recommend(tree)
        report = write_report(tree, out, advice)
    except (CadenceError, OSError) as err:
        _fail(err, debug)
    if as_json:
        print(
            json.dumps([{k: v for k, v in r.items() if k not in ("history", "run_config")} for r in tree["runs"]])
        )
    notes = out_console if output_format == "table" else err_console  # stdout holds only the table
    if not (as_json or quiet):
        print_table(out_console, compare_table(tree), output_format)
        notes.print(f"[bold]{advice.headline}[/]", highlight=False)
        for reason in advice.reasons:
            notes.print(f"- {reason}", highlight=False)
        notes.print(f"results: {out / 'results.json'}", highlight=False, soft_wrap=True)
    failed = [r for r in tree["runs"] if r.get("stop_reason") == "error"]
    if failed:
        err_console.print(f"[bold red]error:[/] {len(failed)} run(s) failed; first: {failed[0]['error']}")
    if not as_json:
        print(f"report: {report}", file=sys.stdout if output_format == "table" else sys.stderr)
    if result.meta["interrupted"]:
        err_console.print(f"interrupted: kept {len(tree['runs'])} of {result.meta['n_runs']} runs")
        raise typer.Exit(130)
    if failed:
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


from cadence.cli import tune as _tune  # noqa: E402,F401  registers lr-find, batch-size and tune
