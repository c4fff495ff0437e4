"""Defaults that learn: `cadence.train` with no settings vs scikit-learn's MLP defaults, on six data sets.

For each set, both systems see the same split (cadence's default: 70/10/20, seed 0; Fashion-MNIST's own
10k test set): scikit-learn's `make_pipeline(StandardScaler(), MLPClassifier())` (or MLPRegressor, every
setting at its default but `random_state=0`) fits the training and validation rows (it needs no validation
split at its defaults); cadence trains on the training rows, watching the validation rows. Both are scored
on the test rows: accuracy, or R² for regression. Wall time: sklearn's `fit`; cadence's `from_arrays` +
`train` (split, standardization, training, final evaluation). The systems alternate per set (A B, then
B A) and the 1-minute load average is recorded next to each measurement.

    .venv/bin/python bench/defaults.py                     # all six sets, writes bench/results/defaults.json
    .venv/bin/python bench/defaults.py --only iris,moons   # some sets
    .venv/bin/python bench/defaults.py --set optimizer.lr=0.003 --skip-sklearn   # try other settings
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import RESULTS, machine  # noqa: E402

SETS = ("iris", "digits", "diabetes", "classification", "moons", "fashion-mnist")


def load(name: str):
    """(x, y, x_test, y_test or None, task): raw features; a given test set only for Fashion-MNIST."""
    from sklearn import datasets

    if name == "iris":
        b = datasets.load_iris()
        return b.data, b.target, None, None, "classification"
    if name == "digits":
        b = datasets.load_digits()
        return b.data, b.target, None, None, "classification"
    if name == "diabetes":
        b = datasets.load_diabetes()
        return b.data, b.target.astype(np.float32), None, None, "regression"
    if name == "classification":
        x, y = datasets.make_classification(n_samples=2000, n_features=20, n_informative=10, random_state=0)
        return x, y, None, None, "classification"
    if name == "moons":
        x, y = datasets.make_moons(n_samples=1000, noise=0.3, random_state=0)
        return x, y, None, None, "classification"
    if name == "fashion-mnist":
        from cadence.data.idx import load_idx_dataset

        x, y, xt, yt = load_idx_dataset("fashion-mnist")
        flat = (x.reshape(len(x), -1), y.astype(np.int64), xt.reshape(len(xt), -1), yt.astype(np.int64))
        return *flat, "classification"
    raise SystemExit(f"unknown set {name!r}; choose from {', '.join(SETS)}")


def cadence_dataset(name: str, raw):
    import cadence

    x, y, xt, yt, _ = raw
    return cadence.from_arrays(x, y, x_test=xt, y_test=yt, images=name == "fashion-mnist", name=name)


def run_cadence(name: str, raw, overrides: dict) -> dict:
    import cadence

    t0 = time.perf_counter()
    data = cadence_dataset(name, raw)
    run = cadence.train(data=data, **overrides)
    seconds = time.perf_counter() - t0
    key = "test_accuracy" if data.task == "classification" else "test_r2"
    return {
        "score": run.test_metrics[key],
        "seconds": seconds,
        "epochs": round(run.epochs, 2),
        "stop_reason": run.stop_reason.value,
        "message": run.message,
        "config": {
            "optimizer": run.config.optimizer.name,
            "lr": run.config.optimizer.lr,
            "batch_size": run.config.strategy.batch_size,
        },
    }


def run_sklearn(name: str, raw) -> dict:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, xt, yt, task = raw
    if xt is None:  # the test rows of cadence's split; sklearn fits the rest (cadence's train + val)
        rows = cadence_dataset(name, raw).test_rows
        test = np.zeros(len(x), dtype=bool)
        test[rows] = True
        x, y, xt, yt = x[~test], y[~test], x[test], y[test]
    estimator = MLPClassifier(random_state=0) if task == "classification" else MLPRegressor(random_state=0)
    pipe = make_pipeline(StandardScaler(), estimator)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        pipe.fit(x, y)
    seconds = time.perf_counter() - t0
    return {
        "score": float(pipe.score(xt, yt)),  # accuracy, or R² for regressors
        "seconds": seconds,
        "epochs": int(pipe[-1].n_iter_),
        "converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught),
    }


def warm_up(overrides: dict, skip_sklearn: bool) -> None:
    """One tiny fit per system first, so imports and first-call set-up are not charged to the first set."""
    raw = load("iris")
    run_cadence("iris", raw, {**overrides, "stop.max_epochs": 2, "stop.early_stopping_metric": None})
    if not skip_sklearn:
        from sklearn.neural_network import MLPClassifier

        MLPClassifier(max_iter=2).fit(raw[0][:20], raw[1][:20])


def parse_sets(text: str) -> dict:
    out = {}
    for item in text or []:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)  # numbers, true/false/null, lists
        except ValueError:
            out[key] = value  # a bare string such as full-batch
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma list of sets", default=",".join(SETS))
    parser.add_argument("--set", action="append", help="cadence override key=value (e.g. optimizer.lr=0.003)")
    parser.add_argument("--skip-sklearn", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "defaults.json")
    args = parser.parse_args()
    overrides = parse_sets(args.set)
    warm_up(overrides, args.skip_sklearn)
    results = []
    for i, name in enumerate(args.only.split(",")):
        raw = load(name)
        systems = ["sklearn", "cadence"] if i % 2 == 0 else ["cadence", "sklearn"]
        row = {"set": name, "task": raw[4], "n": len(raw[0]) + (0 if raw[2] is None else len(raw[2]))}
        for system in systems:
            if system == "sklearn" and args.skip_sklearn:
                continue
            load_before = os.getloadavg()[0]
            out = run_sklearn(name, raw) if system == "sklearn" else run_cadence(name, raw, overrides)
            row[system] = {**out, "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
            print(
                f"{name:15s} {system:8s} score {out['score']:.4f}  {out['seconds']:7.2f} s  "
                f"epochs {out['epochs']}  load {load_before:.2f}",
                flush=True,
            )
        if "sklearn" in row:
            row["points_behind"] = round(100 * (row["sklearn"]["score"] - row["cadence"]["score"]), 2)
            row["time_ratio"] = round(row["cadence"]["seconds"] / row["sklearn"]["seconds"], 3)
        results.append(row)
    print()
    print(
        "| data set | task | sklearn score | sklearn s | cadence score | cadence s | time ratio | cadence stop |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in results:
        sk = r.get("sklearn", {"score": float("nan"), "seconds": float("nan")})
        c = r["cadence"]
        print(
            f"| {r['set']} | {r['task']} | {sk['score']:.4f} | {sk['seconds']:.2f} | {c['score']:.4f} | "
            f"{c['seconds']:.2f} | {r.get('time_ratio', float('nan')):.2f} | {c['stop_reason']} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "overrides": overrides, "results": results}, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
