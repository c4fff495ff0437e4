"""`cadence stream`, `cadence serve` and `cadence replay`: learn from a live stream while serving, serve a
run's published snapshots read-only, and stream a data set into Redis. Library calls are imported inside."""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from cadence.cli.app import _fail, _warnings_to_stderr, app, err_console
from cadence.errors import CadenceError

Opt = typer.Option
TOKEN_ENV = "CADENCE_SERVE_TOKEN"  # a bearer token for the API; an environment variable keeps it out of `ps`
STREAM_FLAGS = {
    "model": "model.spec",
    "optimizer": "optimizer.name",
    "lr": "optimizer.lr",
    "momentum": "optimizer.momentum",
    "seed": "seed",
    "group": "stream.group",
    "consumer": "stream.consumer",
    "features": "stream.n_features",
    "classes": "stream.n_classes",
    "task": "stream.task",
    "center": "stream.center",
    "scale": "stream.scale",
    "batch_size": "stream.batch_size",
    "label_delay": "stream.label_delay",
    "window": "stream.window",
    "drift": "stream.drift.detector",
    "on_drift": "stream.drift.reaction",
    "checkpoint_every": "stream.checkpoint_every_samples",
    "checkpoint_seconds": "stream.checkpoint_seconds",
    "publish_seconds": "stream.publish_seconds",
    "idle_seconds": "stream.idle_seconds",
    "max_samples": "stream.max_samples",
    "claim_idle_ms": "stream.claim_idle_ms",
    "max_message_bytes": "stream.max_message_bytes",
    "ledger": "stream.ledger",
}


@app.command()
def stream(
    source: Annotated[str, typer.Argument(help="redis://HOST:PORT/STREAM, a .jsonl file, or - for stdin")],
    config: Annotated[
        Path | None, Opt("--config", "-c", help="YAML config (a stream: section); flags override")
    ] = None,
    out: Annotated[Path | None, Opt(help="run directory: checkpoints, history, published snapshots")] = None,
    from_run: Annotated[
        Path | None, Opt("--from", help="start from an earlier RUN_DIR's model, labels and standardization")
    ] = None,
    serve: Annotated[
        str | None, Opt(help="serve /predict, /metrics, /stats, /health on HOST:PORT (or PORT)")
    ] = None,
    follow: Annotated[bool, Opt(help="JSONL: wait for appended lines, as tail -f")] = False,
    features: Annotated[int | None, Opt(help="features per message")] = None,
    classes: Annotated[int | None, Opt(help="classes (labels 0..K-1)")] = None,
    task: Annotated[str | None, Opt(help="classification | regression")] = None,
    model: Annotated[str | None, Opt(help="mlp:128,64 | logreg | ...")] = None,
    optimizer: Annotated[str | None, Opt(help="sgd | momentum | adam | ...")] = None,
    lr: Annotated[float | None, Opt(help="learning rate")] = None,
    momentum: Annotated[float | None, Opt()] = None,
    seed: Annotated[int | None, Opt()] = None,
    group: Annotated[str | None, Opt(help="Redis consumer group")] = None,
    consumer: Annotated[str | None, Opt(help="this learner's consumer name")] = None,
    center: Annotated[float | None, Opt(help="preprocessing: x' = (x - center) / scale")] = None,
    scale: Annotated[float | None, Opt()] = None,
    batch_size: Annotated[int | None, Opt(help="1: one update per sample; k: micro-batches")] = None,
    label_delay: Annotated[int | None, Opt(help="train each sample after N later ones arrived")] = None,
    window: Annotated[int | None, Opt(help="samples in the sliding-window metrics")] = None,
    drift: Annotated[str | None, Opt(help="adwin | page-hinkley | none")] = None,
    on_drift: Annotated[str | None, Opt(help="log | reset-optimizer | snapshot")] = None,
    checkpoint_every: Annotated[int | None, Opt(help="checkpoint every N samples")] = None,
    checkpoint_seconds: Annotated[float | None, Opt(help="checkpoint every S seconds")] = None,
    publish_seconds: Annotated[float | None, Opt(help="publish a snapshot to serving every S seconds")] = None,
    idle_seconds: Annotated[float | None, Opt(help="stop after S seconds without a message")] = None,
    max_samples: Annotated[int | None, Opt(help="stop after training N samples")] = None,
    claim_idle_ms: Annotated[int | None, Opt(help="take over entries other consumers left idle this long")] = None,
    max_message_bytes: Annotated[int | None, Opt(help="larger messages are dead-lettered")] = None,
    ledger: Annotated[
        bool | None, Opt("--ledger/--no-ledger", help="record every trained id in checkpoints")
    ] = None,
    allow_changes: Annotated[bool, Opt(help="continue --out with a changed config")] = False,
    debug: Annotated[bool, Opt(help="show tracebacks")] = False,
) -> None:
    """Learn online from a stream (test-then-train) with exactly-once checkpoints, optionally serving.

    Predictions come from the latest published snapshot (--serve). Rerun the same command to continue
    after a crash: nothing is lost or trained twice."""
    flags = {k: v for k, v in locals().items() if k in STREAM_FLAGS and v is not None}
    server = None
    try:
        from cadence.config import build_config, load_config
        from cadence.data.streams import open_source
        from cadence.serve import Server, StreamLearner, create_app, parse_address

        with _warnings_to_stderr():
            cfg = load_config(config) if config else build_config()
            cfg = cfg.with_overrides({"stream.source": source, **{STREAM_FLAGS[k]: v for k, v in flags.items()}})
            start = None
            if from_run is not None:
                from cadence.serve.incremental import start_from

                start = start_from(from_run, cfg)
                cfg = start.config
            address = parse_address(serve) if serve else None
            run_dir = out or Path("runs") / f"{datetime.now():%Y%m%d-%H%M%S}-stream"
            sc = cfg.stream
            if source.startswith("redis://"):
                src = open_source(source, group=sc.group, consumer=sc.consumer, claim_idle_ms=sc.claim_idle_ms)
            else:
                ckpt_last = _jsonl_start(run_dir)
                src = open_source(source, follow=follow, start_after=ckpt_last, dead_path=run_dir / "dead.jsonl")
            begin = {} if start is None else {k: getattr(start, k) for k in ("model", "n_features", "n_classes")}
            if start is not None and start.center is not None:
                begin |= {"center": start.center, "scale": start.scale}  # a per-feature standardization
            learner = StreamLearner(cfg, src, run_dir, allow_changes=allow_changes, **begin)
            if address is not None:
                api = create_app(learner.store, learner.stats, token=os.environ.get(TOKEN_ENV) or None)
                server = Server(api, *address).start()
                err_console.print(f"serving on http://{address[0]}:{server.port}", highlight=False)
            t0 = time.perf_counter()
            reason = learner.run()
        s = learner.stats()
        err_console.print(
            f"{reason}: trained {s['samples_trained']} samples in {time.perf_counter() - t0:.1f} s, "
            f"{s['dead_letters']} dead letters, accuracy {s.get('accuracy', float('nan')):.4f}; run directory: "
            f"{run_dir}",
            highlight=False,
            soft_wrap=True,
        )
    except (CadenceError, OSError) as err:
        _fail(err, debug)
    finally:
        if server is not None:
            server.stop()


def _jsonl_start(run_dir: Path) -> int:
    """The line a JSONL stream continues after: the newest checkpoint's last trained line, else 0."""
    from cadence.engine import checkpoint

    ckpt = checkpoint.latest(checkpoint.checkpoints_dir(run_dir)) if run_dir.is_dir() else None
    last = ckpt.meta.get("stream", {}).get("last_id") if ckpt else None
    return int(last) if last is not None else 0


@app.command("serve")
def serve_run(
    run_dir: Annotated[Path, typer.Argument(help="a run directory a `cadence stream` learner publishes into")],
    serve: Annotated[str, Opt(help="HOST:PORT (or PORT) to listen on")] = "127.0.0.1:8000",
    poll_seconds: Annotated[float, Opt(help="how often to look for a newer snapshot")] = 0.5,
    debug: Annotated[bool, Opt(help="show tracebacks")] = False,
) -> None:
    """A read-only replica: serve the latest snapshot published into RUN_DIR, reloading each new one."""
    try:
        from cadence.serve import Replica, Server, create_app, parse_address

        replica = Replica(run_dir, poll_seconds).start()
        api = create_app(replica.store, replica.stats, token=os.environ.get(TOKEN_ENV) or None)
        host, port = parse_address(serve)
        server = Server(api, host, port).start()
        err_console.print(f"serving {run_dir} on http://{host}:{server.port}", highlight=False)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
            replica.stop()
    except (CadenceError, OSError) as err:
        _fail(err, debug)


@app.command()
def replay(
    dataset: Annotated[str, typer.Argument(help="digits | fashion-mnist | mnist | file.csv | file.jsonl")],
    to: Annotated[str, Opt(help="redis://HOST:PORT/STREAM")],
    rate: Annotated[float | None, Opt(help="messages per second (default: as fast as possible)")] = None,
    drift_at: Annotated[int | None, Opt(help="permute the labels from sample K on (concept drift)")] = None,
    malformed_rate: Annotated[float, Opt(help="fraction of extra malformed messages, of every kind")] = 0.0,
    limit: Annotated[int | None, Opt(help="send at most N samples")] = None,
    repeat: Annotated[int, Opt(help="passes over the data set")] = 1,
    target: Annotated[str | None, Opt(help="target column of a CSV file")] = None,
    data_dir: Annotated[Path | None, Opt(help="where fashion-mnist/mnist files are")] = None,
    seed: Annotated[int, Opt()] = 0,
    debug: Annotated[bool, Opt(help="show tracebacks")] = False,
) -> None:
    """Stream a data set into Redis (one {"x": [...], "y": label} message per sample)."""
    try:
        from cadence.data.streams.replay import load_raw
        from cadence.data.streams.replay import replay as send

        x, y = load_raw(dataset, target=target, data_dir=data_dir)
        t0 = time.perf_counter()
        report = send(
            x,
            y,
            to,
            rate=rate,
            drift_at=drift_at,
            malformed_rate=malformed_rate,
            limit=limit,
            repeat=repeat,
            seed=seed,
        )
    except (CadenceError, OSError) as err:
        _fail(err, debug)
    bad = ", ".join(f"{k} {v}" for k, v in sorted(report.malformed.items()))
    err_console.print(
        f"sent {report.sent} messages ({report.good} samples{', malformed: ' + bad if bad else ''}) to {to} "
        f"in {time.perf_counter() - t0:.1f} s",
        highlight=False,
        soft_wrap=True,
    )
