"""Property test: from_arrays on random shapes, dtypes, NaNs and labels either builds a Dataset or raises
DataError; no other exception (IndexError, sklearn's ValueError, ...) escapes to the user."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cadence.config import DataConfig
from cadence.data.datasets import Dataset, from_arrays
from cadence.errors import DataError

# Every example tried here counts toward the bad inputs listed in docs/errors.md.
EXAMPLES = 300

DTYPES = st.sampled_from([np.float32, np.float64, np.int64, np.int8, np.uint8, np.bool_])


@st.composite
def inputs(draw):
    dtype = draw(DTYPES)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9))
    x = draw(hnp.arrays(dtype, shape))
    n = shape[0] if shape else 1
    y_len = draw(st.sampled_from([n, n, n, max(n - 1, 0), n + 1]))
    y_kind = draw(st.sampled_from(["int", "float", "nan", "negative", "big", "bool", "2d", "str"]))
    if y_kind == "int":
        y = draw(hnp.arrays(np.int64, (y_len,), elements=st.integers(0, 3)))
    elif y_kind == "float":
        y = draw(hnp.arrays(np.float64, (y_len,), elements=st.floats(-5, 5)))
    elif y_kind == "nan":
        y = draw(hnp.arrays(np.float64, (y_len,)))
    elif y_kind == "negative":
        y = draw(hnp.arrays(np.int64, (y_len,), elements=st.integers(-3, 3)))
    elif y_kind == "big":
        y = draw(hnp.arrays(np.int64, (y_len,), elements=st.integers(0, 10**6)))
    elif y_kind == "bool":
        y = draw(hnp.arrays(np.bool_, (y_len,)))
    elif y_kind == "2d":
        y = draw(hnp.arrays(np.float32, (y_len, draw(st.integers(1, 3)))))
    else:
        y = np.array(draw(st.lists(st.text(max_size=3), min_size=y_len, max_size=y_len)), dtype=object)
    n_classes = draw(st.sampled_from([None, None, 1, 2, 4]))
    config = DataConfig(
        task=draw(st.sampled_from(["auto", "classification", "regression"])),
        val_fraction=draw(st.sampled_from([0.0, 0.1, 0.5])),
        test_fraction=draw(st.sampled_from([0.0, 0.2, 0.4])),
        standardize=draw(st.sampled_from(["feature", "global", "none"])),
        limit=draw(st.sampled_from([None, 1, 3])),
    )
    return x, y, n_classes, config


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs())
def test_from_arrays_builds_a_dataset_or_raises_data_error(case):
    x, y, n_classes, config = case
    try:
        data = from_arrays(x, y, n_classes=n_classes, config=config)
    except DataError as err:
        assert str(err), "a DataError must say what is wrong"
    else:
        assert isinstance(data, Dataset)
        assert len(data.x_train) > 0
        assert np.isfinite(data.x_train.numpy()).all() and np.isfinite(data.y_train.numpy()).all()
