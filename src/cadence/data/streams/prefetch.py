"""Reading ahead: a thread that polls a Source while the learner trains, so waiting on the network and
parsing replies overlap with training. At most `depth` polls are held; what is read ahead but not yet
processed when the learner stops stays unacknowledged, and is delivered again to the next run."""

from __future__ import annotations

import queue
import threading

from cadence.data.streams.source import Message, Source


class Prefetcher:
    """`read()` hands out the polls a background thread made of `source.read(count, block_ms)`, in order."""

    def __init__(self, source: Source, count: int, block_ms: int = 100, depth: int = 2):
        self.source, self.count, self.block_ms = source, count, block_ms
        self._polls: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name="cadence-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                poll = self.source.read(self.count, self.block_ms)
                if poll or self.source.exhausted:
                    self._put(poll)
                if self.source.exhausted:
                    return
        except BaseException as err:  # handed to the learner's thread, which raises it
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
            whatever the source raised while reading ahead (a StreamError, say).
        """
        try:
            item = self._polls.get(timeout=timeout)
        except queue.Empty:
            return []
        if isinstance(item, BaseException):
            raise item
        if not item and self.source.exhausted:
            self._done = True
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
