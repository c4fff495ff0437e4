"""One poll of the stream learner, test-then-train: acknowledge what a checkpoint already holds, dead-letter
what the checks refused, predict and score the rest with the weights of now, then train what is due.

Vectorised over the poll (one buffer copy, one forward pass, runs of up to engine.max_run updates); the
per-message Python is a few list operations. The run around it (reading, checkpoints, publishing) is
learner.py's.
"""

from __future__ import annotations

import numpy as np
import torch

from cadence.data.streams import Rejected
from cadence.data.streams.prefetch import Poll
from cadence.errors import StreamError


class PollSteps:
    """The poll half of StreamLearner (a mixin: it uses the learner's source, sc, buffer, pending, model,
    store, gate, engine, metrics, drift, counts and positions, and calls its _on_drift and _crash_point)."""

    def _process(self, poll: Poll) -> None:
        """Acknowledge what a checkpoint already holds, dead-letter the refused, then predict and train the
        rest. Vectorised over the poll: the per-message Python is a few list operations."""
        msgs, batch, n = poll.messages, poll.batch, len(poll.messages)
        start, ack_now = self._skip_seen(msgs)
        if start < n:
            self.seen_pos = self.source.position(msgs[-1].id)  # a poll is in source order
        gone = [i for i in range(start, n) if msgs[i].payload is None]
        if gone:
            ack_now += [msgs[i].id for i in gone]
            self.counts["trimmed"] += len(gone)
        limit = self.sc.max_deliveries
        over = {i for i in range(start, n) if msgs[i].deliveries > limit and msgs[i].payload is not None}
        dead = []
        for i in sorted(over.union(i for i in batch.rejected if i >= start)):  # in source order
            m = msgs[i]
            why = batch.rejected.get(i) if i not in over else None
            if why is None:  # delivered too often: it may be what crashed the learner (checks passed or not)
                why = (
                    f"training-failed: delivered {m.deliveries} times without reaching a checkpoint "
                    f"(max_deliveries={limit}); it may crash the learner"
                )
            dead.append(Rejected(m.id, why, m.payload))
        keep = batch.good >= start
        if over:
            keep &= ~np.isin(batch.good, list(over))
        if ack_now:
            self.source.ack(ack_now)
        self._dead_letter(dead)
        if keep.any():
            self._predict(msgs, batch, keep)
            self._train_ready()

    def _skip_seen(self, msgs: list) -> tuple[int, list[str]]:
        """(the index of the first message this run has not taken in yet, the ids to ack at once: those at or
        before the checkpoint's position). Only a redelivered prefix (a restart, a reconnect, a claim) is
        looked at one by one: a poll is in source order."""
        position, seen = self.source.position, self.seen_pos
        if seen is None or position(msgs[0].id) > seen:
            return 0, []
        ack_now, i = [], 0
        while i < len(msgs) and (pos := position(msgs[i].id)) <= seen:
            if self.ckpt_pos is not None and pos <= self.ckpt_pos:
                ack_now.append(msgs[i].id)  # its effect is already in a durable checkpoint
            i += 1  # else redelivered while trained, queued or dead-lettered already: skipped
        self.counts["acked_without_training"] += len(ack_now)
        return i, ack_now

    def _dead_letter(self, rejected: list[Rejected]) -> None:
        if rejected:
            self.source.dead_letter(rejected)
            self.counts["dead_letters"] += len(rejected)
            self.dead_by_reason.update(r.code for r in rejected)

    def _predict(self, msgs: list, batch, keep: np.ndarray) -> None:
        """Write the labelled samples into the buffer (one copy) and score them with the weights of now, in
        one forward pass (test before train); queue every sample in source order."""
        sel = np.flatnonzero(keep)
        good, labelled = batch.good[sel], batch.labelled[sel]
        rows = np.full(len(good), -1, np.int64)
        losses, hits = np.zeros(len(good)), np.zeros(len(good))
        if labelled.any():
            take = sel[labelled]
            whole = len(take) == len(batch.x)  # the usual poll: every row is trained; no gather
            rows_l = self.buffer.put(batch.x if whole else batch.x[take], batch.y if whole else batch.y[take])
            rows[labelled] = rows_l
            losses[labelled], hits[labelled] = scores = self.buffer.score(self.model, rows_l)
            served = self.store.current
            if served is not None and self.gate.due():
                self.gate.observe(self.buffer.score(served.model, rows_l), scores)
        self.pending.push(rows, [msgs[i] for i in good.tolist()], losses, hits)

    def _train_ready(self) -> None:
        """Train, in order, every queued sample whose label is due (`label_delay` later ones have arrived)."""
        rows, msgs, losses, hits = self.pending.pop_ready(self.sc.label_delay)
        if not msgs:
            return
        labelled = rows >= 0
        trained = [m for m, t in zip(msgs, labelled.tolist(), strict=True) if t] if not labelled.all() else msgs
        failed = self._apply(rows[labelled], trained)
        if failed is None:
            ok, ok_losses, ok_hits = trained, losses[labelled], hits[labelled]
        else:
            ok = [m for m, f in zip(trained, failed.tolist(), strict=True) if not f]
            ok_losses, ok_hits = losses[labelled][~failed], hits[labelled][~failed]
        if ok:
            self.metrics.update(ok_losses, ok_hits)
            errors = 1.0 - ok_hits if self.task == "classification" else ok_hits
            for i in self.drift.update(errors):
                self._on_drift(self.counts["samples_trained"] + i + 1)
        if self.sc.ledger:
            self.ledger.extend(m.id for m in ok)
        self.counts["samples_trained"] += len(ok)
        self.counts["samples_predicted_only"] += len(msgs) - len(trained)
        if failed is None:
            self._unacked.extend(m.id for m in msgs)
        else:
            lost = {m.id for m, f in zip(trained, failed.tolist(), strict=True) if f}
            self._unacked.extend(m.id for m in msgs if m.id not in lost)
        self.last_id = msgs[-1].id
        self.last_pos = self.source.position(self.last_id)
        self._crash_point("trained")

    def _apply(self, rows: np.ndarray, items: list) -> np.ndarray | None:
        """Run the updates for `rows` (one per sample, or micro-batches of stream.batch_size) through the
        engine, in runs of up to engine.max_run. An update whose loss or gradient is not finite was not
        applied; it is tried again up to max_deliveries times in all, then its messages are dead-lettered.
        Returns which items failed so (None when none did)."""
        from cadence.engine.strategies import Update

        k = self.sc.batch_size
        if k == 1:
            updates = [self.buffer.updates[r] for r in rows.tolist()]
        else:
            updates = [
                Update((torch.from_numpy(rows[i : i + k].copy()),), len(rows[i : i + k]), 0, 0, False)
                for i in range(0, len(rows), k)
            ]
        failed = None
        i, tries = 0, 0
        while i < len(updates):
            block = updates[i : i + self.engine.max_run]
            applied = self.engine.apply(block)
            if applied.n:
                self._train_losses.append(applied.losses[: applied.n])
                self.counts["updates"] += applied.n
                i, tries = i + applied.n, 0
            if applied.n < len(block):  # updates[i] was not applied: weights and optimizer state unchanged
                tries += 1
                self.counts["training_retries"] += 1
                if tries >= self.sc.max_deliveries:
                    why = f"training-failed: non-finite loss or gradient in {tries} tries"
                    group = items[i * k : (i + 1) * k]
                    self._dead_letter([Rejected(m.id, why, m.payload) for m in group])
                    if failed is None:
                        failed = np.zeros(len(items), bool)
                    failed[i * k : (i + 1) * k] = True
                    i, tries = i + 1, 0
                    self._failed_in_a_row += 1
                    self._check_diverged()
            elif applied.n:
                self._failed_in_a_row = 0
        return failed

    def _check_diverged(self) -> None:
        """Many messages in a row failing in training means the model, not the messages, is broken: stop
        (without a checkpoint) rather than dead-letter the whole stream."""
        limit = self.config.stop.max_skips
        if self._failed_in_a_row >= limit:
            raise StreamError(
                f"diverged: {self._failed_in_a_row} messages in a row (stop.max_skips) gave a non-finite loss or "
                f"gradient; they are dead-lettered, later ones stay pending, the weights of the last checkpoint "
                f"in {self.run_dir} are the last good ones. Fix: lower the learning rate or clip gradients, then "
                "rerun the same command."
            )
