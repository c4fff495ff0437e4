"""Per-message checks: each malformed form gets its reason code; good messages come back as Samples."""

from __future__ import annotations

import numpy as np
import pytest

from cadence.data.streams import Rejected, Sample, Schema, parse

SCHEMA = Schema(n_features=3, n_classes=4, max_bytes=200)


@pytest.mark.parametrize(
    ("payload", "code", "says"),
    [
        (b'{"x": [1, 2', "not-json", ""),
        (b'{"x": [NaN, 1, 2], "y": 1}', "not-json", ""),
        (b"[1, 2, 3]", "not-an-object", "JSON list"),
        (b'{"features": [1, 2, 3], "y": 1}', "missing-field", "no 'x'"),
        (b'{"x": [1, 2], "y": 1}', "wrong-shape", "expected 3 numbers"),
        (b'{"x": [[1, 2], [3]], "y": 1}', "wrong-shape", "ragged"),
        (b'{"x": ["a", "b", "c"], "y": 1}', "wrong-dtype", "strings"),
        (b'{"x": [true, false, true], "y": 1}', "wrong-dtype", "booleans"),
        (b'{"x": [1e39, 1, 2], "y": 1}', "non-finite", "float32"),
        (b'{"x": [1, 2, 3], "y": 4}', "label-out-of-range", "not in [0, 3]"),
        (b'{"x": [1, 2, 3], "y": 1.5}', "wrong-dtype", "not an integer"),
        (b'{"x": [1, 2, 3], "y": true}', "wrong-dtype", "not an integer"),
        (b'{"x": [1, 2, 3], "y": 1, "pad": "' + b"p" * 200 + b'"}', "oversized", "max_message_bytes=200"),
    ],
)
def test_each_malformed_message_is_rejected_with_its_reason(payload, code, says):
    out = parse(payload, SCHEMA, "7-0")
    assert isinstance(out, Rejected)
    assert out.code == code and says in out.reason
    assert out.payload == payload and out.id == "7-0"


def test_good_messages_become_samples_with_flat_features():
    out = parse(b'{"x": [[1, 2, 3]], "y": 2, "id": "order-9"}', SCHEMA, "7-0")
    assert isinstance(out, Sample) and out.id == "order-9" and out.y == 2
    assert out.x.tolist() == [1, 2, 3]  # integers stay integers: the learner's float32 buffer converts them
    floats = parse(b'{"x": [0.5, 1, 2.25], "y": 0}', SCHEMA, "7-1")
    assert floats.x.dtype == np.float32 and floats.x.tolist() == [0.5, 1.0, 2.25]
    unlabelled = parse(b'{"x": [1, 2, 3]}', SCHEMA, "8-0")
    assert unlabelled.y is None and unlabelled.id == "8-0"


def test_regression_targets_are_numbers():
    schema = Schema(n_features=1, task="regression")
    assert parse(b'{"x": [1], "y": 2.5}', schema, "1").y == 2.5
    assert parse(b'{"x": [1], "y": "2.5"}', schema, "1").code == "wrong-dtype"
