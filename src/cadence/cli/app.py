"""The `cadence` command: one short function per command, calling the library.

Run-config flags are generated from config.py (cli/flags.py). Only typer, rich and the standard library are
imported at module level, so `cadence --help` and `--version` answer without loading torch.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from cadence.cli.flags import config_options, with_default
from cadence.cli.launch import NPROC_HELP
from cadence.errors import CadenceError, clip_text


class _NoFlagType:
    """typer 0.29 labels every flag `<bool>` in help (`--json <bool>`, even `--help`); a flag takes no
    value, so show none."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class _Command(_NoFlagType, TyperCommand):
    pass


class _Group(_NoFlagType, TyperGroup):
    pass


class _App(typer.Typer):
    """A Typer whose commands, including those other cli modules register, use _Command."""

    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or _Command, **kwargs)


app = _App(
    help="Train PyTorch models under a chosen strategy and compare strategies.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"]},
)
err_console = Console(stderr=True)
out_console = Console()

Opt = typer.Option
FROM_FLAGS = "command-line flags"  # where overrides come from, in error messages
MAX_MESSAGE = 4000  # characters of an error message the CLI prints
# How tables are printed (cadence.reports.layout.FORMATS; spelled here so `--help` imports no reports code).
Format = Literal["table", "tsv", "json", "markdown"]
FORMAT_HELP = "table: fits the terminal, wide when piped; tsv, json: raw values; markdown. Other lines: stderr"
DIVERGED_EXIT = 3  # `cadence train`'s exit code for a run that stopped `diverged` (summary and weights saved)


class Logger(StrEnum):  # an Enum, not a Literal: typer parses lists of enums only
    TENSORBOARD = "tensorboard"
    MLFLOW = "mlflow"
    CSV = "csv"


def _print_version(value: bool) -> None:
    if value:
        from cadence import __version__

        print(f"cadence {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, Opt("--version", "-V", callback=_print_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Train PyTorch models under a chosen strategy and compare strategies."""


@contextmanager
def _warnings_to_stderr():
    """Show library warnings (a corrupt checkpoint skipped, ...) as one yellow line each."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # each distinct warning once (not once per ensemble member)
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
    # Messages clip the values they echo; this bounds any other (an OSError's path, a message of many lines).
    message = escape(clip_text(str(err), MAX_MESSAGE))  # escaped: rich would read `[x]` in it as markup
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
@config_options()
def train(
    overrides: dict[str, Any],
    config: Annotated[Path | None, Opt("--config", "-c", help="YAML config; flags override it")] = None,
    checkpoint_every: Annotated[int | None, Opt(help="write a checkpoint every N updates")] = None,
    checkpoint_seconds: Annotated[float | None, Opt(help="write a checkpoint every S seconds")] = None,
    keep: Annotated[int | None, Opt(help=with_default("checkpoints to keep", "3"))] = None,
    resume: Annotated[Path | None, Opt(help="continue RUN_DIR exactly from its newest valid checkpoint")] = None,
    allow_changes: Annotated[
        bool, Opt("--allow-changes", help="let --resume continue with a changed config or data")
    ] = False,
    trust_code: Annotated[
        bool, Opt("--trust-code", help="let --resume/--from import the package.module:factory their run names")
    ] = False,
    from_run: Annotated[
        Path | None, Opt("--from", help="start a new run from the weights of RUN_DIR (e.g. with new --data)")
    ] = None,
    out: Annotated[
        Path | None, Opt("--out", "-o", help=with_default("run directory", "runs/<time>-<strategy>"))
    ] = None,
    overwrite: Annotated[bool, Opt("--overwrite", help="replace the run already in --out")] = False,
    logger: Annotated[
        list[Logger] | None, Opt(help="also log each evaluation to the run directory; repeatable")
    ] = None,
    print_config: Annotated[
        bool, Opt("--print-config", help="print the resolved config as YAML; train nothing")
    ] = False,
    as_json: Annotated[bool, Opt("--json", help="print the summary as one JSON object, nothing else")] = False,
    output_format: Annotated[Format, Opt("--format", help=FORMAT_HELP)] = "table",
    quiet: Annotated[bool, Opt("--quiet", "-q", help="no progress bar or table")] = False,
    debug: Annotated[bool, Opt("--debug", help="show tracebacks")] = False,
    nproc: Annotated[int | None, Opt(min=1, help=NPROC_HELP)] = None,
    nnodes: Annotated[str | None, Opt(help="machines in the job, N or MIN:MAX (torchrun --nnodes)")] = None,
    node_rank: Annotated[
        int | None, Opt(min=0, help="this machine's rank in the job (torchrun --node-rank)")
    ] = None,
    rdzv_endpoint: Annotated[
        str | None, Opt(help="HOST:PORT where the machines of the job meet (torchrun --rdzv-endpoint, c10d)")
    ] = None,
    rdzv_id: Annotated[
        str | None, Opt(help="the job's id, the same on every machine (torchrun --rdzv-id)")
    ] = None,
    max_restarts: Annotated[
        int, Opt(min=0, help="restart the job from its last checkpoint after a process fails, up to N times")
    ] = 0,
) -> None:
    """Train one model and write a run directory (config, history, summary.json, model.safetensors).

    SIGINT/SIGTERM finish the current update, write a checkpoint (with --checkpoint-*) and exit with 130.
    A run that diverged exits with 3, its summary and last good weights written. With --nproc N the run is
    data-parallel over N processes started by torchrun; rank 0 prints and writes the run directory.
    """
    try:
        from cadence.cli import launch
        from cadence.cli.run_plan import plan_run

        rank = launch.rank()
        resume, from_run, overwrite = launch.on_restart(out, resume, from_run, overwrite)
        with _warnings_to_stderr():
            plan = plan_run(
                config,
                overrides,
                resume,
                from_run,
                out,
                checkpoint_every,
                checkpoint_seconds,
                keep,
                overwrite=overwrite,
                trust_code=trust_code,
            )
            if print_config:
                print(_yaml(plan.config.model_dump(mode="json")), end="")
                return
            job = launch.options(nproc, nnodes, node_rank, rdzv_endpoint, rdzv_id, max_restarts)
            if job is not None:  # the processes print the run; a failed one raises DistributedError
                launch.start(plan, job, out_given=out is not None)
                return
            for note in plan.notes if rank == 0 else ():
                err_console.print(note, highlight=False, soft_wrap=True)
            shown = {"as_json": as_json, "quiet": quiet or rank != 0, "output_format": output_format}
            run, dataset = _train_run(plan, logger or [], allow_changes, shown)
    except (CadenceError, OSError) as err:
        _fail(err, debug)
    if run is not None and rank != 0:  # the same run as rank 0's, which prints it: only its exit code
        raise typer.Exit({"interrupted": 130, "diverged": DIVERGED_EXIT}.get(run.stop_reason.value, 0))
    if run is not None:
        _show_run(run, dataset, plan, **shown)


def _train_run(plan, loggers: list[str], allow_changes: bool, shown: dict):
    """Load the data and train (an ensemble: train and show it here, returning no Run)."""
    from cadence.callbacks import Progress
    from cadence.callbacks.loggers import make_logger
    from cadence.data.datasets import load_data
    from cadence.engine import train as train_run

    cfg = plan.config
    t0 = time.perf_counter()
    dataset = load_data(cfg.data, seed=cfg.seed)
    data_seconds = time.perf_counter() - t0
    if cfg.ensemble.members > 1:
        _train_ensemble(cfg, dataset, plan.run_dir, **shown)
        return None, dataset
    callbacks = [] if (shown["quiet"] or shown["as_json"]) else [Progress(cfg.strategy.name.value)]
    callbacks += [*plan.callbacks, *(make_logger(Logger(name).value, plan.run_dir) for name in loggers)]
    model = plan.model(dataset)
    run = train_run(
        model, dataset, cfg, callbacks=callbacks, resume_from=plan.checkpoint, allow_changes=allow_changes
    )
    run.data_seconds = data_seconds
    run.save(plan.run_dir)
    return run, dataset


def _show_run(run, dataset, plan, as_json: bool, quiet: bool, output_format: str) -> None:
    run_dir = plan.run_dir
    if as_json:
        print(json.dumps({**run.summary(), "run_dir": str(run_dir)}))
    elif not quiet:
        from cadence.reports.layout import print_table
        from cadence.reports.table import runs_table

        print_table(out_console, runs_table([run], title=f"Cadence: {dataset.describe()}"), output_format)
        notes = out_console if output_format == "table" else err_console  # stdout holds only the table
        notes.print(engine_line(run.engine, run.engine_fallback, run.device, run.threads), highlight=False)
        if run.message:
            notes.print(f"stop reason: {run.stop_reason.value}: {run.message}", highlight=False)
        notes.print(f"run directory: {run_dir}", highlight=False, soft_wrap=True)
    if run.stop_reason == "interrupted":  # by SIGINT/SIGTERM: the shell convention is 128 + SIGINT
        hint = f" Continue with: cadence train --resume {run_dir}" if plan.callbacks else ""
        err_console.print(f"interrupted: {run.message}.{hint}", highlight=False, soft_wrap=True)
        raise typer.Exit(130)
    if run.stop_reason == "diverged":
        err_console.print(
            f"[bold red]diverged:[/] {run.message} Summary and last good weights: {run_dir}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(DIVERGED_EXIT)


def engine_line(engine: str, fallback: str | None, device: str, threads: int) -> str:
    """`engine: c-kernel (cpu, 1 thread)`, with the reason when no faster engine ran."""
    where = f"{device}, {threads} thread{'s' if threads != 1 else ''}"
    return f"engine: {engine} ({where})" + (f"; no faster engine: {fallback}" if fallback else "")


def _yaml(tree: dict) -> str:
    import yaml

    return yaml.safe_dump(tree, sort_keys=False)


def _train_ensemble(cfg, dataset, run_dir: Path, as_json: bool, quiet: bool, output_format: str) -> None:
    from cadence.engine import train_ensemble
    from cadence.reports.layout import print_table
    from cadence.reports.table import runs_table

    result = train_ensemble(data=dataset, config=cfg)
    result.save(run_dir)
    if as_json:
        print(json.dumps({**result.summary(), "run_dir": str(run_dir)}))
    elif not quiet:
        title = f"Cadence: {dataset.describe()}, ensemble members"
        print_table(out_console, runs_table(result.members, title=title), output_format)
        notes = out_console if output_format == "table" else err_console
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in result.test_metrics.items())
        notes.print(f"ensemble of {len(result.members)}: {metrics}", highlight=False, soft_wrap=True)
        notes.print(f"run directory: {run_dir}", highlight=False, soft_wrap=True)
    if result.diverged:  # as a single run: a diverged member is a failed run, whatever the others did
        members = ", ".join(f"member-{i}" for i in result.diverged)
        message = result.members[result.diverged[0]].message
        err_console.print(
            f"[bold red]diverged:[/] {members}: {message} Summaries and last good weights: {run_dir}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(DIVERGED_EXIT)


# What a comparison sets for every run itself (its grid, budget and seeds): no run-config flag for these.
COMPARE_SETS = ("strategy.name", "optimizer", "schedule", "stop.max_epochs", "stop.max_updates")
COMPARE_SETS += ("stop.max_samples", "stop.max_seconds", "seed", "ensemble", "threads", "stream")


def _compare_settings(config_file: Path | None, overrides: dict, grid: dict):
    """(RunConfig, CompareConfig) from an optional YAML file (with a `compare:` section), then flags."""
    from cadence.comparison import build_compare_config, load_compare_file
    from cadence.config import build_config
    from cadence.errors import ConfigError

    base, settings = load_compare_file(config_file) if config_file else (build_config(), build_compare_config())
    base = base.with_overrides(overrides, source=FROM_FLAGS)
    tree = settings.dump()
    budgets = {mode: grid.pop(mode) for mode in ("epochs", "samples", "updates", "seconds") if grid.get(mode)}
    if len(budgets) > 1:
        raise ConfigError(
            f"give one budget, the quantity every run gets the same of; got {budgets}. "
            "Fix: keep one of --max-epochs, --max-samples, --max-updates, --max-seconds."
        )
    if budgets:
        tree["budget"] = budgets
    for key in ("strategies", "optimizers", "schedules"):
        if grid.get(key):
            tree[key] = [part.strip() for part in grid[key].split(",") if part.strip()]
    keys = ("seeds", "goal", "goal_metric", "workers", "tune_lr")
    tree.update({k: grid[k] for k in keys if grid.get(k) is not None})
    settings = build_compare_config(tree, source=FROM_FLAGS)
    if grid.get("lr") is not None and settings.tune_lr:
        raise ConfigError("--tune-lr finds each configuration's lr; --lr gives one. Fix: drop one of them.")
    if grid.get("lr") is not None:  # one lr for every optimizer entry, under every strategy
        tree = settings.dump()
        tree["optimizers"] = [{**o, "lr": grid["lr"]} for o in tree["optimizers"]]
        settings = build_compare_config(tree, source="--lr")
    return base, settings


@app.command()
@config_options(exclude=COMPARE_SETS)
def compare(
    overrides: dict[str, Any],
    config: Annotated[
        Path | None, Opt("--config", "-c", help="YAML: run settings plus a compare: section")
    ] = None,
    strategies: Annotated[
        str | None,
        Opt(help=with_default("comma list; mini-batch:32 sets a batch", "full-batch,mini-batch,online")),
    ] = None,
    optimizers: Annotated[
        str | None, Opt(help=with_default("comma list; adam:0.001 sets an lr", "sgd,momentum,adam"))
    ] = None,
    schedules: Annotated[str | None, Opt(help=with_default("comma list", "constant"))] = None,
    seeds: Annotated[int | None, Opt(help=with_default("seeds per configuration", "3"))] = None,
    lr: Annotated[
        float | None, Opt(help=with_default("one lr for every run", "per strategy and optimizer"))
    ] = None,
    max_epochs: Annotated[
        int | None, Opt("--max-epochs", "--epochs", "-e", help=with_default("budget: equal epochs", "5"))
    ] = None,
    max_samples: Annotated[int | None, Opt(help="budget: equal samples seen")] = None,
    max_updates: Annotated[int | None, Opt(help="budget: equal updates")] = None,
    max_seconds: Annotated[float | None, Opt(help="budget: equal wall seconds")] = None,
    goal: Annotated[
        float | None, Opt(help=with_default("validation value to race to", "from the results"))
    ] = None,
    goal_metric: Annotated[
        str | None, Opt(help=with_default("the metric the goal is in", "val_accuracy (classification) / val_r2"))
    ] = None,
    workers: Annotated[int | None, Opt(help=with_default("worker processes", "the usable cores"))] = None,
    threads: Annotated[int | None, Opt(help=with_default("torch threads per worker", "1"))] = None,
    tune_lr: Annotated[
        bool, Opt("--tune-lr", help="lr range test per configuration first; its runs train at the found lr")
    ] = False,
    out: Annotated[
        Path | None, Opt("--out", "-o", help=with_default("report directory", "runs/compare-<time>"))
    ] = None,
    print_config: Annotated[
        bool, Opt("--print-config", help="print the comparison as YAML (a file for -c); run nothing")
    ] = False,
    as_json: Annotated[bool, Opt("--json", help="print the runs as one JSON list, nothing else")] = False,
    output_format: Annotated[Format, Opt("--format", help=FORMAT_HELP)] = "table",
    quiet: Annotated[bool, Opt("--quiet", "-q", help="no live display or table")] = False,
    debug: Annotated[bool, Opt("--debug", help="show tracebacks")] = False,
) -> None:
    """Compare strategies x optimizers x schedules over seeds under one budget, and say which to use.

    Writes results.json, compare.yaml (rerun it with -c), plots and report.html into the report directory.
    """
    grid = {"strategies": strategies, "optimizers": optimizers, "schedules": schedules, "seeds": seeds, "lr": lr}
    grid |= {"epochs": max_epochs, "samples": max_samples, "updates": max_updates, "seconds": max_seconds}
    grid |= {"goal": goal, "goal_metric": goal_metric, "workers": workers, "tune_lr": tune_lr or None}
    overrides = {**overrides, **({"threads": threads} if threads is not None else {})}
    try:
        with _warnings_to_stderr():
            base, settings = _compare_settings(config, overrides, grid)
            if print_config:
                from cadence.comparison.config import dump_compare_file

                print(dump_compare_file(base.model_dump(mode="json"), settings.dump()), end="")
                return
            out = out or Path("runs") / f"compare-{datetime.now():%Y%m%d-%H%M%S}"
            result, tree, advice, report = _run_comparison(base, settings, out, live=not (quiet or as_json))
    except (CadenceError, OSError) as err:
        _fail(err, debug)
    _show_comparison(result, tree, advice, report, out, as_json, quiet, output_format)


def _run_comparison(base, settings, out: Path, live: bool):
    """Run the grid, saving results.json after every run (Ctrl-C or a crash keeps what is done); report."""
    from cadence.comparison import compare as run_comparison
    from cadence.comparison.config import dump_compare_file
    from cadence.reports import recommend, write_report

    result = run_comparison(
        base,
        settings,
        live=live,
        on_result=lambda partial: partial.save(out / "results.json"),
        meta={"command": " ".join(["cadence", *sys.argv[1:]])},
    )
    out.mkdir(parents=True, exist_ok=True)
    result.save(out / "results.json")
    (out / "compare.yaml").write_text(dump_compare_file(result.meta["config"], result.meta["compare"]))
    tree = result.to_dict()
    advice = recommend(tree)
    return result, tree, advice, write_report(tree, out, advice)


def _show_comparison(result, tree, advice, report, out: Path, as_json: bool, quiet: bool, output_format: str):
    if as_json:
        print(
            json.dumps([{k: v for k, v in r.items() if k not in ("history", "run_config")} for r in tree["runs"]])
        )
    notes = out_console if output_format == "table" else err_console  # stdout holds only the table
    if not (as_json or quiet):
        from cadence.reports.layout import print_table
        from cadence.reports.table import compare_table

        print_table(out_console, compare_table(tree), output_format)
        engines = sorted({(r.get("engine"), r.get("strategy")) for r in tree["runs"] if r.get("engine")})
        if engines:
            used = {e: ", ".join(st for name, st in engines if name == e) for e, _ in engines}
            notes.print("engine: " + "; ".join(f"{e} ({st})" for e, st in used.items()), highlight=False)
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


from cadence.cli import use as _use  # noqa: E402,F401  registers predict, evaluate, export


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


from cadence.cli import stream as _stream  # noqa: E402,F401  registers stream, serve, replay
from cadence.cli import tune as _tune  # noqa: E402,F401  registers lr-find, batch-size and tune
