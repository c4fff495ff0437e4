"""Run-config flags generated from config.py: every key reachable, help and default shown, aliases, --set,
--print-config, -h, --version, completion, and the decorator other commands reuse."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

import cadence
from cadence.cli.app import COMPARE_SETS, app
from cadence.cli.flags import config_options, flag_names
from cadence.config_keys import config_keys

SRC = str(Path(__file__).resolve().parents[2] / "src")


def options(command: str) -> dict[str, Any]:
    """{flag: click option} of a command, hidden aliases included."""
    click_command = typer.main.get_command(app).commands[command]
    return {opt: p for p in click_command.params for opt in (*p.opts, *p.secondary_opts)}


def printed_config(*args: str) -> dict:
    result = CliRunner().invoke(app, ["train", "--print-config", *args])
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.stdout)


def test_every_config_key_is_a_train_flag_with_its_description_and_default():
    flags = options("train")
    for key in config_keys():
        flag = flag_names(key)[0]
        assert flag in flags, f"{key.dotted} has no flag"
        help_text = flags[flag].help.replace("\\[", "[")
        assert key.field.description in help_text
        if key.default is not None:
            assert "[default: " in help_text, f"{flag} does not show its default"
        else:
            assert "[default: " not in help_text  # None: not set, or chosen at run time (described)


@pytest.mark.parametrize(
    ("args", "dotted", "value"),
    [
        (["--activation", "tanh"], "model.activation", "tanh"),
        (["--batch-norm"], "model.batch_norm", True),
        (["--val-fraction", "0.25"], "data.val_fraction", 0.25),
        (["--device", "cuda:1"], "device", "cuda:1"),
        (["--betas", "0.8", "0.95"], "optimizer.betas", [0.8, 0.95]),
        (["--eps", "1e-6"], "optimizer.eps", 1e-6),
        (["--no-shuffle"], "strategy.shuffle", False),
        (["--no-restore-best-weights"], "stop.restore_best_weights", False),
        (["--regularization-exclude", "bias"], "regularization.exclude", ["bias"]),
        (["--regularization-exclude", ""], "regularization.exclude", []),
        (["--plateau-patience", "3"], "schedule.plateau.patience", 3),
        (["--eval-batch-size", "128"], "eval.batch_size", 128),
        (["-d", "mnist", "-m", "logreg", "-s", "online", "-b", "8", "-e", "2"], "model.spec", "logreg"),
    ],
)
def test_flags_reach_their_config_key(args, dotted, value):
    tree = printed_config(*args)
    for part in dotted.split("."):
        tree = tree[part]
    assert tree == value


def test_short_flags_and_old_spellings_set_the_same_keys_as_the_long_ones():
    short = printed_config("-d", "mnist", "-s", "online", "-b", "8", "-e", "2")
    long = printed_config("--data", "mnist", "--strategy", "online", "--batch-size", "8", "--max-epochs", "2")
    assert short == long and long["stop"]["max_epochs"] == 2 and long["data"]["name"] == "mnist"
    old = printed_config("--epochs", "2", "--eval-every", "7", "--early-stopping", "val_loss", "--patience", "2")
    assert old["stop"]["max_epochs"] == 2 and old["eval"]["every_updates"] == 7
    assert old["stop"]["early_stopping_metric"] == "val_loss" and old["stop"]["early_stopping_patience"] == 2


def test_aliases_are_hidden_from_help_but_named_in_it():
    flags = options("train")
    assert flags["--epochs"].hidden and not flags["--max-epochs"].hidden
    assert "(also --epochs)" in flags["--max-epochs"].help
    result = CliRunner().invoke(app, ["train", "--max-epochs", "2", "--epochs", "3", "--print-config"])
    assert result.exit_code == 2 and "stop.max_epochs given twice" in result.output


def test_set_reaches_any_key_by_dotted_or_short_name_and_reads_yaml_values():
    tree = printed_config(
        *("--set", "optimizer.betas=[0.5, 0.6]", "--set", "plateau_patience=4", "--set", "stop.max_epochs=null"),
        *("--set", "max_updates=30", "--set", "data.name=007"),
    )
    assert tree["optimizer"]["betas"] == [0.5, 0.6] and tree["schedule"]["plateau"]["patience"] == 4
    assert tree["stop"]["max_epochs"] is None and tree["stop"]["max_updates"] == 30
    assert tree["data"]["name"] == "007"  # a text key keeps the text, not YAML's number 7


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "lr"], "'lr' is not KEY=VALUE"),
        (["--set", "lrate=0.1"], "unknown config key 'lrate'"),
        (["--lr", "0.1", "--set", "optimizer.lr=0.2"], "optimizer.lr given by a flag and by --set"),
    ],
)
def test_bad_set_is_a_usage_error_naming_it(args, message):
    result = CliRunner().invoke(app, ["train", "--print-config", *args])
    assert result.exit_code == 2 and message in result.output


def test_set_of_an_unknown_dotted_key_is_a_config_error(tmp_path):
    result = CliRunner().invoke(app, ["train", "--set", "optimizer.learning_rate=0.1", "--print-config"])
    assert result.exit_code == 2
    assert "invalid configuration in command-line flags" in result.stderr
    assert "unknown key 'optimizer.learning_rate'" in result.stderr


def test_print_config_applies_file_then_flags_and_trains_nothing(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("optimizer: {name: adam, lr: 0.001}\nstop: {max_epochs: 4}\n")
    tree = printed_config("-c", str(cfg), "--lr", "0.003", "--out", str(tmp_path / "run"))
    assert tree["optimizer"]["name"] == "adam" and tree["optimizer"]["lr"] == 0.003
    assert tree["stop"]["max_epochs"] == 4
    assert not (tmp_path / "run").exists()
    again = printed_config("-c", str(cfg), "--lr", "0.003")
    assert cadence.build_config(again) == cadence.build_config(tree)  # the printed YAML is a valid config


def test_compare_offers_run_flags_but_not_what_its_grid_sets():
    flags = options("compare")
    for key in config_keys():
        flag = flag_names(key)[0]
        owned = any(key.dotted == e or key.dotted.startswith(e + ".") for e in COMPARE_SETS)
        if not owned:
            assert flag in flags, flag
    assert "--optimizer" not in flags and "--momentum" not in flags and "--schedule" not in flags
    assert "--strategies" in flags and "--max-epochs" in flags and "--epochs" in flags
    result = CliRunner().invoke(app, ["compare", "--set", "optimizer.momentum=0.9", "--print-config"])
    assert result.exit_code == 2 and "optimizer.momentum is set by this command itself" in result.output


def test_compare_print_config_is_a_file_compare_reads_back(tmp_path):
    args = ["compare", "--activation", "tanh", "--strategies", "online,mini-batch:16", "--max-samples", "500"]
    result = CliRunner().invoke(app, [*args, "--print-config"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "compare.yaml"
    path.write_text(result.stdout)
    base, settings = cadence.comparison.load_compare_file(path)
    assert base.model.activation == "tanh" and settings.budget.samples == 500
    assert [s.batch_size for s in settings.strategies] == [None, 16]


@pytest.mark.parametrize("command", [[], ["train"], ["compare"]])
def test_help_answers_to_h_and_flags_show_no_value_type(command):
    result = CliRunner().invoke(app, [*command, "-h"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "Usage:" in result.output
    assert "<bool>" not in result.output  # typer 0.29 labels flags that way


def test_version_prints_the_package_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"cadence {cadence.__version__}"
    from importlib.metadata import version

    assert version("cadence") == cadence.__version__  # pyproject reads it from cadence/__init__.py


def _complete(words: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": SRC, "_CADENCE_COMPLETE": "complete_bash", "COMP_WORDS": words}
    env["COMP_CWORD"] = str(len(words.split()) - (0 if words.endswith(" ") else 1))
    script = "from cadence.cli.app import app; app(prog_name='cadence')"
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    return proc.stdout.split()


def test_shell_completion_offers_flags_and_choices():
    assert "--optimizer" in _complete("cadence train --optim")
    assert _complete("cadence train --optimizer ada") == ["adagrad", "adam", "adamw"]
    assert "full-batch" in _complete("cadence train --strategy ")


def test_the_cli_imports_no_torch_sklearn_or_matplotlib():
    code = (
        "import sys, cadence, cadence.cli.app; "
        "print(sorted(m for m in ('torch', 'sklearn', 'matplotlib', 'numpy', 'pandas') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_config_options_adds_the_run_flags_to_any_command():
    toy = typer.Typer()
    seen: dict = {}

    @toy.command()
    @config_options(exclude=["optimizer", "stop.max_epochs"])
    def fit(overrides: dict, lr: float = 0.5) -> None:  # its own --lr wins over none (optimizer is excluded)
        seen.update(overrides, own_lr=lr)

    result = CliRunner().invoke(toy, ["--activation", "gelu", "--set", "seed=3", "--lr", "0.1"])
    assert result.exit_code == 0, result.output
    assert seen == {"model.activation": "gelu", "seed": 3, "own_lr": 0.1}
    bad = CliRunner().invoke(toy, ["--max-epochs", "3"])
    assert bad.exit_code == 2 and "No such option" in bad.output
