"""Every bad input the error tests try, with the message it must get; docs/errors.md is rendered from
this list, and a test fails when the file and the messages drift apart.

Regenerate the doc after changing a message: `PYTHONPATH=src python tests/test_errors.py`.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import cadence
from cadence.callbacks import Checkpointing
from cadence.config import DataConfig, RunConfig, build_config, load_config
from cadence.data.datasets import from_arrays, load_data
from cadence.engine import checkpoint
from cadence.engine.checkpoint import CheckpointWarning
from cadence.errors import CadenceError

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "errors.md"
X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
Y = np.arange(40) % 2
FAST = dict(model={"spec": "logreg"}, strategy={"name": "mini-batch", "batch_size": 8}, stop={"max_updates": 4})


@dataclass
class Case:
    where: str
    bad_input: str
    run: Callable[[Path], object]  # given a fresh directory; raises, or returns a CLI result
    kind: str  # the exception class name, or "exit N" for the CLI
    match: str  # a regex the message must match: what is wrong, the value, what is allowed or the fix


def _yaml(text: str, binary: bool = False) -> Callable[[Path], object]:
    def run(tmp: Path):
        path = tmp / "run.yaml"
        path.write_bytes(text.encode("latin-1") if binary else text.encode())
        return load_config(path)

    return run


def _cli(*args: str) -> Callable[[Path], object]:
    def run(tmp: Path):
        from cadence.cli.app import app

        out = ["--out", str(tmp / "run")] if "--resume" not in args else []
        return CliRunner().invoke(app, ["train", "--quiet", *[a.replace("TMP", str(tmp)) for a in args], *out])

    return run


def _one_class_folder(tmp: Path):
    from PIL import Image

    (tmp / "pics" / "cat").mkdir(parents=True)
    Image.new("L", (4, 4)).save(tmp / "pics" / "cat" / "1.png")
    return load_data(DataConfig(name=str(tmp / "pics")))


def _csv(tmp: Path, text: str):
    (tmp / "t.csv").write_text(text)
    return load_data(DataConfig(name=str(tmp / "t.csv"), target="y"))


def _untrusted(tmp: Path):
    run = cadence.train("logreg", (X, Y), FAST)
    run.config = run.config.with_overrides({"model.spec": "no_such_probe_module:make"})  # as a forged run
    return cadence.load(run.save(tmp / "run"))


def _missing_column(tmp: Path):
    import pandas as pd

    (tmp / "t.csv").write_text("a,b,y\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(20)))
    run = cadence.train("logreg", None, {**FAST, "data": {"name": str(tmp / "t.csv"), "target": "y"}})
    return cadence.load(run.save(tmp / "run")).predict(pd.DataFrame({"a": [1.0]}))


def _stopped_run(tmp: Path) -> Path:
    """A run of 4 updates on small data, with checkpoints."""
    cadence.train(data=(X, Y), config=FAST, callbacks=[Checkpointing(tmp / "run")])
    return tmp / "run"


def _resume_changed(tmp: Path):
    cadence.train(data=(X, Y), config={**FAST, "optimizer": {"lr": 0.5}}, resume_from=_stopped_run(tmp))


def _resume_other_data(tmp: Path):
    cadence.train(data=(X[::-1].copy(), Y), config=FAST, resume_from=_stopped_run(tmp))


def _resume_corrupt_only(tmp: Path):
    run = _stopped_run(tmp)
    for path in checkpoint.checkpoint_names(checkpoint.checkpoints_dir(run)):
        (path / "model.safetensors").write_bytes(b"")
    cadence.train(data=(X, Y), config=FAST, resume_from=run)


def _from_other_model(tmp: Path):
    from cadence.engine.resume import start_from

    start_from(_stopped_run(tmp), build_config({**FAST, "model": {"spec": "mlp:4"}}), (3,), 2)


def _disk_full(tmp: Path):
    previous = checkpoint.write(tmp, {"w": torch.ones(2)}, {"state": {"updates": 1}})
    real = os.write
    os.write = lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    try:
        checkpoint.write(tmp, {"w": torch.ones(2)}, {"state": {"updates": 2}})
    finally:
        os.write = real
    return previous


def _read_only(tmp: Path):
    real = os.open

    def refuse(path, flags, *args, **kwargs):
        if flags & os.O_WRONLY:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, flags, *args, **kwargs)

    os.open = refuse
    try:
        checkpoint.write(tmp / "checkpoints", {"w": torch.ones(2)}, {"state": {"updates": 1}})
    finally:
        os.open = real


def _out_a_file(tmp: Path):
    (tmp / "f").write_text("not a folder")
    return CliRunner().invoke(app_for_cli(), ["train", "--quiet", "--max-updates", "2", "--out", str(tmp / "f")])


def _out_another_run(tmp: Path):
    args = ["train", "--quiet", "--model", "logreg", "--max-updates", "2", "--out", str(tmp / "run")]
    CliRunner().invoke(app_for_cli(), args)
    return CliRunner().invoke(app_for_cli(), args)


def app_for_cli():
    from cadence.cli.app import app

    return app


def _save_onto_a_file(tmp: Path):
    (tmp / "f").write_text("not a folder")
    cadence.train(data=(X, Y), config=FAST).save(tmp / "f")


def _rollback_without_checkpoints(tmp: Path):
    cadence.train(data=(X, Y), config={**FAST, "stop": {"max_updates": 2, "on_nonfinite": "rollback"}})


# `a` holds 9 values, `b` 9 references to `a`, ... `g` 9^7 = 4.8 million: 300 bytes of YAML.
ALIAS_BOMB = "a: &a [1,1,1,1,1,1,1,1,1]\n" + "".join(
    f"{n}: &{n} [{','.join(['*' + p] * 9)}]\n" for p, n in zip("abcdef", "bcdefg", strict=True)
)


CASES = [
    # configuration: Python dicts, YAML files and dotted overrides build the same checked RunConfig
    Case("config", "a negative learning rate", lambda t: build_config({"optimizer": {"lr": -1}}),
         "ConfigError", r"'optimizer\.lr' = -1: Input should be greater than 0"),
    Case("config", "an infinite learning rate", lambda t: build_config({"optimizer": {"lr": float("inf")}}),
         "ConfigError", r"'optimizer\.lr' = inf: Input should be a finite number"),
    Case("config", "a device name torch does not have", lambda t: build_config({"device": "gpu"}),
         "ConfigError", r"'device' = 'gpu': String should match pattern"),
    Case("config", "an unknown strategy", lambda t: build_config({"strategy": {"name": "sometimes"}}),
         "ConfigError", r"'strategy\.name' = 'sometimes'.*'full-batch', 'mini-batch', 'online'"),
    Case("config", "a misspelt section", lambda t: build_config({"optimzer": {"lr": 0.1}}),
         "ConfigError", r"unknown key 'optimzer'.*allowed keys here: data, model"),
    Case("config", "no budget at all", lambda t: build_config({"stop": {"max_epochs": None, "max_seconds": None}}),
         "ConfigError", r"set at least one budget"),
    Case("config", "an unknown non-finite policy", lambda t: build_config({"stop": {"on_nonfinite": "ignore"}}),
         "ConfigError", r"'stop\.on_nonfinite' = 'ignore'.*'stop', 'skip' or 'rollback'"),
    Case("config", "max_skips of 0", lambda t: build_config({"stop": {"max_skips": 0}}),
         "ConfigError", r"'stop\.max_skips' = 0"),
    Case("config", "a list instead of a mapping", lambda t: build_config([1, 2]),
         "ConfigError", r"\(top level\)"),
    Case("config", "a dotted key through a value", lambda t: RunConfig().with_overrides({"optimizer.lr.x": 1}),
         "ConfigError", r"unknown config key 'optimizer\.lr\.x': 'optimizer\.lr' is not a section"),
    Case("config", "a dotted key of no section", lambda t: RunConfig().with_overrides({"optim.lr": 1}),
         "ConfigError", r"'optim' is not a section\. Allowed sections: data, model"),
    Case("config file", "a missing file", lambda t: load_config(t / "nope.yaml"),
         "ConfigError", r"nope\.yaml does not exist"),
    Case("config file", "text that is not YAML", _yaml("optimizer: [lr: 0.1"),
         "ConfigError", r"is not valid YAML"),
    Case("config file", "a YAML list", _yaml("- 1\n- 2\n"),
         "ConfigError", r"must hold a mapping of sections.*got a list"),
    Case("config file", "bytes that are not UTF-8", _yaml("\xff\xfe lr", binary=True),
         "ConfigError", r"could not be read.*UTF-8"),
    Case("config file", "a directory", lambda t: load_config(t),
         "ConfigError", r"could not be read"),
    Case("config file", "nested aliases (9^7 values)", _yaml(ALIAS_BOMB),
         "ConfigError", r"expands to more than 100,000 values \(nested YAML aliases\?\)"),
    Case("config file", "a recursive alias", _yaml("a: &a [*a]\n"), "ConfigError", r"recursive alias"),
    Case("config file", "lr: true", _yaml("optimizer: {lr: true}\n"),
         "ConfigError", r"'optimizer\.lr' = True: .*expected a number, got the boolean True"),
    # data: arrays and named sets are checked before any training
    Case("data", "1-D features", lambda t: from_arrays(np.ones(5), np.zeros(5, dtype=int)),
         "DataError", r"must have shape \(n_samples, n_features\.\.\.\); got shape \(5,\)"),
    Case("data", "a NaN feature", lambda t: from_arrays(np.where(np.eye(4) > 0, np.nan, 1.0), np.arange(4)),
         "DataError", r"4 non-finite values.*row 0, feature 0"),
    Case("data", "a feature beyond float32", lambda t: from_arrays(np.full((4, 1), 1e39), np.arange(4) % 2),
         "DataError", r"beyond the float32 range"),
    Case("data", "a label out of range", lambda t: from_arrays(X, np.full(40, 7), n_classes=3),
         "DataError", r"must be in \[0, 2\] for 3 classes; got 7 at row 0"),
    Case("data", "a negative label", lambda t: from_arrays(X, Y - 1),
         "DataError", r"got -1 at row 0.*class indices start at 0"),
    Case("data", "fewer labels than samples", lambda t: from_arrays(X, Y[:30]),
         "DataError", r"has 30 rows but the features have 40"),
    Case("data", "labels that are ids, not classes", lambda t: from_arrays(X, Y * 10**7),
         "DataError", r"would mean 10000001 classes.*np\.unique"),
    Case("data", "two samples for three splits", lambda t: from_arrays(X[:2], Y[:2]),
         "DataError", r"cannot split \d samples with val_fraction=0\.1 and test_fraction=0\.2"),
    Case("data", "an unknown data set name", lambda t: load_data(DataConfig(name="imagenet")),
         "DataError", r"unknown data set 'imagenet'.*Allowed: digits, fashion-mnist, mnist"),
    # train(): the run's arguments
    Case("train()", "an unknown keyword", lambda t: cadence.train(data=(X, Y), lrate=0.1),
         "ConfigError", r"unknown train\(\) argument\(s\) \['lrate'\]"),
    Case("train()", "rollback without checkpoints", _rollback_without_checkpoints,
         "ConfigError", r"'rollback' needs checkpoints.*--checkpoint-every"),
    Case("train()", "a batch larger than the data",
         lambda t: cadence.train(data=(X, Y), config={**FAST, "strategy": {"batch_size": 64}}),
         "ConfigError", r"batch_size=64 is larger than the 28 training samples.*full-batch. Fix: lower"),
    Case("train()", "a GPU that is not there",
         lambda t: cadence.train(data=(X, Y), config={**FAST, "device": "cuda:99"}),
         "ConfigError", r"device = 'cuda:99', but this machine has .*Fix: set device to"),
    Case("train()", "saving onto a file", _save_onto_a_file,
         "SaveError", r"cannot save the run to .*f: it is a file"),
    Case("train()", "checkpoint every 0 updates", lambda t: Checkpointing(t, every_updates=0),
         "ConfigError", r"every_updates = 0 must be > 0"),
    Case("train()", "keep 0 checkpoints", lambda t: Checkpointing(t, keep=0),
         "ConfigError", r"keep = 0 must be an integer >= 1"),
    # checkpoints and resume
    Case("resume", "a run directory that does not exist", lambda t: cadence.train(resume_from=t / "nope"),
         "CheckpointError", r"cannot resume: .*nope does not exist"),
    Case("resume", "a directory without checkpoints", lambda t: cadence.train(resume_from=t),
         "CheckpointError", r"no valid checkpoint in .*\(found none\)\. Nothing was trained"),
    Case("resume", "only corrupt checkpoints", _resume_corrupt_only,
         "CheckpointError", r"found 2 invalid: ckpt-000002, ckpt-000001"),
    Case("resume", "a changed config", _resume_changed,
         "ConfigError", r"the config differs: optimizer\.lr: 0\.001 -> 0\.5\. Fix.*--allow-changes.*--from"),
    Case("resume", "other training data", _resume_other_data,
         "ConfigError", r"the training data differ \(\d+ -> \d+ samples, same count but other values\)"),
    Case("resume", "--from weights of another model", _from_other_model,
         "ConfigError", r"do not fit this model: .*Fix: use the same model spec"),
    Case("checkpoint", "a full disk", _disk_full,
         "CheckpointError", r"ckpt-000002: No space left on device; the previous checkpoint .* is intact"),
    Case("checkpoint", "an unwritable directory", _read_only,
         "CheckpointError", r"Permission denied \(.*model\.safetensors\); no earlier checkpoint exists"),
    Case("checkpoint", "a pickled object in state", lambda t: checkpoint.encode({"fn": print}, {}, "state"),
         "CheckpointError", r"cannot store state\.fn"),
    # the command line: one red line, exit 2 for config/data/checkpoint errors
    Case("CLI", "--strategy sometimes", _cli("--strategy", "sometimes"),
         "exit 2", r"Invalid value for '--strategy' / '-s': .*'sometimes' is not one of 'full-batch'"),
    Case("CLI", "--lr -1", _cli("--lr", "-1"), "exit 2", r"'optimizer\.lr' = -1\.0"),
    Case("CLI", "--resume and --from together", _cli("--resume", "TMP", "--from", "TMP"),
         "exit 2", r"Fix: pass only one"),
    Case("CLI", "--resume of an empty directory", _cli("--resume", "TMP"), "exit 2", r"no valid checkpoint"),
    Case("CLI", "--checkpoint-every 0", _cli("--checkpoint-every", "0"), "exit 2", r"every_updates = 0"),
    Case("CLI", "--on-nonfinite ignore", _cli("--on-nonfinite", "ignore"),
         "exit 2", r"'--on-nonfinite': .*'ignore' is not one of 'stop', 'skip', 'rollback'"),
    Case("CLI", "--lr true", _cli("--lr", "true"), "exit 2", r"'--lr': Input should be a valid number"),
    Case("CLI", "--set lr", _cli("--set", "lr"), "exit 2", r"'lr' is not KEY=VALUE \(e\.g\. optimizer\.lr=0\.1\)"),
    Case("CLI", "--set optimizer.lr=true", _cli("--set", "optimizer.lr=true"),
         "exit 2", r"in command-line flags:\s+'optimizer\.lr' = True: .*expected a number"),
    Case("CLI", "--config of a missing file", _cli("--config", "TMP/missing.yaml"), "exit 2", r"does not exist"),
    Case("CLI", "--lr inf", _cli("--lr", "inf"), "exit 2", r"'optimizer\.lr' = inf: Input should be a finite"),
    Case("CLI", "--engine gpu", _cli("--engine", "gpu"), "exit 2", r"'--engine'.*'gpu' is not one of 'auto'"),
    Case("CLI", "--out a file", _out_a_file, "exit 2", r"--out .*f is a file, not a folder"),
    Case("CLI", "--out of another run", _out_another_run, "exit 2", r"holds another run .*--overwrite"),
    # data parallel (issue 14): refused before any process starts
    Case("CLI", "--nproc 2 --strategy online", _cli("--nproc", "2", "--strategy", "online"),
         "exit 2", r"strategy 'online' trains one sample per update.*refused\. Fix: use mini-batch"),
    Case("CLI", "--nproc 2 --batch-size 1", _cli("--nproc", "2", "--batch-size", "1"),
         "exit 2", r"batch_size=1 is smaller than the 2 processes"),
    Case("CLI", "--nproc 2 --max-restarts 1 without checkpoints", _cli("--nproc", "2", "--max-restarts", "1"),
         "exit 2", r"--max-restarts 1 restarts the job from its last checkpoint, and this run writes none"),
    Case("CLI", "--max-restarts without --nproc", _cli("--max-restarts", "1"),
         "exit 2", r"--max-restarts: option\(s\) of a data-parallel job, which --nproc starts\. Fix: add --nproc"),
    # model specs (issue 10): one line each, before anything is built
    Case("CLI", "--model os:system", _cli("--model", "os:system"),
         "exit 2", r"failed when called as os\.system\(input_shape=\(64,\), n_outputs=10\): TypeError"),
    Case("CLI", "--model torch.nn:Linear", _cli("--model", "torch.nn:Linear"),
         "exit 2", r"torch\.nn:Linear' failed when called as .* Fix: give a function that takes"),
    Case("CLI", "--model mlp:", _cli("--model", "mlp:"), "exit 2", r"names no hidden widths"),
    Case("CLI", "--model mlp:64,,", _cli("--model", "mlp:64,,"), "exit 2", r"hidden width 2 is empty"),
    Case("data", "a one-class image folder", lambda t: _one_class_folder(t),
         "DataError", r"has one class subfolder \(cat\); a classifier needs at least two"),
    Case("data", "a CSV value of 1e39", lambda t: _csv(t, "a,y\n1,0\n1e39,1\n"),
         "DataError", r"line 3, column 'a': '1e39' is beyond float32"),
    Case("data", "a CSV target mixing numbers and text", lambda t: _csv(t, "a,y\n1,0.5\n2,n/a\n"),
         "DataError", r"target column 'y' mixes numbers \('0\.5' at line 2\) and text \('n/a' at line 3\)"),
    Case("model", "a run naming a factory, not trusted", lambda t: _untrusted(t),
         "ConfigError", r"asks to import module 'no_such_probe_module' .* pass --trust-code"),
    Case("model", "predict without a training column", lambda t: _missing_column(t),
         "DataError", r"lack the column\(s\) 'b' the model was trained on"),
]  # fmt: skip


def outcome(case: Case, tmp: Path) -> tuple[str, str]:
    """(kind, message) the case gets: an exception's class and text, or a CLI exit code and stderr;
    the directory it ran in is written `<dir>`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointWarning)  # the skipped checkpoints of case "only corrupt"
        try:
            result = case.run(tmp)
        except CadenceError as err:
            return type(err).__name__, _normalize(str(err), tmp)
    if hasattr(result, "exit_code"):
        return f"exit {result.exit_code}", _normalize(_unbox(result.stderr.removeprefix("error: ").strip()), tmp)
    return "no error", repr(result)


def _unbox(stderr: str) -> str:
    """The text inside typer's usage-error panel (`│ Invalid value for ... │`), or stderr as it is."""
    inside = [line.strip("│ ") for line in stderr.splitlines() if line.startswith("│")]
    return " ".join(inside) if inside else stderr


def _normalize(message: str, tmp: Path) -> str:
    message = message.replace(str(tmp), "<dir>")
    return re.sub(r"\.tmp-(ckpt-\d+)-\d+", r".tmp-\1-<pid>", message)


SEEN: dict[int, tuple[str, str]] = {}  # outcomes the case test already computed, reused by the doc test


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.where}: {c.bad_input}")
def test_bad_input_gets_an_error_saying_what_is_wrong_and_how_to_fix_it(case, tmp_path):
    kind, message = SEEN[CASES.index(case)] = outcome(case, tmp_path)
    assert kind == case.kind, message
    assert re.search(case.match, message, re.S), message
    assert "Traceback" not in message


def _property_counts() -> list[tuple[str, int]]:
    counts = []
    for path in sorted(ROOT.glob("tests/**/*_fuzz.py")):
        examples = int(re.search(r"^EXAMPLES = (\d+)", path.read_text(), re.M).group(1))
        for name in re.findall(r"^def (test_\w+)", path.read_text(), re.M):
            counts.append((f"{path.relative_to(ROOT)}::{name}", examples))
    return counts


def render() -> str:
    rows = []
    for i, case in enumerate(CASES, 1):
        if i - 1 not in SEEN:
            with tempfile.TemporaryDirectory() as tmp:
                SEEN[i - 1] = outcome(case, Path(tmp))
        kind, message = SEEN[i - 1]
        cell = message.replace("|", "\\|").replace("\n", "<br>")
        rows.append(f"| {i} | {case.where} | {case.bad_input} | {kind} | {cell} |")
    props = _property_counts()
    lines = [
        "# Errors: every bad input the tests try, and the message it gets",
        "",
        "Generated from `tests/test_errors.py` (`PYTHONPATH=src python tests/test_errors.py`); a test fails",
        "when this file and the messages drift apart. `<dir>` stands for the directory a case ran in.",
        "The CLI prints the message as one red `error:` line and exits with the code shown (2 for",
        "configuration, data and checkpoint errors); `--debug` shows the traceback.",
        "",
        "| # | Where | Bad input | Error | Message |",
        "|---|-------|-----------|-------|---------|",
        *rows,
        "",
        "## Random bad input (hypothesis property tests)",
        "",
        "Each property test tries this many generated inputs per run and requires a ConfigError or DataError",
        "(or success), never another exception:",
        "",
        *[f"- `{name}`: {n} examples" for name, n in props],
        "",
        f"In all: {len(CASES)} listed cases and {sum(n for _, n in props)} generated inputs per run.",
        "",
    ]
    return "\n".join(lines)


def test_docs_errors_md_lists_every_case_with_its_current_message():
    assert DOC.exists(), "run: PYTHONPATH=src python tests/test_errors.py"
    assert DOC.read_text() == render(), "docs/errors.md is stale; run: PYTHONPATH=src python tests/test_errors.py"


if __name__ == "__main__":
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render())
    print(f"wrote {DOC} ({len(CASES)} cases)", file=sys.stderr)
