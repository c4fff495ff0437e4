"""Exactly-once effect: a learner killed with SIGKILL at points of the checkpoint/ack protocol and restarted
trains every message once (ledger), leaves nothing pending, and ends with the weights of an uninterrupted run."""

from __future__ import annotations

import multiprocessing
import os
import random
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from cadence.config import build_config
from cadence.data.streams.redis import RedisSource
from cadence.data.streams.replay import load_raw, replay
from cadence.engine import checkpoint
from cadence.serve.learner import CRASH_ENV, StreamLearner

SETTINGS = {
    "model": {"spec": "mlp:16"},
    "optimizer": {"name": "momentum", "lr": 0.02, "momentum": 0.9},
    "stream": {
        "n_features": 64,
        "n_classes": 10,
        "center": 8.0,
        "scale": 6.0,
        "read_count": 64,
        "checkpoint_every_samples": 700,
        "checkpoint_seconds": None,
        "publish_seconds": None,
        "idle_seconds": 0.5,
        "ledger": True,
        "drift": {"detector": "none"},
    },
}


def _cadence_stream(url: str, run_dir: Path, config: Path) -> subprocess.CompletedProcess:
    cmd = [
        str(Path(sys.executable).parent / "cadence"),
        "stream",
        url,
        "--config",
        str(config),
        "--out",
        str(run_dir),
    ]
    return subprocess.run(cmd, env={**os.environ, CRASH_ENV: ""}, capture_output=True, text=True, timeout=120)


def _learn_until_killed(url: str, run_dir: Path, crash: str) -> int:
    """A learner in a forked process (no second torch import) that SIGKILLs itself at `crash`; its exit code."""

    def child() -> None:
        os.environ[CRASH_ENV] = crash
        StreamLearner(build_config(SETTINGS), RedisSource(url), run_dir, log=lambda s: None).run()

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(timeout=120)
    return proc.exitcode


def test_sigkill_at_five_protocol_points_trains_each_message_once(redis_server, stream_name, tmp_path, one_thread):
    x, y = load_raw("digits")
    sent = replay(x, y, redis_server.url(stream_name), limit=10_000, repeat=6, keep_ids=True).ids
    assert len(sent) == 10_000
    config = tmp_path / "stream.yaml"
    config.write_text(yaml.safe_dump(SETTINGS))
    run_dir = tmp_path / "killed"

    # Five kills: between training and checkpoint, between checkpoint and XACK, after a read, after an ack,
    # and one more of those at random. Each run gets far enough to checkpoint what the last one left pending,
    # so no message is delivered more than max_deliveries times.
    rng = random.Random(12)
    points = [("trained", rng.randint(15, 40)), ("checkpointed", rng.randint(1, 3))]
    points += [("read", rng.randint(15, 40)), ("acked", rng.randint(1, 3))]
    points.append(rng.choice([("trained", rng.randint(15, 40)), ("checkpointed", rng.randint(1, 3))]))
    rng.shuffle(points)
    for phase, n in points:
        assert _learn_until_killed(redis_server.url(stream_name), run_dir, f"{phase}:{n}") == -9, (phase, n)
    done = _cadence_stream(redis_server.url(stream_name), run_dir, config)  # the CLI continues the run
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained" in done.stderr

    final = checkpoint.latest(checkpoint.checkpoints_dir(run_dir))
    ledger = final.meta["stream"]["ledger"]
    assert len(ledger) == len(set(ledger)) == 10_000  # none trained twice
    assert ledger == sent  # every message, in stream order
    assert final.meta["stream"]["counts"]["dead_letters"] == 0
    assert final.meta["stream"]["counts"]["acked_without_training"] > 0  # the kill after a checkpoint
    r = redis_server.client()
    assert r.xpending(stream_name, "cadence")["pending"] == 0

    # The same messages learned in one go, on a stream of their own.
    ref_stream = stream_name + "-reference"
    replay(x, y, redis_server.url(ref_stream), limit=10_000, repeat=6)
    cfg = build_config(SETTINGS)
    learner = StreamLearner(
        cfg, RedisSource(redis_server.url(ref_stream)), tmp_path / "reference", log=lambda s: None
    )
    learner.run()
    assert learner.counts["samples_trained"] == 10_000
    for name, value in learner.model.state_dict().items():
        assert torch.equal(final.weights[name], value), name
