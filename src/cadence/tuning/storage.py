"""Where a study lives and how workers share it: a journal file (several processes on one machine) or an RDB
URL (PostgreSQL for many machines; SQLite for one process), a lock that makes "is the budget spent? then
start a trial" one step across workers, and the recovery of trials whose worker died.

Optuna 5 names: `JournalStorage(JournalFileBackend(path))` (SQLite locks under parallel writers);
`RDBStorage(heartbeat_interval=, grace_period=, heartbeat_stale_trial_callback=)` with
`RetryHeartbeatStaleTrialCallback` (the old `RetryFailedTrialCallback` and `failed_trial_callback=` are
deprecated since 4.9). Optuna fails stale RDB trials only inside `study.optimize()`, so a worker that is
waiting for others calls `fail_stale_trials` itself. The journal has no heartbeats: a trial records the
process that runs it, and a worker on the same machine fails it once that process is gone.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from cadence.errors import ConfigError

OWNER = "cadence_worker"  # trial user attribute: which process runs the trial
SUPPORTED = "a journal file path (several processes on one machine), postgresql://... or sqlite:///..."


def _retry_callback(max_retry: int) -> RetryHeartbeatStaleTrialCallback:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=max_retry)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None if it is gone or a
    zombie; with the pid it names a process uniquely, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    return None if fields[0] in ("Z", "X") else fields[19]


def this_worker() -> dict[str, Any]:
    """What a trial records about the process running it."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": pid, "start": _start_time(pid)}


def _dead_here(owner: dict[str, Any]) -> bool:
    """Whether `owner` ran on this machine (same host name and boot) and that process is gone. Without /proc
    (not Linux) no start time is known and no process is ever declared dead."""
    if owner.get("host") != socket.gethostname() or owner.get("boot") != _boot_id() or "pid" not in owner:
        return False
    if owner.get("start") is None:
        return False
    return _start_time(int(owner["pid"])) != owner.get("start")


class _NoLock:
    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass


class _FileLock:
    """An exclusive flock on a file next to the study: released by the kernel if the holder dies."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class _AdvisoryLock:
    """A PostgreSQL session advisory lock on one connection: released by the server if the holder dies."""

    def __init__(self, url: str, key: int):
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        self._sql = sqlalchemy
        self._engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        self._conn = None
        self.key = key

    def acquire(self) -> None:
        if self._conn is None:
            self._conn = self._engine.connect()
        self._conn.execute(self._sql.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
        self._conn.commit()

    def release(self) -> None:
        if self._conn is not None:
            self._conn.execute(self._sql.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            self._conn.commit()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._engine.dispose()


@dataclass
class StudyStorage:
    """An opened storage: the Optuna storage, its kind, the workers' lock and how dead trials are found."""

    url: str
    kind: str  # "memory" | "journal" | "postgresql" | "sqlite"
    storage: Any
    lock: Any
    max_retry: int

    @property
    def shared(self) -> bool:
        return self.kind in ("journal", "postgresql")

    def recover(self, study: optuna.Study) -> list[int]:
        """Fail the trials whose worker is gone and queue each again with its parameters; return their numbers.

        Call with the lock held. RDB: Optuna's heartbeat check (stale after the grace period, the retry
        callback queues the copy). Journal: RUNNING trials of dead processes on this machine. Both: RUNNING
        trials with no owner at all, which under the lock can only be left by a worker killed between
        creating a trial and recording itself (the lock covers both steps).
        """
        failed: list[int] = []
        if self.kind in ("postgresql", "sqlite"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
                optuna.storages.fail_stale_trials(study)
                after = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                failed += [t.number for t in after if t.number not in before]
        retry = _retry_callback(self.max_retry)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = trial.user_attrs.get(OWNER)
            orphan = owner is None
            if orphan or (self.kind == "journal" and _dead_here(owner)):
                try:
                    study.tell(trial.number, state=TrialState.FAIL)
                except (ValueError, RuntimeError):  # finished meanwhile by its own worker: nothing to recover
                    continue
                frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
                retry(study, frozen)
                failed.append(trial.number)
        return failed

    def close(self) -> None:
        close = getattr(self.lock, "close", None)
        if close:
            close()


def _lock_key(study_name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"cadence-tune:{study_name}".encode()).digest()[:8], "big", signed=True)


def open_storage(
    url: str | Path | None,
    study_name: str,
    *,
    heartbeat_interval: int = 30,
    grace_period: int | None = None,
    max_retry: int = 2,
) -> StudyStorage:
    """Open `url`: None (in memory, one process), a journal file path, postgresql://... or sqlite:///...

    Raises:
        ConfigError: an unsupported URL, a missing PostgreSQL driver, or a server that cannot be reached.
    """
    if url is None:
        return StudyStorage("(memory)", "memory", optuna.storages.InMemoryStorage(), _NoLock(), max_retry)
    text = str(url)
    if "://" not in text:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(text)
        if path.is_dir():
            raise ConfigError(
                f"storage {text} is a directory. Fix: name a journal file, e.g. {path / 'study.journal'}."
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = JournalStorage(JournalFileBackend(str(path)))
        return StudyStorage(
            text, "journal", storage, _FileLock(path.with_name(path.name + ".cadence-lock")), max_retry
        )
    scheme = text.split("://", 1)[0].split("+", 1)[0]
    if scheme not in ("postgresql", "sqlite"):
        raise ConfigError(f"storage {text!r} is not supported. Allowed: {SUPPORTED}.")
    engine_url = text
    if scheme == "postgresql":
        try:
            import psycopg  # noqa: F401  the driver (SQLAlchemy 2.1's default; named below for older ones)
        except ImportError:
            raise ConfigError(
                "PostgreSQL storage needs the psycopg driver. Fix: pip install 'cadence[postgres]'."
            ) from None
        if text.startswith("postgresql://"):
            engine_url = "postgresql+psycopg://" + text[len("postgresql://") :]
        lock: Any = _AdvisoryLock(engine_url, _lock_key(study_name))
    else:
        database = text.split(":///", 1)[-1]
        lock = _FileLock(Path(database + ".cadence-lock")) if database and database != ":memory:" else _NoLock()
    try:
        # Under the lock: workers starting together on a new database would otherwise race to create
        # Optuna's tables (PostgreSQL: a duplicate pg_type key).
        lock.acquire()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(
                    engine_url,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=_retry_callback(max_retry),
                )
        finally:
            lock.release()
    except Exception as err:  # sqlalchemy.exc.OperationalError and friends: the server said no
        getattr(lock, "close", lambda: None)()
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"cannot open storage {text}: {first}. Fix: check the URL and that the server runs."
        ) from None
    return StudyStorage(text, scheme, storage, lock, max_retry)


__all__ = ["OWNER", "StudyStorage", "open_storage", "this_worker"]
