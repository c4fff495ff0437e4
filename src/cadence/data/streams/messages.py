"""A stream's messages: `Sample(id, x, y)`, the schema every message is checked against, and the checks.

A message that fails a check becomes a `Rejected` with a reason code, never an exception: the learner sends
it to the dead letters and goes on. Reading messages is jsonl.py's and redis.py's; training is serve/'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

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
    y = msg.get(schema.y_field)
    if y is None:
        return Sample(str(sample_id), x, None)
    if schema.task == "classification":
        if isinstance(y, bool) or not isinstance(y, int):
            return bad(f"wrong-dtype: label {schema.y_field!r} = {str(y)[:50]!r} is not an integer class index")
        if not 0 <= y < (schema.n_classes or 0):
            return bad(f"label-out-of-range: {y} is not in [0, {(schema.n_classes or 0) - 1}]")
        return Sample(str(sample_id), x, y)
    if isinstance(y, bool) or not isinstance(y, int | float):
        return bad(f"wrong-dtype: target {schema.y_field!r} = {str(y)[:50]!r} is not a number")
    if abs(y) > _F32_MAX:
        return bad(f"non-finite: target {y} overflows float32")
    return Sample(str(sample_id), x, float(y))


def _kind(x: np.ndarray) -> str:
    return {"b": "booleans", "U": "strings", "S": "bytes", "O": "mixed or non-numeric values"}.get(
        x.dtype.kind, f"dtype {x.dtype}"
    )
