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
from dataclasses import dataclass

from cadence.data.streams.messages import Batch, Schema, parse_many
from cadence.data.streams.source import Message, Source

_END = object()  # put after the last poll of a finite source


@dataclass(frozen=True, slots=True)
class Poll:
    """One read from the source, in source order, with its checks done (`batch`, by index into `messages`)."""

    messages: list[Message]
    batch: Batch


def _check(payloads: list[bytes | None], ids: list[str], schema: Schema) -> tuple:
    b = parse_many(payloads, ids, schema)
    return b.x, b.y, b.labelled, b.good, b.rejected  # a tuple pickles without the class


def _worker(requests, results, learner_ends: tuple, schema: Schema) -> None:
    """Check the polls that come in on `requests` until it closes (the learner ended, or was killed)."""
    for end in learner_ends:  # the forked copies of the learner's ends: else closing those would not end this
        end.close()
    try:
        while True:
            item = requests.recv()
            results.send(None if item is None else _check(*item, schema))
    except (EOFError, OSError, KeyboardInterrupt):
        return


class Prefetcher:
    """`read()` hands out the polls a background thread made of `source.read(count, block_ms)`, in order,
    each with its checks done against `schema` (`Poll.batch`).

    Args:
        workers: 1 checks in a forked worker process, pipelined: the thread reads poll k+1 from the source
            while the worker checks poll k and the learner trains on poll k-1. 0 checks in the thread.
    """

    def __init__(
        self,
        source: Source,
        count: int,
        schema: Schema,
        block_ms: int = 100,
        depth: int = 2,
        workers: int = 1,
    ):
        self.source, self.count, self.block_ms, self.schema = source, count, block_ms, schema
        self._polls: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._proc = None
        self._threads = [threading.Thread(target=self._run, name="cadence-prefetch", daemon=True)]
        if workers > 0:
            # fork: the worker needs nothing but numpy, orjson and simdjson, already imported; no second torch
            # import. One-way pipes, each used by one thread here: the reader sends, the receiver receives.
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
                if poll:
                    payloads, ids = [m.payload for m in poll], [m.id for m in poll]
                    if self._proc is not None:
                        if not self._send((payloads, ids), poll):
                            return
                    else:
                        self._put(Poll(poll, Batch(*_check(payloads, ids, self.schema))))
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
                item = self._results.recv()  # the GIL is free while the worker checks
                poll = self._sent.popleft()
                self._in_flight.release()
                self._put(_END if item is None else Poll(poll, Batch(*item)))
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

    def read(self, timeout: float = 0.1) -> Poll | None:
        """The next poll, or None when none came within `timeout` seconds.

        Raises:
            whatever the source (or the checking) raised while reading ahead (a StreamError, say).
        """
        try:
            item = self._polls.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            raise item
        if item is _END:
            self._done = True
            return None
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
