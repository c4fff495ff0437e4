"""Property tests: any dict, YAML text or dotted override either builds a RunConfig or raises ConfigError
naming the offending key; nothing else escapes (no KeyError, TypeError, pydantic or YAML exception)."""

from __future__ import annotations

import re

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cadence.config import RunConfig, build_config, load_config
from cadence.errors import ConfigError

SECTIONS = {
    name: list(field.annotation.model_fields)
    for name, field in RunConfig.model_fields.items()
    if hasattr(field.annotation, "model_fields")
}
TOP = list(RunConfig.model_fields)
KEYS = st.sampled_from(TOP + [k for keys in SECTIONS.values() for k in keys] + ["bogus", "", "lr ", "Data"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["mini-batch", "online", "full-batch", "stream", "adam", "sgd", "digits", "mlp:8", "cnn"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS | st.text(max_size=5), inner, max_size=4),
    max_leaves=8,
)
TREES = st.dictionaries(
    st.sampled_from(TOP + ["bogus"]),
    st.dictionaries(KEYS, VALUES, max_size=5) | VALUES,
    max_size=6,
)
# Every example tried here counts toward the bad inputs listed in docs/errors.md.
EXAMPLES = 300


def _names_a_key(message: str, tree) -> bool:
    """A ConfigError message names where it went wrong: a quoted key path, or the top level."""
    return bool(re.search(r"'[^']*'", message)) or "(top level)" in message


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TREES)
def test_any_config_tree_builds_or_raises_config_error_naming_the_key(tree):
    try:
        config = build_config(tree)
    except ConfigError as err:
        assert _names_a_key(str(err), tree), str(err)
    else:
        assert isinstance(config, RunConfig)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.dictionaries(st.text(alphabet="abcdefghilmnoprstuz._", min_size=1, max_size=24), SCALARS, max_size=4))
@example({"optimizer": None})  # a section replaced by a scalar, once a TypeError (the default-lr reset)
@example({"strategy": 3, "optimizer.name": "sgd"})
def test_any_dotted_override_applies_or_raises_config_error(overrides):
    try:
        config = RunConfig().with_overrides(overrides)
    except ConfigError as err:
        assert "'" in str(err), str(err)
    else:
        assert isinstance(config, RunConfig)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.text(max_size=200), TREES.map(lambda t: yaml.safe_dump(t, allow_unicode=True)), st.binary(max_size=64)
    )
)
def test_any_yaml_file_loads_or_raises_config_error(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    try:
        config = load_config(path)
    except ConfigError as err:
        assert str(path) in str(err) or _names_a_key(str(err), None), str(err)
    else:
        assert isinstance(config, RunConfig)
