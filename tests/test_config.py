"""Config errors name the key, the value and what is allowed — from Python, YAML and flags alike."""

from __future__ import annotations

import pytest

from cadence.config import DEFAULT_LRS, Strategy, build_config, load_config
from cadence.errors import ConfigError


def test_defaults_are_a_valid_run():
    cfg = build_config()
    assert cfg.strategy.name == Strategy.MINI_BATCH and cfg.data.name == "digits"
    # the measured defaults (bench/defaults.py): adam at its mini-batch lr, early stopping, epoch and time caps
    assert (
        (cfg.optimizer.name, cfg.optimizer.lr)
        == ("adam", DEFAULT_LRS[Strategy.MINI_BATCH]["adam"])
        == ("adam", 1e-3)
    )
    assert (cfg.stop.early_stopping_metric, cfg.stop.early_stopping_patience) == ("val_loss", 10)
    assert (cfg.stop.max_epochs, cfg.stop.max_seconds, cfg.stop.restore_best_weights) == (200, 600.0, True)


def test_an_unset_lr_follows_the_strategy_and_optimizer_but_a_given_one_stays():
    cfg = build_config()
    assert cfg.with_overrides({"strategy.name": "online"}).optimizer.lr == DEFAULT_LRS[Strategy.ONLINE]["adam"]
    assert cfg.with_overrides({"optimizer.name": "sgd"}).optimizer.lr == DEFAULT_LRS[Strategy.MINI_BATCH]["sgd"]
    given = cfg.with_overrides({"optimizer.lr": 0.05})
    assert given.with_overrides({"strategy.name": "full-batch"}).optimizer.lr == 0.05
    assert build_config({"optimizer": {"lr": None}, "strategy": {"name": "full-batch"}}).optimizer.lr == 0.01


def test_early_stopping_none_turns_it_off():
    assert build_config({"stop": {"early_stopping_metric": "none"}}).stop.early_stopping_metric is None


def test_unknown_key_is_named_with_the_allowed_keys():
    with pytest.raises(
        ConfigError, match=r"unknown key 'optimizer\.learning_rate' = 0\.1; allowed keys here: name, lr"
    ):
        build_config({"optimizer": {"learning_rate": 0.1}})


def test_out_of_range_value_is_named_with_the_value():
    with pytest.raises(ConfigError, match=r"'strategy\.batch_size' = 0: Input should be greater than 0"):
        build_config({"strategy": {"batch_size": 0}})


def test_bad_choice_lists_the_allowed_choices():
    with pytest.raises(ConfigError, match=r"'strategy\.name' = 'minibatch'.*'full-batch', 'mini-batch', 'online'"):
        build_config({"strategy": {"name": "minibatch"}})


def test_every_bad_key_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        build_config({"optimizer": {"lr": -1}, "seed": -3, "nonsense": 1})
    message = str(err.value)
    assert "optimizer.lr" in message and "'seed'" in message and "unknown key 'nonsense'" in message


def test_yaml_config_is_checked_the_same_way(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("strategy:\n  name: online\noptimizer:\n  name: adam\n  lr: 0.001\n")
    cfg = load_config(good)
    assert cfg.strategy.name == Strategy.ONLINE and cfg.optimizer.name == "adam"
    bad = tmp_path / "bad.yaml"
    bad.write_text("optimizer:\n  name: adamm\n")
    with pytest.raises(ConfigError, match=r"(?s)bad\.yaml.*'optimizer\.name' = 'adamm'"):
        load_config(bad)


@pytest.mark.parametrize(
    ("text", "match"),
    [("optimizer: [1, 2\n", "not valid YAML"), ("- 1\n- 2\n", "must hold a mapping"), (None, "does not exist")],
)
def test_unreadable_yaml_gets_a_clear_error(tmp_path, text, match):
    path = tmp_path / "c.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_overrides_are_validated_like_the_file():
    cfg = build_config().with_overrides({"optimizer.lr": 0.5, "strategy.name": "online"})
    assert cfg.optimizer.lr == 0.5 and cfg.strategy.name == Strategy.ONLINE
    with pytest.raises(ConfigError, match="val_fraction \\+ test_fraction must be < 1"):
        build_config().with_overrides({"data.val_fraction": 0.6, "data.test_fraction": 0.5})
