"""Per-message checks: each malformed form gets its reason code; good messages come back as Samples."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cadence.data.streams import Rejected, Sample, Schema, parse, parse_many

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


def _one_by_one(payloads, schema):
    return [parse(p, schema, str(i)) for i, p in enumerate(payloads)]


def _assert_same_verdicts(payloads, schema):
    """parse_many gives every message parse()'s verdict: the same reason, or the same float32 row and label."""
    batch = parse_many(payloads, [str(i) for i in range(len(payloads))], schema)
    expected = _one_by_one(payloads, schema)
    good = {i: r for r, i in enumerate(batch.good.tolist())}
    for i, want in enumerate(expected):
        if isinstance(want, Rejected):
            assert batch.rejected.get(i) == want.reason, payloads[i]
            assert i not in good
        else:
            assert i in good and i not in batch.rejected, payloads[i]
            row = good[i]
            np.testing.assert_array_equal(batch.x[row], want.x.astype(np.float32), err_msg=repr(payloads[i]))
            assert batch.labelled[row] == (want.y is not None)
            assert batch.y[row] == (want.y if want.y is not None else 0)
    assert batch.x.dtype == np.float32 and batch.x.shape == (len(good), schema.n_features)


def test_a_poll_checked_at_once_gets_each_message_its_own_verdict():
    variants = [
        b'{"x": [1, 2, 3], "y": 1}',
        b'{"y": 3, "x": [0.5, -0, 2.25]}',
        b'{"x": [-0.0, 1e-400, 3], "y": 0}',  # signed zero and underflow as numpy's float path has them
        b'{"x": [1, 2, 3]}',  # no label: predict only
        b'{"x": [1, 2, 3], "y": null}',
        b'{"x": [9007199254740993, 1, 2], "y": 1}',  # beyond 2**53: int64 and double round differently
        b'{"x": [18446744073709551615, 1, 2], "y": 1}',
        b'{"x": [99999999999999999999, 1, 2], "y": 1}',  # orjson takes it as a float
        b'{"x": [[1, 2, 3]], "y": 2}',  # nested, flattened
        b'{"x": [[], [1, 2], 3], "y": 2}',  # ragged, though its flat length fits
        b'{"x": [1, 2, 3], "x": [4, 5, 6], "y": 1}',  # duplicate key: the last one counts, as in orjson
        b'{"x": [1, 2, 3], "y": 1, "y": 9}',
        b'{"\\u0078": [1, 2, 3], "y": 1}',  # an escaped key
        b'{"x": [1, 2, 3], "y": 1, "note": "[x]"}',
        b'{"x": [1, 2, 3], "y": {"a": 1}}',
        b'{"x": [1, 2, 3], "y": "1"}',
        b'{"x": [1, 2, 3], "y": 1.0}',
        b'{"x": [1, 2, 3], "y": 18446744073709551615}',
        b'{"x": [1, 2, 3], "id": {"k": 1}, "y": 1}',
        b'{"x": [1e39, 1, 2], "y": 1}',
        b'{"x": [1e999, 1, 2], "y": 1}',
        b'{"x": [NaN, 1, 2], "y": 1}',
        b'{"x": [1, 2, 3], "y": 1} trailing',
        b'{"x": [1, 2, 3, 4], "y": 1}',
        b'{"x": [], "y": 1}',
        b'{"x": 5, "y": 1}',
        b'{"x": null, "y": 1}',
        b'{"x": "abc", "y": 1}',
        b'{"x": [true, 2, 3], "y": 1}',
        b'{"x": ["1", 2, 3], "y": 1}',
        b"[1, 2, 3]",
        b"17",
        b"",
        b'{"x": [1, 2, 3], "y": 1, "pad": "' + b"p" * 200 + b'"}',
    ]
    _assert_same_verdicts(variants, SCHEMA)
    _assert_same_verdicts(
        [b'{"x": [1], "y": 2.5}', b'{"x": [1], "y": 3}', b'{"x": [1], "y": 1e39}', b'{"x": [1], "y": true}'],
        Schema(n_features=1, task="regression"),
    )


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.integers(-(2**70), 2**70),
            st.floats(allow_nan=True, allow_infinity=False, width=64),
            st.booleans(),
            st.none(),
            st.text(max_size=2),
        ),
        min_size=2,
        max_size=4,
    ),
    st.one_of(st.integers(-2, 6), st.floats(-1, 5), st.none(), st.booleans()),
)
def test_parse_many_agrees_with_parse_on_any_features_and_label(x, y):
    schema = Schema(n_features=3, n_classes=4)
    message = orjson.dumps({"x": x, "y": y}, option=orjson.OPT_NON_STR_KEYS) if _dumpable(x) else b"{}"
    _assert_same_verdicts([message, message.replace(b'"y":', b'"y" :')], schema)


def _dumpable(x) -> bool:
    try:
        orjson.dumps(x)
    except TypeError:
        return False  # an integer beyond 64 bits
    return True
