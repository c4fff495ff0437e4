"""The grid: one job per (strategy, optimizer, schedule, seed), each with its lr, budget and eval cadence."""

from __future__ import annotations

from cadence.comparison import DEFAULT_LRS, build_compare_config, build_grid
from cadence.config import Strategy, build_config


def test_grid_nests_strategy_optimizer_schedule_then_seed():
    cc = build_compare_config({"optimizers": ["sgd", "adam"], "seeds": 2})
    jobs = build_grid(build_config(), cc, n_train=1000)
    assert len(jobs) == 3 * 2 * 2
    assert [(j.strategy, j.optimizer, j.seed) for j in jobs[:4]] == [
        ("full-batch", "sgd", 0),
        ("full-batch", "sgd", 1),
        ("full-batch", "adam", 0),
        ("full-batch", "adam", 1),
    ]
    assert [j.group for j in jobs] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    for job in jobs:  # each job's config is what its coordinates say
        c = job.config
        assert (c.strategy.name.value, c.optimizer.name, c.seed, c.optimizer.lr) == (
            job.strategy,
            job.optimizer,
            job.seed,
            job.lr,
        )


def test_each_strategy_gets_its_own_default_lr_unless_the_entry_gives_one():
    cc = build_compare_config({"optimizers": ["sgd", "adam:0.002"], "seeds": 1})
    lrs = {(j.strategy, j.optimizer): j.lr for j in build_grid(build_config(), cc, n_train=1000)}
    assert lrs[("full-batch", "sgd")] == DEFAULT_LRS[Strategy.FULL_BATCH]["sgd"]
    assert lrs[("online", "sgd")] == DEFAULT_LRS[Strategy.ONLINE]["sgd"]
    assert lrs[("full-batch", "sgd")] > lrs[("mini-batch", "sgd")] > lrs[("online", "sgd")]
    assert {lr for (s, o), lr in lrs.items() if o == "adam"} == {0.002}


def test_budget_mode_sets_that_budget_and_clears_the_others():
    for budget, stop in [
        ({"samples": 500}, {"max_samples": 500}),
        ({"updates": 40}, {"max_updates": 40}),
        ({"seconds": 1.5}, {"max_seconds": 1.5}),
        ({"epochs": 2}, {"max_epochs": 2}),
    ]:
        cc = build_compare_config({"budget": budget, "seeds": 1})
        for job in build_grid(build_config(), cc, n_train=1000):
            s = job.config.stop
            got = {k: getattr(s, k) for k in ("max_epochs", "max_samples", "max_updates", "max_seconds")}
            assert got == {
                "max_epochs": None,
                "max_samples": None,
                "max_updates": None,
                "max_seconds": None,
                **stop,
            }


def test_mini_batch_sizes_and_repeated_optimizers_get_distinct_labels():
    cc = build_compare_config(
        {"strategies": ["mini-batch:16", "mini-batch:128"], "optimizers": ["sgd:0.1", "sgd:0.3"], "seeds": 1}
    )
    jobs = build_grid(build_config(), cc, n_train=1000)
    assert [j.label for j in jobs] == [
        "mini-batch 16 + sgd (lr 0.1)",
        "mini-batch 16 + sgd (lr 0.3)",
        "mini-batch 128 + sgd (lr 0.1)",
        "mini-batch 128 + sgd (lr 0.3)",
    ]
    assert [j.config.strategy.batch_size for j in jobs] == [16, 16, 128, 128]


def test_evaluations_are_spread_over_each_run():
    cc = build_compare_config({"budget": {"epochs": 10}, "evals_per_run": 20, "seeds": 1})
    every = {j.strategy: j.config.eval.every_updates for j in build_grid(build_config(), cc, n_train=1000)}
    # 10 epochs: online 10,000 updates, mini-batch 64 -> 160 updates, full-batch 10 (each an epoch end)
    assert every == {"online": 500, "mini-batch": 8, "full-batch": 1}


def test_compared_runs_share_the_budget_without_the_single_run_early_stopping_and_time_cap():
    cc = build_compare_config({"optimizers": ["adam"], "seeds": 1})
    for job in build_grid(build_config(), cc, n_train=1000):  # the default: equal epochs
        assert job.config.stop.early_stopping_metric is None and job.config.stop.max_seconds is None
    chosen = build_config({"stop": {"early_stopping_metric": "val_accuracy"}})
    assert {j.config.stop.early_stopping_metric for j in build_grid(chosen, cc, n_train=1000)} == {"val_accuracy"}


def test_single_runs_and_the_grid_share_one_default_lr_table():
    from cadence.config import DEFAULT_LRS as RUN_LRS

    assert DEFAULT_LRS is RUN_LRS
    assert build_config({"strategy": {"name": "online"}}).optimizer.lr == RUN_LRS[Strategy.ONLINE]["adam"]
