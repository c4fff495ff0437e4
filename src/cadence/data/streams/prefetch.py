"""Reading ahead: a thread polls a Source while the learner trains, and a worker process checks and parses
the messages (JSON to float32 rows) meanwhile, so waiting on the network and parsing overlap with training.

At most `depth` polls are held. What is read ahead but not processed when the learner stops stays
unacknowledged and is delivered again to the next run. The worker only parses: it never talks to the
source, so a learner killed with SIGKILL leaves no reader behind (the worker ends at the pipe's EOF).
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from collections import deque

import numpy as np

from cadence.data.streams.messages import Rejected, Sample, Schema, parse
from cadence.data.streams.source import Message, Source

_END = object()  # put after the last poll of a finite source


def parse_batch(payloads: list[bytes | None], ids: list[str], schema: Schema) -> tuple:
    """Check and parse a poll: (features of the good ones as one float32 block, [per message: None for a
    missing body, a reason string for a rejected one, or (sample id, label) for a good one])."""
    rows, out = [], []
    for payload, source_id in zip(payloads, ids, strict=True):
        if payload is None:
            out.append(None)
            continue
        s = parse(payload, schema, source_id)
        if isinstance(s, Rejected):
            out.append(s.reason)
        else:
            rows.append(s.x)
            out.append((s.id, s.y))
    block = np.stack(rows).astype(np.float32, copy=False) if rows else np.zeros((0, schema.n_features), np.float32)
    return block, out


def _worker(requests, results, learner_ends: tuple, schema: Schema) -> None:
    """Parse the polls that come in on `requests` until it closes (the learner ended, or was killed)."""
    for end in learner_ends:  # the forked copies of the learner's ends: else closing those would not end this
        end.close()
    try:
        while True:
            item = requests.recv()
            results.send(None if item is None else parse_batch(*item, schema))
    except (EOFError, OSError, KeyboardInterrupt):
        return


class Prefetcher:
    """`read()` hands out the polls a background thread made of `source.read(count, block_ms)`, in order,
    each message with its check already done (`Message.parsed`) when a `schema` is given.

    Args:
        workers: 1 parses in a forked worker process, pipelined: the thread reads poll k+1 from the source
            while the worker parses poll k and the learner trains on poll k-1. 0 parses in the thread.
    """

    def __init__(
        self,
        source: Source,
        count: int,
        block_ms: int = 100,
        depth: int = 2,
        schema: Schema | None = None,
        workers: int = 1,
    ):
        self.source, self.count, self.block_ms, self.schema = source, count, block_ms, schema
        self._polls: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._proc = None
        self._threads = [threading.Thread(target=self._run, name="cadence-prefetch", daemon=True)]
        if schema is not None and workers > 0:
            # fork: the worker needs nothing but numpy and orjson, already imported; no second torch import.
            # One-way pipes, each used by one thread here: the reader sends, the receiver receives.
            ctx = multiprocessing.get_context("fork")
            req_out, self._requests = ctx.Pipe(duplex=False)
            self._results, res_in = ctx.Pipe(duplex=False)
            self._sent: deque = deque()  # polls sent to the worker, in order
            self._in_flight = threading.BoundedSemaphore(depth)
            self._proc = ctx.Process(
                target=_worker,
                args=(req_out, res_in, (self._requests, self._results), schema),
                name="cadence-parse",
                daemon=True,
            )
            self._proc.start()
            req_out.close()
            res_in.close()
            self._threads.append(threading.Thread(target=self._receive, name="cadence-parsed", daemon=True))
        for t in self._threads:
            t.start()

    def _assemble(self, poll: list[Message], block: np.ndarray, results: list) -> list[Message]:
        out, row = [], 0
        for m, r in zip(poll, results, strict=True):
            if r is None:
                parsed = None
            elif isinstance(r, str):
                parsed = Rejected(m.id, r, m.payload)
            else:
                parsed = Sample(r[0], block[row], r[1])
                row += 1
            out.append(Message(m.id, m.payload, m.deliveries, parsed))
        return out

    def _send(self, item, poll) -> bool:
        while not self._in_flight.acquire(timeout=0.1):
            if self._stop.is_set():
                return False
        self._sent.append(poll)
        self._requests.send(item)
        return True

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                poll = self.source.read(self.count, self.block_ms)
                if poll and self._proc is not None:
                    if not self._send(([m.payload for m in poll], [m.id for m in poll]), poll):
                        return
                elif poll:
                    if self.schema is not None:
                        poll = self._assemble(
                            poll, *parse_batch([m.payload for m in poll], [m.id for m in poll], self.schema)
                        )
                    self._put(poll)
                if self.source.exhausted:
                    if self._proc is not None:
                        self._send(None, _END)  # after the polls in flight
                    else:
                        self._put(_END)
                    return
        except BaseException as err:  # handed to the learner's thread, which raises it
            self._put(err)

    def _receive(self) -> None:
        try:
            while True:
                item = self._results.recv()  # the GIL is free while the worker parses
                poll = self._sent.popleft()
                self._in_flight.release()
                self._put(_END if item is None else self._assemble(poll, *item))
        except (EOFError, OSError):
            return
        except BaseException as err:
            self._put(err)

    def _put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._polls.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    @property
    def exhausted(self) -> bool:
        return self._done

    def read(self, timeout: float = 0.1) -> list[Message]:
        """The next poll, or [] when none came within `timeout` seconds.

        Raises:
            whatever the source (or the parsing) raised while reading ahead (a StreamError, say).
        """
        try:
            item = self._polls.get(timeout=timeout)
        except queue.Empty:
            return []
        if isinstance(item, BaseException):
            raise item
        if item is _END:
            self._done = True
            return []
        return item

    def close(self) -> None:
        self._stop.set()
        self._threads[0].join(timeout=5)
        if self._proc is not None:
            self._requests.close()  # the worker sees EOF and ends; then the receiver sees EOF
            self._proc.join(timeout=5)
            if self._proc.is_alive():
                self._proc.kill()
            self._threads[1].join(timeout=5)
            self._results.close()
