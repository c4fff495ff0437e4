"""A stream's messages: `Sample(id, x, y)`, the schema every message is checked against, and the checks.

A message that fails a check becomes a `Rejected` with a reason code, never an exception: the learner sends
it to the dead letters and goes on. `parse_many` checks a whole poll into one float32 block (the learner's hot
path). Reading messages is jsonl.py's and redis.py's; training is serve/'s.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import orjson
import simdjson

from cadence.config import StreamConfig

# Reason codes of dead letters (the part before ": " in a reason); one spelling in messages, counters and docs.
REASONS = (
    "oversized",
    "not-json",
    "not-an-object",
    "missing-field",
    "wrong-shape",
    "wrong-dtype",
    "non-finite",
    "label-out-of-range",
    "trimmed",
    "training-failed",
)
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True, slots=True)
class Sample:
    """One checked message: its id, the features (flat; float32, or integers), and the label (None: predict
    only)."""

    id: str
    x: np.ndarray
    y: int | float | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that failed a check: its id, `reason` ("code: detail") and the payload as received."""

    id: str
    reason: str
    payload: bytes

    @property
    def code(self) -> str:
        return self.reason.split(":", 1)[0]


@dataclass(frozen=True)
class Schema:
    """What every message must hold: `x_field` with `n_features` finite numbers (flat, or nested lists of
    that many), `y_field` with a label in [0, n_classes) or a finite number (regression), or no label."""

    n_features: int
    task: str = "classification"
    n_classes: int | None = None
    x_field: str = "x"
    y_field: str = "y"
    id_field: str = "id"
    max_bytes: int = 1_000_000

    @classmethod
    def from_config(cls, config: StreamConfig, n_features: int, n_classes: int | None) -> Schema:
        return cls(
            n_features=n_features,
            task=config.task,
            n_classes=n_classes,
            x_field=config.x_field,
            y_field=config.y_field,
            id_field=config.id_field,
            max_bytes=config.max_message_bytes,
        )


def parse(payload: bytes, schema: Schema, source_id: str) -> Sample | Rejected:
    """Check one message against `schema`. Never raises: a bad message comes back as a Rejected.

    `source_id` is where the source holds it (a Redis entry ID, a line number); the message's own
    `id_field`, when present, names the Sample instead.
    """

    def bad(reason: str) -> Rejected:
        return Rejected(source_id, reason, payload)

    if len(payload) > schema.max_bytes:
        return bad(f"oversized: {len(payload)} bytes, more than max_message_bytes={schema.max_bytes}")
    try:
        msg = orjson.loads(payload)
    except orjson.JSONDecodeError as err:  # NaN, Infinity and 1e999 are not JSON either
        return bad(f"not-json: {err}")
    if not isinstance(msg, dict):
        return bad(f"not-an-object: got a JSON {type(msg).__name__}, expected {{{schema.x_field!r}: [...]}}")
    raw = msg.get(schema.x_field)
    if raw is None:
        return bad(f"missing-field: no {schema.x_field!r} (fields: {', '.join(map(str, msg))[:200]})")
    try:
        x = np.asarray(raw)
    except ValueError:  # ragged nested lists
        return bad(f"wrong-shape: {schema.x_field!r} is a ragged list, expected {schema.n_features} numbers")
    if x.dtype.kind not in "iuf":
        return bad(f"wrong-dtype: {schema.x_field!r} holds {_kind(x)}, expected {schema.n_features} numbers")
    if x.size != schema.n_features:
        return bad(f"wrong-shape: {schema.x_field!r} has shape {x.shape}, expected {schema.n_features} numbers")
    x = x.reshape(-1)
    if x.dtype.kind == "f":  # integers (pixels, counts) are finite and within float32's range as they are
        with np.errstate(over="ignore"):  # an overflow is the non-finite check's to report
            x = x.astype(np.float32)
        if not np.isfinite(x).all():
            return bad(
                f"non-finite: {schema.x_field!r} has NaN/inf after conversion to float32 (|x| > {_F32_MAX:.3g})"
            )
    sample_id = msg.get(schema.id_field, source_id)
    y, why = _label(msg.get(schema.y_field), schema)
    if why is not None:
        return bad(why)
    return Sample(str(sample_id), x, y)


def _label(y, schema: Schema) -> tuple[int | float | None, str | None]:
    """(the label, None), or (None, the reason it is refused). No label (None) is allowed: predict only."""
    if y is None:
        return None, None
    if schema.task == "classification":
        if isinstance(y, bool) or not isinstance(y, int):
            return None, f"wrong-dtype: label {schema.y_field!r} = {str(y)[:50]!r} is not an integer class index"
        if not 0 <= y < (schema.n_classes or 0):
            return None, f"label-out-of-range: {y} is not in [0, {(schema.n_classes or 0) - 1}]"
        return y, None
    if isinstance(y, bool) or not isinstance(y, int | float):
        return None, f"wrong-dtype: target {schema.y_field!r} = {str(y)[:50]!r} is not a number"
    if abs(y) > _F32_MAX:
        return None, f"non-finite: target {y} overflows float32"
    return float(y), None


@dataclass(frozen=True, slots=True)
class Batch:
    """A poll checked at once: the good messages' features as one block, their labels, and why the others
    were refused. Messages are named by their index in the poll; a None payload is neither good nor refused."""

    x: np.ndarray  # (n_good, n_features) float32, in poll order
    y: np.ndarray  # (n_good,) int64 class indices, or float64 targets; 0 where unlabelled
    labelled: np.ndarray  # (n_good,) bool: False for a message without a label (predict only)
    good: np.ndarray  # (n_good,) int64: the poll index of each row
    rejected: dict[int, str]  # poll index -> reason ("code: detail")


_EXACT_INT = 2.0**53  # simdjson hands integers over as doubles: exact below this, as numpy's int64 path is
_local = threading.local()  # a simdjson parser per thread: it reuses its buffers, and is not thread-safe


def _fast(payload: bytes, schema: Schema, x_key: bytes, y_key: bytes) -> tuple[bytes, object] | None:
    """(the features as packed doubles, the raw label) of a plain well-formed message, or None: then parse()
    decides. Plain: no escapes, one array (so `x` is flat), `x` and `y` each at most once as a key, so that
    simdjson (first key wins) and orjson (last key wins) read the same message."""
    if (
        len(payload) > schema.max_bytes
        or payload.count(b"[") != 1
        or b"\\" in payload
        or payload.count(x_key) != 1
        or payload.count(y_key) > 1
    ):
        return None
    parser = getattr(_local, "parser", None) or _new_parser()
    doc = None
    try:
        doc = parser.parse(payload)
        packed = doc[schema.x_field].as_buffer(of_type="d")  # refuses booleans, strings and nulls
        y = doc.get(schema.y_field)
    except Exception:  # not JSON, not an object, no such field, not numbers: parse() says which
        return None
    finally:
        del doc  # the parser refuses to parse again while a document of its last parse is alive
    if memoryview(packed).nbytes != 8 * schema.n_features or not (y is None or isinstance(y, int | float)):
        return None
    return packed, y


def _new_parser():
    _local.parser = simdjson.Parser()
    return _local.parser


def parse_many(payloads: list[bytes | None], ids: list[str], schema: Schema) -> Batch:
    """Check a poll's messages as `parse` would, each to the same verdict and the same float32 features,
    without a Python object per number for plain well-formed messages (simdjson's buffer of doubles).
    Never raises. `ids` name the messages in their reasons. A None payload (a body that is gone) is skipped."""
    n = schema.n_features
    x_key, y_key = f'"{schema.x_field}"'.encode(), f'"{schema.y_field}"'.encode()
    fast_at, packed, raw_y, slow_at = [], [], [], []
    for i, payload in enumerate(payloads):
        if payload is None:
            continue
        got = _fast(payload, schema, x_key, y_key)
        if got is None:
            slow_at.append(i)
        else:
            fast_at.append(i)
            packed.append(got[0])
            raw_y.append(got[1])
    wide = np.frombuffer(b"".join(packed), np.float64).reshape(len(packed), n)
    with np.errstate(over="ignore"):
        block = wide.astype(np.float32)
    # Non-finite rows and huge integers (where an int64 and a double round differently) go the orjson way.
    plain = np.isfinite(block).all(axis=1) & (np.abs(wide) < _EXACT_INT).all(axis=1)
    rows: dict[int, tuple] = {}
    rejected: dict[int, str] = {}
    for k, i in enumerate(fast_at):
        if not plain[k]:
            slow_at.append(i)
            continue
        y, why = _label(raw_y[k], schema)
        if why is not None:
            rejected[i] = why
        else:
            rows[i] = (k, y)
    slow_x: dict[int, np.ndarray] = {}
    for i in slow_at:
        s = parse(payloads[i], schema, ids[i])
        if isinstance(s, Rejected):
            rejected[i] = s.reason
        else:
            slow_x[i] = s.x
            rows[i] = (None, s.y)
    good = np.array(sorted(rows), dtype=np.int64)
    x = block[[rows[i][0] for i in good]] if not slow_x else np.empty((len(good), n), np.float32)
    if slow_x:
        for r, i in enumerate(good.tolist()):
            k = rows[i][0]
            x[r] = block[k] if k is not None else slow_x[i]
    labels = [rows[i][1] for i in good.tolist()]
    labelled = np.array([v is not None for v in labels], dtype=bool)
    dtype = np.int64 if schema.task == "classification" else np.float64
    y = np.array([0 if v is None else v for v in labels], dtype=dtype)
    return Batch(x, y, labelled, good, rejected)


def _kind(x: np.ndarray) -> str:
    return {"b": "booleans", "U": "strings", "S": "bytes", "O": "mixed or non-numeric values"}.get(
        x.dtype.kind, f"dtype {x.dtype}"
    )
