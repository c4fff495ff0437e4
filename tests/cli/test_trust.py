"""A factory that only a file names (a checkpoint, a run) is never imported unless the user names it or trusts
it: a forged checkpoint, its manifest recomputed so it is valid, cannot make `--resume` run code."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

import cadence
from cadence.cli.app import app
from cadence.engine import checkpoint
from cadence.errors import ConfigError

FAST = ["--data", "digits", "--model", "logreg", "--threads", "1", "--quiet"]
PROBE = "cadence_probe_forged"  # a module whose import leaves a marker file


@pytest.fixture
def probe(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / f"{PROBE}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from torch import nn\n"
        "def make(input_shape, n_outputs):\n    return nn.Linear(input_shape[0], n_outputs)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop(PROBE, None)


def forge(ckpt_dir, spec: str) -> None:
    """Rewrite the checkpoint's config to name `spec`, then recompute the manifest: a valid checkpoint."""
    state = json.loads((ckpt_dir / "state.json").read_text())
    state["config"]["model"]["spec"] = spec
    (ckpt_dir / "state.json").write_bytes(json.dumps(state, sort_keys=True).encode())
    files = {name: (ckpt_dir / name).read_bytes() for name in checkpoint.FILES}
    body = json.loads((ckpt_dir / checkpoint.MANIFEST).read_text())["body"]
    info = {k: body[k] for k in ("updates", "stop_reason")}
    (ckpt_dir / checkpoint.MANIFEST).write_bytes(checkpoint._manifest_bytes(files, info))
    assert checkpoint.read(ckpt_dir).meta["config"]["model"]["spec"] == spec  # it verifies


@pytest.fixture
def forged_run(tmp_path):
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["train", *FAST, "--max-updates", "20", "--checkpoint-every", "10", "--out", str(run_dir)]
    )
    assert result.exit_code == 0, result.output
    forge(checkpoint.find(run_dir).path, f"{PROBE}:make")
    return run_dir


def test_resume_from_a_forged_checkpoint_refuses_without_importing(forged_run, probe):
    result = CliRunner().invoke(app, ["train", "--resume", str(forged_run), "--quiet"])
    assert result.exit_code == 2
    assert f"asks to import module '{PROBE}'" in result.output and "--trust-code" in result.output
    assert PROBE not in sys.modules and not probe.exists()


def test_python_resume_from_a_forged_checkpoint_refuses_without_importing(forged_run, probe):
    with pytest.raises(ConfigError, match=f"asks to import module '{PROBE}'"):
        cadence.train(resume_from=forged_run)
    assert PROBE not in sys.modules and not probe.exists()


def test_from_a_forged_run_refuses_without_importing(forged_run, probe):
    result = CliRunner().invoke(app, ["train", "--from", str(forged_run), "--epochs", "1", "--quiet"])
    assert result.exit_code == 2 and f"asks to import module '{PROBE}'" in result.output
    assert PROBE not in sys.modules and not probe.exists()


def test_trust_code_imports_it(forged_run, probe):
    """The control: the same checkpoint with --trust-code does import the module (then its weights do not
    fit the forged model, which is refused)."""
    result = CliRunner().invoke(app, ["train", "--resume", str(forged_run), "--trust-code", "--quiet"])
    assert probe.exists() and PROBE in sys.modules
    assert result.exit_code == 2 and "do not fit this model" in result.output


def test_predict_on_a_run_naming_a_factory_refuses_without_importing(tmp_path, probe):
    run = cadence.train(f"{PROBE}:make", cadence.load_data(), max_epochs=1, threads=1)
    run.save(tmp_path / "run")
    sys.modules.pop(PROBE)
    probe.unlink()
    (tmp_path / "x.csv").write_text(",".join(f"f{i}" for i in range(64)) + "\n" + ",".join(["0"] * 64) + "\n")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "run"), "--data", str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and f"asks to import module '{PROBE}'" in result.output
    assert PROBE not in sys.modules and not probe.exists()
    named = CliRunner().invoke(
        app, ["predict", str(tmp_path / "run"), "--data", str(tmp_path / "x.csv"), "--model", f"{PROBE}:make"]
    )
    assert named.exit_code == 0, named.output
    assert named.stdout.startswith("row,prediction,p_0")
