"""Short names of config keys (one table for train() keywords and CLI flags), field descriptions, and the
checks that keep bad values from being silently reinterpreted or echoed at megabyte size."""

from __future__ import annotations

import time

import pytest

import cadence
from cadence.config import build_config, load_config
from cadence.config_keys import config_keys, short_names
from cadence.errors import ConfigError


def _leaves(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in tree.items():
        out |= _leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
    return out


def test_short_names_reach_every_leaf_of_the_config_once():
    tree = build_config({"schedule": {"plateau": {}}}).model_dump()  # the optional section, filled in
    names = short_names()
    assert set(names.values()) == _leaves(tree)
    primary = [k.name for k in config_keys()]
    assert len(primary) == len(set(primary)) == len(_leaves(tree))


def test_every_field_has_a_description():
    missing = [k.dotted for k in config_keys() if not k.field.description]
    assert missing == []


@pytest.mark.parametrize(
    ("name", "value", "dotted"),
    [
        ("lr", 0.3, "optimizer.lr"),
        ("strategy", "online", "strategy.name"),
        ("max_epochs", 2, "stop.max_epochs"),
        ("epochs", 2, "stop.max_epochs"),
        ("plateau_patience", 2, "schedule.plateau.patience"),
        ("eval_batch_size", 32, "eval.batch_size"),
        ("batch_norm", True, "model.batch_norm"),
        ("T_max", 7, "schedule.T_max"),
        ("t_max", 7, "schedule.T_max"),
    ],
)
def test_a_short_name_sets_its_key(name, value, dotted):
    from cadence.engine.loop import resolve_config

    cfg = resolve_config(None, {name: value}).model_dump(mode="json")
    for part in dotted.split("."):
        cfg = cfg[part]
    assert cfg == value


@pytest.mark.parametrize(
    "tree",
    [
        {"optimizer": {"lr": True}},
        {"stop": {"max_epochs": True}},
        {"optimizer": {"betas": [True, 0.9]}},
        {"regularization": {"l2": False}},
        {"data": {"val_fraction": False}},
    ],
)
def test_booleans_are_refused_where_a_number_is_needed(tree):
    with pytest.raises(ConfigError, match="expected a number, got the boolean"):
        build_config(tree)


def test_numbers_still_take_yaml_strings_and_bool_fields_take_bools(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optimizer: {lr: 1e-3}\nmodel: {batch_norm: true}\naugment: {flip: yes}\n")
    cfg = load_config(path)  # YAML 1.1 reads 1e-3 as the string '1e-3'
    assert cfg.optimizer.lr == 0.001 and cfg.model.batch_norm is True and cfg.augment.flip is True


def test_an_alias_bomb_is_refused_fast_with_a_short_message(tmp_path):
    from tests.test_errors import ALIAS_BOMB

    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB + "data: {name: *g}\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert time.perf_counter() - start < 30  # generous: the full walk would take minutes and gigabytes
    assert len(str(err.value)) < 300 and "expands to more than 100,000 values" in str(err.value)


def test_echoed_values_are_clipped_and_long_error_lists_cut():
    with pytest.raises(ConfigError) as err:
        build_config({"optimizer": {"lr": "x" * 100_000}})
    assert len(str(err.value)) < 500 and "'optimizer.lr' = 'xxx" in str(err.value)
    with pytest.raises(ConfigError) as err:
        build_config({f"key{i}": i for i in range(50)})
    message = str(err.value)
    assert message.count("unknown key") == 20 and "... and 30 more" in message
    with pytest.raises(ConfigError) as err:
        cadence.train(**{"x" * 10_000: 1})
    assert len(str(err.value)) < 600
