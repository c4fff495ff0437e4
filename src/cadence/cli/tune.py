"""`cadence lr-find`, `cadence batch-size` and `cadence tune`: each calls cadence.tuning and writes what it found
into an output folder (JSON, PNG plots, and for tune a ready-to-run best.yaml and report.html)."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from cadence.cli.app import FROM_FLAGS, app, err_console, out_console
from cadence.cli.flags import config_options
from cadence.errors import CadenceError

Opt = typer.Option


def _run_config(config_file: Path | None, overrides: dict[str, Any]):
    from cadence.config import build_config, load_config

    base = load_config(config_file) if config_file else build_config()
    return base.with_overrides(overrides, source=FROM_FLAGS)


def _fail(err: Exception, debug: bool) -> None:
    if debug:
        raise err
    code = err.exit_code if isinstance(err, CadenceError) else 1
    err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _out(out: Path | None, kind: str) -> Path:
    out = out or Path("runs") / f"{kind}-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _command() -> str:
    return " ".join(["cadence", *sys.argv[1:]])


def _save(out: Path | None, kind: str, stem: str, result, dataset, figure) -> tuple[dict, Path]:
    """The record of an lr-find or batch-size result (with the data and the command), written as
    `<stem>.json` with its figure `<stem>.png` into the run folder; returns the record and the figure's path."""
    from cadence.reports.tuning import save_png  # matplotlib: imported by the commands that draw, not at start

    folder = _out(out, kind)
    record = {**result.to_dict(), "data": dataset.describe(), "command": _command()}
    (folder / f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n")
    png = folder / f"{stem}.png"
    save_png(figure(record), png)
    return record, png


@app.command("lr-find")
@config_options()
def lr_find(
    overrides: dict[str, Any],
    config: Annotated[Path | None, Opt("--config", "-c", help="YAML run config; flags override it")] = None,
    lr_min: Annotated[float, Opt(help="lr of the first update")] = 1e-7,
    lr_max: Annotated[float, Opt(help="lr of the last update")] = 10.0,
    updates: Annotated[int, Opt(help="updates along the exponential ramp")] = 100,
    rule: Annotated[str, Opt(help="valley | steepest: how the lr is picked from the curve")] = "valley",
    smoothing: Annotated[float, Opt(help="beta of the loss's bias-corrected moving average")] = 0.9,
    diverge: Annotated[float, Opt(help="stop when the smoothed loss exceeds this multiple of its best")] = 4.0,
    out: Annotated[Path | None, Opt("--out", "-o", help="output folder (default runs/lr-find-<time>)")] = None,
    as_json: Annotated[bool, Opt("--json", help="print the result as one JSON object, nothing else")] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="print only the suggested lr")] = False,
    debug: Annotated[bool, Opt("--debug", help="show tracebacks")] = False,
) -> None:
    """Learning-rate range test: train briefly with the lr growing exponentially and suggest an lr.

    Writes lr_find.json and lr_find.png (loss against lr, log scale, suggestion marked).
    """
    try:
        from cadence.data.datasets import load_data
        from cadence.reports.tuning import lr_find_figure
        from cadence.tuning import lr_range_test

        cfg = _run_config(config, overrides)
        dataset = load_data(cfg.data, seed=cfg.seed)
        result = lr_range_test(
            None,
            dataset,
            cfg,
            lr_min=lr_min,
            lr_max=lr_max,
            updates=updates,
            beta=smoothing,
            diverge=diverge,
            rule=rule,
        )
        record, png = _save(out, "lr-find", "lr_find", result, dataset, lr_find_figure)
    except (CadenceError, OSError) as err:
        _fail(err, debug)
    if as_json:
        print(json.dumps(record))
        return
    if quiet:
        print("none" if result.suggestion is None else repr(result.suggestion))
        return
    out_console.print(f"[bold]{result.message}[/]", highlight=False, soft_wrap=True)
    other = {r: lr for r, lr in result.suggestions.items() if r != rule}
    for r, lr in other.items():
        out_console.print(f"{r} rule: {'no suggestion' if lr is None else f'lr {lr:.3g}'}", highlight=False)
    out_console.print(f"plot: {png}")
    if result.suggestion is None:
        raise typer.Exit(1)


@app.command("batch-size")
@config_options(exclude=("strategy.name",))
def batch_size(
    overrides: dict[str, Any],
    config: Annotated[Path | None, Opt("--config", "-c", help="YAML run config; flags override it")] = None,
    sizes: Annotated[str | None, Opt(help="comma list of batch sizes (default 8, 16, ... up to 4096)")] = None,
    warmup: Annotated[
        int, Opt(help="updates trained (mini-batch) before measuring; 0: the initial weights")
    ] = 200,
    draws: Annotated[int, Opt(help="small/big batch pairs averaged for the noise scale")] = 200,
    timing_updates: Annotated[int, Opt(help="updates timed per batch size")] = 20,
    out: Annotated[Path | None, Opt("--out", "-o", help="output folder (default runs/batch-size-<time>)")] = None,
    as_json: Annotated[bool, Opt("--json", help="print the result as one JSON object, nothing else")] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="print only the advised batch size")] = False,
    debug: Annotated[bool, Opt("--debug", help="show tracebacks")] = False,
) -> None:
    """Batch-size advice: the gradient noise scale (critical batch size) and each size's throughput and peak
    memory here; says which size reaches a given loss soonest. Writes batch_size.json and batch_size.png."""
    try:
        from cadence.data.datasets import load_data
        from cadence.errors import ConfigError
        from cadence.reports.tuning import batch_size_figure, batch_size_table
        from cadence.tuning.batch_size import advise_batch_size

        try:
            size_list = [int(s) for s in sizes.split(",") if s.strip()] if sizes else None
        except ValueError:
            raise ConfigError(
                f"--sizes must be a comma list of integers such as 16,64,256; got {sizes!r}"
            ) from None
        cfg = _run_config(config, {**overrides, "strategy.name": "mini-batch"})
        dataset = load_data(cfg.data, seed=cfg.seed)
        advice = advise_batch_size(
            None,
            dataset,
            cfg,
            sizes=size_list,
            warmup_updates=warmup,
            draws=draws,
            timing_updates=timing_updates,
        )
        record, png = _save(out, "batch-size", "batch_size", advice, dataset, batch_size_figure)
    except (CadenceError, OSError) as err:
        _fail(err, debug)
    if as_json:
        print(json.dumps(record))
    elif quiet:
        print(advice.best)
    else:
        out_console.print(batch_size_table(record))
        out_console.print(f"[bold]{advice.advice}[/]", highlight=False, soft_wrap=True)
        for note in advice.notes:
            err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
        out_console.print(f"plot: {png}")


@app.command("tune")
@config_options()
def tune(
    overrides: dict[str, Any],
    config: Annotated[Path, typer.Argument(help="YAML: run settings plus a tune: section (space, trials, ...)")],
    trials: Annotated[int | None, Opt(help="trials in the study, over every worker together")] = None,
    seconds: Annotated[float | None, Opt(help="stop starting trials after this many seconds")] = None,
    folds: Annotated[int | None, Opt(help="k-fold cross-validation (1: the validation split)")] = None,
    pruner: Annotated[str | None, Opt(help="median | successive-halving | none")] = None,
    workers: Annotated[int, Opt(help="worker processes sharing the study")] = 1,
    storage: Annotated[
        str | None, Opt(help="journal file or postgresql://... URL (default: OUT/study.journal)")
    ] = None,
    study: Annotated[str, Opt(help="study name; invocations with the same storage and name share it")] = "cadence",
    final: Annotated[
        bool | None, Opt("--final/--no-final", help="re-run the best config and report its test metrics")
    ] = None,
    out: Annotated[Path | None, Opt("--out", "-o", help="output folder (default runs/tune-<time>)")] = None,
    as_json: Annotated[bool, Opt("--json", help="print the summary as one JSON object, nothing else")] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="no per-trial lines or table")] = False,
    debug: Annotated[bool, Opt("--debug", help="show tracebacks")] = False,
) -> None:
    """Hyperparameter search with Optuna over the space in CONFIG; writes best.yaml (run it with
    `cadence train -c best.yaml`), summary.json, trials.json, plots and report.html.

    Several invocations with the same --storage and --study share one study and its trial budget.
    """
    try:
        import optuna
        import yaml

        from cadence.reports.tuning import optuna_figures, trials_table, write_tuning_report
        from cadence.tuning.search import tune as run_tune
        from cadence.tuning.space import build_tune_config, load_tune_file

        base, settings = load_tune_file(config)
        base = base.with_overrides(overrides, source=FROM_FLAGS)
        changes = {"trials": trials, "seconds": seconds, "folds": folds, "pruner": pruner, "final": final}
        tree = {
            **settings.model_dump(mode="json", exclude_unset=True),
            **{k: v for k, v in changes.items() if v is not None},
        }
        if seconds is not None and trials is None and "trials" not in settings.model_fields_set:
            tree["trials"] = None  # a time budget alone
        settings = build_tune_config(tree, source="command-line flags")
        folder = _out(out, "tune")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        result = run_tune(
            base,
            settings,
            storage=storage or folder / "study.journal",
            study_name=study,
            workers=workers,
            seeded=storage is None,
            verbose=not (quiet or as_json),
        )
        summary = {**result.to_dict(), "command": _command()}
        plots, notes = optuna_figures(result.study, folder / "plots")
        summary["plot_notes"] = notes
        (folder / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        (folder / "trials.json").write_text(json.dumps(summary["trials"], indent=1) + "\n")
        if result.best_config is not None:
            best = result.best_config.model_dump(mode="json")
            how = "trained on train + validation (refit)" if result.meta.get("refit") else "as the trial trained"
            head = (
                f"# Best of study {study!r}: trial {result.best['number']}, {result.metric} "
                f"{result.best['value']:.4f}; {how}. Run it: cadence train -c best.yaml\n"
            )
            (folder / "best.yaml").write_text(head + yaml.safe_dump(best, sort_keys=False))
        if result.final is not None:
            result.final.save(folder / "best-run")
        report = write_tuning_report(summary, plots, folder / "report.html")
    except (CadenceError, OSError) as err:
        _fail(err, debug)
    if as_json:
        print(json.dumps(summary))
        return
    if not quiet:
        out_console.print(trials_table(summary))
        if result.best:
            params = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.best["params"].items()
            )
            out_console.print(
                f"[bold]best: trial {result.best['number']}, {result.metric} {result.best['value']:.4f}[/]: "
                + params,
                highlight=False,
            )
        if result.final is not None:
            test = {k: v for k, v in result.final.test_metrics.items() if isinstance(v, float)}
            out_console.print(
                "test split (best config, trained once more): "
                + ", ".join(f"{k} {v:.4f}" for k, v in test.items()),
                highlight=False,
            )
        for note in result.meta.get("notes", []):
            err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
        if result.best_config is not None:
            out_console.print(f"best config: {folder / 'best.yaml'}  (cadence train -c {folder / 'best.yaml'})")
        out_console.print(f"report: {report}")
    if result.best is None:
        err_console.print("[bold red]error:[/] no trial completed; see trials.json for their errors")
        raise typer.Exit(1)
