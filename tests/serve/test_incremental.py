"""`--from RUN_DIR`: a stream starts from an earlier run's model artefact (weights, label names, per-feature
standardization), refuses one that does not fit its schema, and publishes snapshots `cadence.load` reads."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
import torch

import cadence
from cadence.config import DataConfig, build_config
from cadence.data.streams import JsonlSource
from cadence.errors import ConfigError
from cadence.serve.incremental import start_from
from cadence.serve.learner import StreamLearner

SPECIES = ["setosa", "versicolor", "virginica"]
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _quiet(line: str) -> None:
    pass


@pytest.fixture(scope="module")
def iris(tmp_path_factory):
    """Iris as a CSV with class names, a run trained on it (tabular: standardized per feature), and the
    raw rows as a stream of label indices in the run's label order."""
    from sklearn.datasets import load_iris

    bunch = load_iris(as_frame=True)
    frame = bunch.frame.drop(columns="target")
    frame.columns = FEATURES
    frame["species"] = np.array(SPECIES)[bunch.target]
    where = tmp_path_factory.mktemp("iris")
    frame.to_csv(where / "iris.csv", index=False)
    data = cadence.load_data(DataConfig(name=str(where / "iris.csv"), target="species"))
    run = cadence.train(data=data, model="mlp:16", optimizer="adam", lr=0.01, max_epochs=30, threads=1)
    run_dir = run.save(where / "run")
    raw = frame[FEATURES].to_numpy(np.float32)
    order = np.random.default_rng(0).permutation(len(raw))
    lines = [orjson.dumps({"x": raw[i].tolist(), "y": int(bunch.target[i])}) for i in order]
    (where / "iris.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return run_dir, raw, where / "iris.jsonl"


def _config(**stream):
    settings = {"checkpoint_seconds": None, "publish_seconds": None, "publish_every_samples": 50, **stream}
    return build_config({"optimizer": {"name": "sgd", "lr": 0.001}, "stream": settings})


def test_a_stream_starts_from_a_runs_model_labels_and_standardization(iris, tmp_path):
    run_dir, raw, messages = iris
    start = start_from(run_dir, _config())
    assert start.config.model.spec == "mlp:16" and start.config.stream.class_names == tuple(SPECIES)
    assert (start.n_features, start.n_classes) == (4, 3) and start.center.shape == (4,)
    live = tmp_path / "live"
    learner = StreamLearner(
        start.config, JsonlSource(messages), live, model=start.model, n_features=4, n_classes=3,
        center=start.center, scale=start.scale, log=_quiet,
    )  # fmt: skip
    assert learner.run() == "the source ended"
    # Scored before training from the first message on, with the run's own standardization: the trained
    # model is right at once (measured 0.967; a fresh model, or unscaled inputs, start near 1/3).
    assert learner.metrics.values()["accuracy"] > 0.9

    snap = learner.store.current
    published = cadence.load(live / "published" / f"snapshot-{snap.version:08d}.safetensors")
    answer = snap.predict(raw)
    assert published.labels == SPECIES and answer["labels"][:3] == list(published.predict(raw[:3]))
    np.testing.assert_array_equal(published.predict(raw), np.array(answer["labels"]))
    np.testing.assert_array_equal(published.predict_proba(raw), np.array(answer["probabilities"], np.float32))

    final = cadence.load(live)  # the run's model at its clean stop, with the standardization it learned with
    with torch.no_grad():
        out = learner.model.eval()(torch.from_numpy((raw - start.center) / start.scale))
    np.testing.assert_array_equal(final.predict(raw), np.array(SPECIES)[out.argmax(1).numpy()])

    again = StreamLearner(start.config, JsonlSource(messages), live, model=start.model, n_features=4, n_classes=3)
    with pytest.raises(ConfigError, match="another standardization"):
        again.run()  # the same directory without --from's standardization: refused before anything changes


@pytest.mark.parametrize(
    ("stream", "says"),
    [
        (
            {"n_features": 5},
            "trained with 4 features per message, the stream config declares 5. Fix: set --features 4",
        ),
        ({"n_classes": 4}, "trained with 3 classes, the stream config declares 4"),
        ({"task": "regression"}, "trained with classification task"),
        ({"center": 2.0}, "would scale them twice"),
        ({"class_names": ["a", "b", "c"]}, "names its classes"),
    ],
)
def test_from_refuses_a_run_that_does_not_fit_the_stream_in_one_line(iris, stream, says):
    with pytest.raises(ConfigError, match=says) as err:
        start_from(iris[0], _config(**stream))
    assert "\n" not in str(err.value)
