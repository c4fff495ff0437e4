"""A read-only replica: serves the latest snapshot a learner published into a run directory and reloads
when a newer one appears, so serving scales out by starting more replicas (`cadence serve RUN_DIR`)."""

from __future__ import annotations

import threading
from pathlib import Path

from cadence.errors import CheckpointError
from cadence.serve import snapshots
from cadence.serve.snapshots import SnapshotStore


class Replica:
    """Polls `<run_dir>/published/LATEST` every `poll_seconds` and swaps in each new snapshot."""

    def __init__(self, run_dir: str | Path, poll_seconds: float = 0.5):
        self.directory = Path(run_dir) / snapshots.DIRNAME
        self.store = SnapshotStore()  # no directory: a replica never writes
        self.poll_seconds = poll_seconds
        self.reloads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="cadence-replica", daemon=True)

    def refresh(self) -> bool:
        """Load the published snapshot if it is newer than the served one. Returns whether it swapped."""
        version = snapshots.latest_version(self.directory)
        current = self.store.current.version if self.store.current else None
        if version is None or version == current:
            return False
        try:
            snap = snapshots.read_latest(self.directory)
        except CheckpointError:
            return False  # being replaced right now: the next poll reads the newer one
        if snap is None:
            return False
        self.store.swap(snap)
        self.reloads += 1
        return True

    def stats(self) -> dict:
        return {"reloads": self.reloads, "replica": 1}

    def start(self) -> Replica:
        self.refresh()
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
