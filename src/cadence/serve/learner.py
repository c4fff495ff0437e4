"""The stream learner: test-then-train on a Source (predict, score, update) with exactly-once effect.

Lives in serve/ (layer 5), not engine/: it drives the engine's updates over a stream *and* publishes to the
serving API in the same process; data/streams (layer 1) only reads and checks messages. Protocol: a
message is acknowledged only once its effect is in a durable checkpoint, which records the last trained
source position; after a restart, redelivered messages at or before it are acked without training, later
ones are trained. What a checkpoint holds is state.py's; the file format is engine/checkpoint.py's.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cadence.config import RunConfig
from cadence.data.streams import Schema, Source
from cadence.data.streams.prefetch import Prefetcher
from cadence.engine import checkpoint
from cadence.errors import ConfigError, StreamError
from cadence.metrics.streaming import Prequential
from cadence.models import build_model
from cadence.models.artefact import FILENAME as FINAL_MODEL
from cadence.optim import build_optimizer, build_schedule
from cadence.serve import state as saved
from cadence.serve.buffer import Pending, ResidentBuffer
from cadence.serve.drift import DriftDetector
from cadence.serve.engines import choose_engine
from cadence.serve.gate import Gate
from cadence.serve.poll import PollSteps
from cadence.serve.snapshots import DIRNAME as PUBLISHED
from cadence.serve.snapshots import SnapshotStore, freeze, save_model
from cadence.serve.snapshots import write as write_snapshot

# Test hook: "PHASE:N" kills this process with SIGKILL the N-th time it reaches PHASE (read, trained,
# checkpointed, acked), so the exactly-once tests crash at exact points of the protocol.
CRASH_ENV = "CADENCE_STREAM_CRASH"
COUNTS = (
    "samples_trained",
    "samples_predicted_only",
    "dead_letters",
    "trimmed",
    "acked_without_training",
    "training_retries",
    "drift_events",
    "checkpoints",
    "published",
    "gate_held",
    "updates",
)


class StreamLearner(PollSteps):
    """Learns `config.model` from `source` under the stream strategy, checkpointing into `run_dir`.

    Args:
        model: start from this model (e.g. an earlier run's, `--from`); default: built from config.model.
        n_features, n_classes: the message schema, when not declared in config.stream.
        store: where snapshots are published for serving (default: `<run_dir>/published`).
        allow_changes: resume a run directory whose checkpoint was written with another config.
        center, scale: a per-feature standardization, x' = (x - center) / scale (an earlier run's, `--from`),
            instead of the config's one number each.

    Raises:
        ConfigError: the schema is not declared, or the model does not fit it (before anything changes).
    """

    def __init__(
        self,
        config: RunConfig,
        source: Source,
        run_dir: str | Path,
        *,
        model: nn.Module | None = None,
        n_features: int | None = None,
        n_classes: int | None = None,
        store: SnapshotStore | None = None,
        allow_changes: bool = False,
        center: np.ndarray | None = None,
        scale: np.ndarray | None = None,
        log: Callable[[str], None] | None = None,
    ):
        sc = config.stream
        self.n_features = sc.n_features or n_features
        self.n_classes = sc.n_classes or n_classes
        if self.n_features is None:
            raise ConfigError(
                "the stream's messages need a declared size. Fix: set stream.n_features (--features N)."
            )
        if sc.task == "classification" and self.n_classes is None:
            raise ConfigError(
                "a classification stream needs its classes. Fix: set stream.n_classes (--classes K)."
            )
        self.config = config.with_overrides(
            {"stream.n_features": self.n_features, "stream.n_classes": self.n_classes}
        )
        self.sc, self.task, self.source = self.config.stream, sc.task, source
        self.run_dir = Path(run_dir)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.allow_changes = allow_changes
        self.schema = Schema.from_config(self.sc, self.n_features, self.n_classes)
        n_out = self.n_classes if self.task == "classification" else 1
        torch.manual_seed(config.seed)
        self.model = model if model is not None else build_model(config.model, (self.n_features,), n_out)
        self._check_model(n_out)
        self.optimizer = build_optimizer(self.model.parameters(), config.optimizer)
        self.scheduler = build_schedule(self.optimizer, config.schedule, 1, None)
        # The resident buffer the engine's updates index into, never reallocated while the engine lives: room
        # for a poll, the labelled samples label_delay holds back, and a batch (unlabelled ones take no row).
        capacity = sc.read_count + sc.label_delay + sc.batch_size
        self.center = sc.center if center is None else np.asarray(center, np.float32).reshape(self.n_features)
        self.scale = sc.scale if scale is None else np.asarray(scale, np.float32).reshape(self.n_features)
        self.buffer = ResidentBuffer(capacity, self.n_features, self.task, self.center, self.scale)
        self.metrics = Prequential(self.task, sc.window)
        self.gate = Gate(self.task, sc.window, sc.gate_tolerance)
        self.drift = DriftDetector(sc.drift)
        self.store = store or SnapshotStore(self.run_dir / PUBLISHED, sc.keep_snapshots)
        self.counts: Counter = Counter({k: 0 for k in COUNTS})
        self.dead_by_reason: Counter = Counter()
        self.last_id: str | None = None  # the last message whose effect is in the weights
        self.last_pos: tuple | None = None
        self.ckpt_pos: tuple | None = None  # the last message whose effect is in a durable checkpoint
        self.seen_pos: tuple | None = None  # the last message this run has taken in (trained, queued, dead)
        self.ledger: list[str] = []
        self.history_bytes = 0
        self._history: list[dict] = []  # records since the last checkpoint (written with it)
        self.pending = Pending()  # predicted, not yet trained
        self._unacked: list[str] = []
        self._failed_in_a_row = 0
        self._lease = False
        self._train_losses: list[torch.Tensor] = []
        self._signal: int | None = None
        self._crash = _crash_points()
        self._reached: Counter = Counter()
        self.engine = None
        self.started = time.time()
        self._rate = (time.monotonic(), 0, 0.0)  # (t, samples, samples/s) for /stats
        self._lag: tuple[float, int | None] = (0.0, None)
        self._last_ckpt_time = self._last_publish_time = self._last_renew = time.monotonic()
        self._last_ckpt_samples = self._last_publish_samples = self._last_record_samples = 0
        self._idle_since: float | None = None
        self.stopped_because = ""

    def _check_model(self, n_out: int) -> None:
        try:
            with torch.no_grad():
                out = self.model.eval()(torch.zeros(2, self.n_features))
        except Exception as err:
            raise ConfigError(
                f"the model fails on stream messages of {self.n_features} features: {err}. Fix: set "
                "stream.n_features to the model's input size, or start from a model that fits."
            ) from None
        if out.shape[-1] != n_out:
            raise ConfigError(
                f"the model outputs {out.shape[-1]} values per sample but the stream needs {n_out}. Fix: set "
                "stream.n_classes to match, or start from a model with that many outputs."
            )

    # --- the run -----------------------------------------------------------------------------------------

    def run(self) -> str:
        """Learn until the source ends, `idle_seconds` or `max_samples` is reached, or SIGINT/SIGTERM;
        write a final checkpoint and acknowledge everything in it. Returns why it stopped.

        Raises:
            StreamError: another learner took the group's lease over (nothing more is checkpointed).
        """
        previous = self._catch_signals()
        threads = torch.get_num_threads()
        torch.set_num_threads(self.config.threads or 1)  # one-sample updates: a second thread only adds hand-offs
        try:
            if hasattr(self.source, "should_stop"):
                self.source.should_stop = lambda: self._signal is not None
            if hasattr(self.source, "acquire_lease"):
                if not self.source.acquire_lease(self.sc.lease_ms):
                    return "stopped while standing by"
                self._lease = True
            self._restore()
            if hasattr(self.source, "claim"):
                self.source.claim()
                # XAUTOCLAIM drops pending entries whose body was trimmed from the pending list itself.
                self.counts["trimmed"] += self.source.trimmed
                self.source.trimmed = 0
            self.engine = choose_engine(
                self.model, self.optimizer, self.scheduler, self.config, self.buffer.x, self.buffer.y, self.task
            )
            self.log(f"learning from {self.source.name} with the {self.engine.name} engine into {self.run_dir}")
            if self.counts["samples_trained"] and self.store.current is None:
                self._publish(force=True)
            reason = self._loop()
            self._checkpoint()
            # The model as an artefact at every clean stop: `cadence.load(run_dir)`, `--from run_dir`.
            save_model(self.run_dir / FINAL_MODEL, self.model, self._snapshot_meta())
            self.stopped_because = reason
            return reason
        finally:
            torch.set_num_threads(threads)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self._lease:  # a standby may take over at once (unless the lease was lost: then it is not ours)
                self.source.release_lease()

    def _loop(self) -> str:
        sc = self.sc
        reader = Prefetcher(self.source, sc.read_count, self.schema, workers=sc.parse_workers)
        try:
            while True:
                if self._signal is not None:
                    return f"stopped by {signal.Signals(self._signal).name}"
                if sc.max_samples and self.counts["samples_trained"] >= sc.max_samples:
                    return f"trained max_samples={sc.max_samples}"
                poll = reader.read()
                now = time.monotonic()
                if poll is not None:
                    self._idle_since = None
                    self._crash_point("read")
                    self._process(poll)
                else:
                    if reader.exhausted:
                        return "the source ended"
                    unreachable = getattr(self.source, "unreachable", False)  # an outage is not idleness
                    self._idle_since = None if unreachable else (self._idle_since or now)
                    if sc.idle_seconds and self._idle_since and now - self._idle_since >= sc.idle_seconds:
                        return f"no message for {sc.idle_seconds:g} s"
                self._periodic(now)
        finally:
            reader.close()

    def _periodic(self, now: float) -> None:
        sc, n = self.sc, self.counts["samples_trained"]
        if n - self._last_record_samples >= sc.record_every_samples:
            self._record()
        due_s = sc.publish_seconds and now - self._last_publish_time >= sc.publish_seconds
        due_n = sc.publish_every_samples and n - self._last_publish_samples >= sc.publish_every_samples
        first = self.store.current is None and n > 0
        if (first or due_s or due_n) and n > self._last_publish_samples:
            self._publish()
        due_s = sc.checkpoint_seconds and now - self._last_ckpt_time >= sc.checkpoint_seconds
        due_n = sc.checkpoint_every_samples and n - self._last_ckpt_samples >= sc.checkpoint_every_samples
        if (due_s or due_n) and self._unacked:
            self._checkpoint()
        if hasattr(self.source, "renew_lease") and now - self._last_renew >= sc.lease_ms / 3000:
            self._last_renew = now
            if not self.source.renew_lease(sc.lease_ms):
                self._lease = False
                raise StreamError(
                    f"another learner took over consumer group {sc.group!r} (this one's lease expired); stopping "
                    "without a checkpoint. Fix: give the learner a longer stream.lease_ms if it stalls."
                )

    # --- drift, records, publishing, checkpoints ------------------------------------------------------

    def _on_drift(self, at_sample: int) -> None:
        reaction = self.sc.drift.reaction
        self.counts["drift_events"] += 1
        event = {"event": "drift", "samples": at_sample, "detector": self.sc.drift.detector, "reaction": reaction}
        self.log(f"drift detected by {self.sc.drift.detector} at sample {at_sample}; reaction: {reaction}")
        if reaction == "reset-optimizer":
            self.optimizer.state.clear()
            if self.sc.drift.lr_factor != 1.0:
                self.scheduler.scale(self.sc.drift.lr_factor)
            # The kernel holds pointers to the old optimizer state: a new engine binds the new one.
            self.engine = choose_engine(
                self.model, self.optimizer, self.scheduler, self.config, self.buffer.x, self.buffer.y, self.task
            )
        elif reaction == "snapshot":
            snap = freeze(self.model, at_sample, self._snapshot_meta())
            path = write_snapshot(self.run_dir / "drift", snap, keep=1_000_000)
            event["snapshot"] = str(path)
            self.log(f"ALERT: drift at sample {at_sample}; the model before it is saved in {path}")
        self._history.append({**event, "seconds": time.time() - self.started})

    def _record(self) -> None:
        self._last_record_samples = self.counts["samples_trained"]
        losses = torch.cat(self._train_losses) if self._train_losses else torch.empty(0)
        self._train_losses = []
        record = {
            "samples": self.counts["samples_trained"],
            "updates": self.counts["updates"],
            "seconds": time.time() - self.started,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": float(losses.mean()) if len(losses) else float("nan"),
            **self.metrics.values(),
            "dead_letters": self.counts["dead_letters"],
            "drift_events": self.counts["drift_events"],
        }
        self._history.append(record)

    def _snapshot_meta(self) -> dict:
        return {
            "model": self.config.model.model_dump(mode="json"),
            "n_features": self.n_features,
            "n_outputs": self.n_classes if self.task == "classification" else 1,
            "task": self.task,
            "class_names": list(self.sc.class_names),
            "center": self.center.tolist() if isinstance(self.center, np.ndarray) else self.center,
            "scale": self.scale.tolist() if isinstance(self.scale, np.ndarray) else self.scale,
            "samples": self.counts["samples_trained"],
            "metrics": {k: v for k, v in self.metrics.values().items() if np.isfinite(v)},
        }

    def _publish(self, force: bool = False) -> bool:
        """Publish the model to serving unless the quality gate holds it: its windowed metric must not be
        worse than the served snapshot's on the same recent samples by more than gate_tolerance."""
        verdict = "publish" if force or self.store.current is None else self.gate.verdict()
        if verdict == "wait":  # too few samples compared yet: ask again after the next poll
            return False
        self._last_publish_time = time.monotonic()
        self._last_publish_samples = self.counts["samples_trained"]
        if verdict == "hold":
            self.counts["gate_held"] += 1
            return False
        self.store.publish(self.model, self._snapshot_meta())
        self.gate.reset()
        self.counts["published"] += 1
        return True

    def _checkpoint(self) -> None:
        """Write the durable checkpoint, then acknowledge every message whose effect it holds."""
        now = time.monotonic()
        self._last_ckpt_time, self._last_ckpt_samples = now, self.counts["samples_trained"]
        if self._train_losses or self.counts["samples_trained"] > self._last_record_samples:
            self._record()
        self.history_bytes = saved.append_history(self.run_dir, self._history, self.history_bytes)
        self._history = []
        self.counts["checkpoints"] += 1
        weights, meta = saved.capture(self)
        directory = checkpoint.checkpoints_dir(self.run_dir)
        checkpoint.write(directory, weights, meta)
        checkpoint.prune(directory, self.sc.keep_checkpoints)
        self.ckpt_pos = self.last_pos
        self._crash_point("checkpointed")
        if self._unacked:
            self.source.ack(self._unacked)
            self._unacked = []
        self._crash_point("acked")

    def _restore(self) -> None:
        ckpt = checkpoint.latest(checkpoint.checkpoints_dir(self.run_dir)) if self.run_dir.is_dir() else None
        if ckpt is None:
            return
        saved.restore(self, ckpt, self.allow_changes)
        self.ckpt_pos = self.seen_pos = self.last_pos
        self._last_record_samples = self._last_publish_samples = self._last_ckpt_samples = self.counts[
            "samples_trained"
        ]
        self.log(f"resumed from {ckpt.path}: {self.counts['samples_trained']} samples, last id {self.last_id}")

    # --- status, signals, crash points --------------------------------------------------------------------

    def stats(self) -> dict:
        """Counters, prequential metrics, throughput, lag and checkpoint age, for /stats and /metrics."""
        now = time.monotonic()
        t, n, rate = self._rate
        samples = self.counts["samples_trained"]
        if now - t >= 1.0:
            rate = (samples - n) / (now - t)
            self._rate = (now, samples, rate)
        if now - self._lag[0] >= 1.0:
            self._lag = (now, self.source.lag())
        out = dict(self.counts)
        out.update({f"dead_letters_{k.replace('-', '_')}": v for k, v in self.dead_by_reason.items()})
        out.update(self.metrics.values())
        out["samples_per_s"] = rate
        out["reconnects"] = getattr(self.source, "reconnects", 0)
        if self._lag[1] is not None:
            out["lag"] = self._lag[1]
        out["unacked"] = len(self._unacked)
        out["checkpoint_age_seconds"] = now - self._last_ckpt_time
        out["lr"] = self.optimizer.param_groups[0]["lr"]
        out["last_id"] = self.last_id
        out["engine"] = self.engine.name if self.engine else None
        return out

    def _catch_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum, frame) -> None:
            self._signal = signum  # the poll in progress finishes; then a final checkpoint

        return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def request_stop(self) -> None:
        """Stop after the poll in progress (for a learner run in a thread)."""
        self._signal = signal.SIGTERM

    def _crash_point(self, phase: str) -> None:
        if self._crash:
            self._reached[phase] += 1
            if self._crash.get(phase) == self._reached[phase]:
                os.kill(os.getpid(), signal.SIGKILL)


def _crash_points() -> dict[str, int]:
    spec = os.environ.get(CRASH_ENV, "")
    out = {}
    for part in filter(None, spec.split(",")):
        phase, _, n = part.partition(":")
        out[phase] = int(n or 1)
    return out


__all__ = ["StreamLearner"]
