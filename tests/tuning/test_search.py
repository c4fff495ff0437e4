"""The Optuna search in one process: the declared space and its checks, folds, pruning steps, the trial budget,
dead-worker recovery, and the best config as a ready-to-run file."""

from __future__ import annotations

import os
import socket
import statistics

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from cadence.config import build_config, load_config
from cadence.errors import ConfigError
from cadence.tuning.objective import make_folds
from cadence.tuning.search import tune
from cadence.tuning.space import apply_params, build_tune_config, check_space, load_tune_file, suggest
from cadence.tuning.storage import OWNER, open_storage
from cadence.tuning.workers import budget_state, run_worker

optuna.logging.set_verbosity(optuna.logging.WARNING)

SMALL = {
    "data": {"name": "digits"},
    "model": {"spec": "mlp:16"},
    "stop": {"max_epochs": 2, "early_stopping_metric": None},
    "threads": 1,
}


def base(**changes):
    tree = yaml.safe_load(yaml.safe_dump(SMALL))
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return build_config(tree)


LR = {"optimizer.lr": {"low": 1e-3, "high": 1.0, "log": True}}


# ---- the space ---------------------------------------------------------------------------------------------


def test_space_kinds_from_yaml():
    settings = build_tune_config(
        yaml.safe_load(
            """
            space:
              optimizer.name: [sgd, adam]
              optimizer.lr: {low: 1.0e-4, high: 1.0, log: true}
              strategy.batch_size: {low: 16, high: 256, step: 16}
              model.dropout: {low: 0, high: 0.5}
            """
        )
    )
    kinds = {k: s.kind for k, s in settings.space.items()}
    assert kinds == {
        "optimizer.name": "categorical",
        "optimizer.lr": "float",
        "strategy.batch_size": "int",
        "model.dropout": "float",
    }


@pytest.mark.parametrize(
    "space, match",
    [
        ({}, "space is empty"),
        ({"optimizer.lr": {"low": 1.0, "high": 0.1}}, "low < high"),
        ({"optimizer.lr": {"low": 0.0, "high": 1.0, "log": True}}, "log range needs low > 0"),
        ({"optimizer.lr": {"low": 0.1}}, "both low and high"),
        ({"optimizer.name": []}, "choices is empty"),
        ({"seed": [1, 2]}, "own seed"),
        ({"schedule.step_size": {"low": 1, "high": 9, "when": {"schedule.name": ["step"]}}}, "listed before it"),
        ({"model.width": {"low": 8.5, "high": 64}}, "number of units"),
    ],
)
def test_bad_spaces_are_refused_with_the_reason(space, match):
    with pytest.raises(ConfigError, match=match):
        build_tune_config({"space": space})


def test_no_budget_is_refused():
    with pytest.raises(ConfigError, match="set a budget"):
        build_tune_config({"trials": None})


def test_a_tune_file_with_an_alias_bomb_or_a_huge_value_gets_a_short_error(tmp_path):
    from tests.test_errors import ALIAS_BOMB

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(ALIAS_BOMB + "tune: {trials: 2, space: {optimizer.lr: *g}}\n")
    with pytest.raises(ConfigError, match="expands to more than 100,000 values") as err:
        load_tune_file(bomb)
    assert len(str(err.value)) < 300
    huge = tmp_path / "huge.yaml"
    huge.write_text(yaml.safe_dump({"tune": {"trials": "x" * 100_000, "space": {"optimizer.lr": [0.1]}}}))
    with pytest.raises(ConfigError, match="'tune.trials' = 'xxx") as err:
        load_tune_file(huge)
    assert len(str(err.value)) < 600


@pytest.mark.parametrize(
    "space, match",
    [
        ({"optimizer.lrr": [0.1]}, "optimizer.lrr"),
        ({"optimizer.name": ["sgd", "lion"]}, "'lion'"),
        ({"schedule.name": ["constant", "step"]}, "step_size"),
        ({"model.depth": {"low": 1, "high": 3}}, "mlp"),
    ],
)
def test_every_candidate_is_tried_against_the_run_config_before_any_trial(space, match):
    config = base(**({"model.spec": "cnn"} if "model.depth" in space else {}))
    with pytest.raises(ConfigError, match=match):
        check_space(config, build_tune_config({"space": space}))


def test_a_conditional_parameter_makes_the_dependent_choice_valid():
    space = {
        "schedule.name": ["constant", "step"],
        "schedule.step_size": {"low": 10, "high": 100, "when": {"schedule.name": ["step"]}},
    }
    check_space(base(), build_tune_config({"space": space}))  # no error: step always comes with a step_size


def test_suggest_asks_conditional_and_per_layer_parameters():
    settings = build_tune_config(
        {
            "space": {
                "optimizer.name": ["sgd", "momentum"],
                "optimizer.momentum": {"low": 0.5, "high": 0.99, "when": {"optimizer.name": ["momentum"]}},
                "model.depth": {"low": 1, "high": 3},
                "model.width": {"low": 8, "high": 64},
            }
        }
    )
    trial = optuna.trial.FixedTrial(
        {"optimizer.name": "sgd", "model.depth": 2, "model.width.1": 40, "model.width.2": 9}
    )
    params = suggest(trial, settings.space, base())
    assert params == {"optimizer.name": "sgd", "model.depth": 2, "model.width.1": 40, "model.width.2": 9}
    trial = optuna.trial.FixedTrial(
        {"optimizer.name": "momentum", "optimizer.momentum": 0.9, "model.depth": 1, "model.width.1": 12}
    )
    assert suggest(trial, settings.space, base())["optimizer.momentum"] == 0.9
    config = apply_params(base(), {"model.depth": 3, "model.width.2": 33}, seed=7)
    assert config.model.spec == "mlp:16,33,16" and config.seed == 7  # unset layers keep the base width


# ---- folds ---------------------------------------------------------------------------------------------------


def test_folds_partition_train_and_validation_and_never_hold_the_test_split(digits):
    folds = make_folds(digits, 3, seed=0)
    n = len(digits.x_train) + len(digits.x_val)
    assert [len(f.x_train) + len(f.x_val) for f in folds] == [n] * 3
    assert sum(len(f.x_val) for f in folds) == n
    rows = {tuple(r.tolist()) for f in folds for r in f.x_val[:, :20]}
    assert len(rows) > 0.9 * n  # validation parts are disjoint (up to duplicate images in digits)
    assert all(len(f.x_test) == 0 for f in folds)
    for f in folds:  # stratified: every class in every validation part, in proportion
        counts = torch.bincount(f.y_val, minlength=10).float()
        assert counts.min() > 0.7 * counts.mean()
    assert len(make_folds(digits, 1, 0)[0].x_test) == 0


# ---- the study in one process ----------------------------------------------------------------------------


def test_tune_finds_a_good_lr_and_reports_the_best_config_on_the_test_split(digits, tmp_path):
    result = tune(base(**{"stop.max_epochs": 4}), {"trials": 8, "space": LR, "pruner": "none"}, data=digits)
    assert [t["state"] for t in result.trials] == ["complete"] * 8
    assert [t["seed"] for t in result.trials] == [0] * 8  # the run's seed, recorded with every trial
    best = max(result.trials, key=lambda t: t["value"])
    assert result.best["number"] == best["number"] and result.best["value"] == best["value"]
    # Measured: the best of 8 log-uniform lrs in [1e-3, 1] reaches val accuracy 0.95 on digits in 4 epochs.
    assert result.best["value"] > 0.9
    assert result.final.test_metrics["test_accuracy"] > 0.88
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(result.best_config.model_dump(mode="json")))
    again = load_config(path)
    assert again == result.best_config
    assert again.optimizer.lr == result.best["params"]["optimizer.lr"] and again.seed == result.best["seed"]


def test_the_final_run_refits_on_train_and_validation_unless_told_not_to():
    settings = {"trials": 2, "space": LR, "pruner": "none"}
    refit = tune(base(), settings)  # data loaded from the config, so the refit can load it without a split
    n_train, n_val = 1257, 180
    assert refit.best_config.data.val_fraction == 0 and refit.meta["refit"]
    assert refit.final.samples_seen == 2 * (n_train + n_val)
    kept = tune(base(), {**settings, "refit": False})
    assert kept.best_config.data.val_fraction == 0.1 and not kept.meta["refit"]
    assert kept.final.samples_seen == 2 * n_train
    assert kept.final.val_metrics["val_accuracy"] == kept.best["value"]  # the best trial, re-run exactly
    # Early stopping reads the validation split, so the final run keeps it, and says so.
    stopping = tune(base(**{"stop.early_stopping_metric": "val_loss"}), settings)
    assert stopping.best_config.data.val_fraction == 0.1 and not stopping.meta["refit"]
    assert "keeps the validation split" in stopping.meta["notes"][0]


def test_cross_validation_reports_running_means_at_fold_ends(digits):
    result = tune(
        base(**{"stop.max_epochs": 3}), {"trials": 3, "folds": 2, "space": LR, "pruner": "none"}, data=digits
    )
    for t in result.trials:
        folds = t["fold_scores"]
        assert len(folds) == 2
        assert t["value"] == pytest.approx(statistics.fmean(folds))
        steps = t["intermediate"]
        assert sorted(int(s) for s in steps) == [0, 1, 2, 3, 4, 5]  # fold * epochs + epoch
        assert steps["2"] == pytest.approx(folds[0])  # the end of fold 1: its score
        assert steps["5"] == pytest.approx(statistics.fmean(folds))  # the end of fold 2: the running mean


@pytest.mark.parametrize("pruner", ["median", "successive-halving"])
def test_pruners_stop_hopeless_trials_early(digits, pruner):
    settings = {
        "trials": 12,
        "space": {"optimizer.lr": {"low": 1e-5, "high": 1.0, "log": True}},
        "pruner": pruner,
        "sampler": "random",
        "startup_trials": 3,
    }
    result = tune(base(**{"stop.max_epochs": 6}), settings, data=digits)
    pruned = [t for t in result.trials if t["state"] == "pruned"]
    complete = [t for t in result.trials if t["state"] == "complete"]
    assert pruned and complete
    assert max(len(t["intermediate"]) for t in pruned) < 6 == max(len(t["intermediate"]) for t in complete)
    worst_pruned_lr = min(t["params"]["optimizer.lr"] for t in pruned)
    assert worst_pruned_lr < 0.01  # the tiny lrs are the ones cut


def test_seconds_budget_alone(digits):
    result = tune(base(), {"trials": None, "seconds": 0.5, "space": LR, "final": False}, data=digits)
    assert len(result.trials) >= 1 and result.final is None


def test_joining_a_study_made_with_other_settings_is_refused(digits, tmp_path):
    journal = tmp_path / "study.journal"
    tune(base(), {"trials": 1, "space": LR, "final": False}, data=digits, storage=journal)
    tune(base(), {"trials": 2, "space": LR, "final": False}, data=digits, storage=journal)  # more trials: fine
    with pytest.raises(ConfigError, match="other settings"):
        tune(base(**{"model.spec": "mlp:8"}), {"trials": 3, "space": LR}, data=digits, storage=journal)


@pytest.mark.parametrize("storage, match", [(None, "in memory"), ("sqlite:///{tmp}/s.db", "SQLite locks")])
def test_several_workers_need_a_shareable_storage(digits, tmp_path, storage, match):
    url = storage.format(tmp=tmp_path) if storage else None
    with pytest.raises(ConfigError, match=match):
        tune(base(), {"trials": 2, "space": LR}, data=digits, storage=url, workers=2)


def test_a_bad_metric_or_storage_is_refused_before_any_trial(digits, tmp_path):
    with pytest.raises(ConfigError, match="val_accuracy"):
        tune(base(), {"trials": 2, "space": LR, "metric": "val_r2"}, data=digits)
    with pytest.raises(ConfigError, match="not supported"):
        tune(base(), {"trials": 2, "space": LR}, data=digits, storage="mysql://nobody@localhost/x")
    assert not list(tmp_path.iterdir())


# ---- the budget and dead workers ----------------------------------------------------------------------------


def _frozen(state, number_params, **attrs):
    return optuna.trial.create_trial(
        state=state,
        params={"x": number_params},
        distributions={"x": optuna.distributions.FloatDistribution(0, 10)},
        value=1.0 if state == TrialState.COMPLETE else None,
        **attrs,
    )


def test_budget_counts_finished_trials_but_not_failures_that_were_retried():
    study = optuna.create_study()
    study.add_trial(_frozen(TrialState.COMPLETE, 1.0))
    study.add_trial(_frozen(TrialState.PRUNED, 2.0))
    study.add_trial(_frozen(TrialState.FAIL, 3.0))  # 2: a worker died; retried as 4
    study.add_trial(_frozen(TrialState.FAIL, 4.0))  # 3: the objective raised; not retried, counts
    study.add_trial(_frozen(TrialState.WAITING, 3.0, system_attrs={"failed_trial": 2, "retry_history": [2]}))
    assert budget_state(study) == (3, 1)


def _dead_owner() -> dict:
    return {
        "host": socket.gethostname(),
        "boot": open("/proc/sys/kernel/random/boot_id").read().strip(),
        "pid": os.getpid(),
        "start": "not-this-process",
    }


def test_journal_recovery_fails_a_dead_workers_trial_and_queues_it_again(tmp_path):
    storage = open_storage(tmp_path / "s.journal", "s")
    study = optuna.create_study(storage=storage.storage, study_name="s")
    dead = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    dead.set_user_attr(OWNER, _dead_owner())
    dead.set_user_attr("seed", 41)
    orphan = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # killed before it recorded itself
    alive = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    from cadence.tuning.storage import this_worker

    alive.set_user_attr(OWNER, this_worker())
    assert sorted(storage.recover(study)) == [dead.number, orphan.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states[dead.number] == states[orphan.number] == TrialState.FAIL
    assert states[alive.number] == TrialState.RUNNING
    queued = study.get_trials(states=(TrialState.WAITING,))
    copy = next(t for t in queued if t.system_attrs["failed_trial"] == dead.number)
    assert copy.params == dead.params and copy.user_attrs["seed"] == 41  # same parameters, same seed
    assert budget_state(study) == (0, 3)  # the failed ones do not count; their copies wait


def test_a_queued_retry_is_run_even_when_the_budget_looks_full(tmp_path):
    storage = open_storage(tmp_path / "s.journal", "s")
    study = optuna.create_study(storage=storage.storage, study_name="s")
    settings = build_tune_config({"trials": 2, "space": {"x": {"low": 0.0, "high": 1.0}}})
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    first = study.ask(dist)
    study.tell(first, 0.5)
    dead = study.ask(dist)
    dead.set_user_attr(OWNER, _dead_owner())
    seen = []

    def objective(trial):
        seen.append((trial.number, trial.suggest_float("x", 0, 1)))
        return 1.0

    assert run_worker(study, objective, storage, settings) == 1
    assert len(seen) == 1 and seen[0][1] == dead.params["x"]  # the retry, with the dead trial's value of x
    assert budget_state(study) == (2, 0)
    assert run_worker(study, objective, storage, settings) == 0  # spent: a second worker starts nothing
