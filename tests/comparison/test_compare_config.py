"""The `compare:` settings: short forms, the one-budget rule, and errors that name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from cadence.comparison import build_compare_config, load_compare_file
from cadence.comparison.config import dump_compare_file
from cadence.errors import ConfigError


def test_defaults_are_three_strategies_three_optimizers_three_seeds_five_epochs():
    cc = build_compare_config()
    assert [s.name.value for s in cc.strategies] == ["full-batch", "mini-batch", "online"]
    assert [o.name for o in cc.optimizers] == ["sgd", "momentum", "adam"]
    assert cc.seeds == [0, 1, 2] and cc.budget.mode == "epochs" and cc.budget.amount == 5


def test_short_forms_build_the_same_entries_as_mappings():
    short = build_compare_config(
        {
            "strategies": ["mini-batch:32", "online"],
            "optimizers": ["adam:0.002", "sgd"],
            "seeds": 2,
            "budget": "samples=500",
        }
    )
    long = build_compare_config(
        {
            "strategies": [{"name": "mini-batch", "batch_size": 32}, {"name": "online"}],
            "optimizers": [{"name": "adam", "lr": 0.002}, {"name": "sgd"}],
            "seeds": [0, 1],
            "budget": {"samples": 500},
        }
    )
    assert short == long
    assert short.strategies[0].batch_size == 32 and short.optimizers[0].lr == 0.002
    assert "lr" not in short.optimizers[1].model_fields_set  # sgd keeps the per-strategy default


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        ({"strategies": ["stream"]}, "stream reads a live Stream"),
        ({"strategies": ["online:32"]}, "only mini-batch takes a batch size"),
        ({"budget": {"epochs": 3, "samples": 100}}, "set exactly one of epochs, samples, updates, seconds"),
        ({"budget": "samples"}, "write a budget as mode=amount"),
        ({"optimizers": []}, "optimizers is empty"),
        ({"seeds": [1, 1]}, "seeds lists the same entry twice"),
        ({"seeds": 0}, "the number of seeds must be >= 1"),
        ({"optimizers": ["adam:fast"]}, "name:lr"),
        ({"optimizers": ["lbfgs"]}, "compare.optimizers.0.name"),
        ({"strategy": ["online"]}, "unknown key 'compare.strategy'; allowed keys in compare: strategies"),
    ],
)
def test_bad_settings_raise_config_error_naming_the_problem(tree, message):
    with pytest.raises(ConfigError, match="invalid compare settings") as err:
        build_compare_config(tree)
    assert message in str(err.value)


def test_yaml_file_holds_run_settings_and_a_compare_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "model:\n  spec: mlp:16\ncompare:\n  strategies: [online]\n  optimizers: [sgd]\n"
        "  budget: {updates: 50}\n  seeds: 1\n"
    )
    base, cc = load_compare_file(path)
    assert base.model.spec == "mlp:16" and cc.budget.updates == 50 and cc.seeds == [0]


@pytest.mark.parametrize(
    ("yaml_text", "where", "fix"),
    [
        ("stop:\n  max_epochs: 3\n", "stop.max_epochs", "compare: {budget: {epochs: 5}}"),
        ("strategy:\n  name: online\n", "strategy.name", "compare: {strategies:"),
        ("optimizer:\n  weight_decay: 0.1\n", "optimizer", "{name: adam, lr: 0.001, weight_decay: 0.01}"),
        ("seed: 4\n", "seed", "compare: {seeds: 3}"),
    ],
)
def test_settings_the_grid_sets_per_run_are_refused_naming_the_compare_key(tmp_path, yaml_text, where, fix):
    with pytest.raises(ConfigError, match=f"sets {where}, but a comparison sets it for every run") as err:
        load_compare_file(_write(tmp_path, yaml_text))
    assert fix in str(err.value)


def test_run_settings_the_grid_keeps_apply_to_every_run(tmp_path):
    base, _ = load_compare_file(_write(tmp_path, "strategy:\n  batch_size: 32\nstop:\n  tol: 0.001\n"))
    assert base.strategy.batch_size == 32 and base.stop.tol == 0.001


def test_dumped_yaml_reads_back_as_the_same_comparison(tmp_path):
    base, cc = load_compare_file(_write(tmp_path, "compare:\n  optimizers: [sgd, adam:0.002]\n  goal: 0.9\n"))
    again = _write(tmp_path, dump_compare_file(base.model_dump(mode="json"), cc.dump()), "again.yaml")
    base2, cc2 = load_compare_file(again)
    assert base2 == base and cc2 == cc
    assert "lr" not in cc2.optimizers[0].model_fields_set  # a default lr stays a default


def _write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_readme_compare_yaml_example_is_a_valid_comparison(tmp_path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Comparing strategies", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    base, cc = load_compare_file(_write(tmp_path, example))
    assert base.model.spec == "mlp:128,64" and cc.budget.samples == 12570 and cc.goal == 0.95
    assert [(o.name, "lr" in o.model_fields_set) for o in cc.optimizers] == [
        ("sgd", False),
        ("momentum", False),
        ("adam", True),
    ]
