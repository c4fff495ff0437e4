"""`cadence replay`, `cadence stream` (with --from) end to end, then the run directory they wrote."""

from __future__ import annotations

import orjson
from typer.testing import CliRunner

from cadence.cli.app import app
from cadence.engine import checkpoint

runner = CliRunner()


def test_replay_then_stream_from_an_earlier_run(redis_server, stream_name, tmp_path):
    trained = tmp_path / "trained"
    args = ["train", "--data", "digits", "--model", "mlp:16", "--epochs", "5", "--optimizer", "adam",
            "--lr", "0.01", "--standardize", "global", "--quiet", "--out", str(trained)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    url = redis_server.url(stream_name)
    result = runner.invoke(app, ["replay", "digits", "--to", url, "--limit", "500", "--malformed-rate", "0.01"])
    assert result.exit_code == 0, result.output
    assert "sent 505 messages (500 samples, malformed:" in result.output

    run_dir = tmp_path / "live"
    args = ["stream", url, "--from", str(trained), "--idle-seconds", "0.3",
            "--out", str(run_dir)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "trained 500 samples" in result.output and "5 dead letters" in result.output
    final = checkpoint.latest(checkpoint.checkpoints_dir(run_dir))
    assert final.meta["config"]["model"]["spec"] == "mlp:16"  # the earlier run's model, 64 in, 10 out
    assert final.meta["stream"]["counts"]["samples_trained"] == 500
    records = [orjson.loads(line) for line in (run_dir / "history.jsonl").read_bytes().splitlines()]
    assert records[-1]["samples"] == 500
    # Started from the trained model and its global standardization (the artefact's: no --center/--scale
    # given), it is right from the start: measured 0.972.
    assert records[-1]["accuracy"] > 0.9
    assert (run_dir / "published" / "LATEST").is_file()


def test_stream_refuses_a_bad_address_with_the_fix(tmp_path):
    result = runner.invoke(app, ["stream", "redis://127.0.0.1:1", "--features", "4", "--classes", "2"])
    assert result.exit_code == 1
    assert "redis://HOST:PORT/STREAM" in result.output
