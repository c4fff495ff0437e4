"""A saved run is a model you can use: cadence.load rebuilds it and predicts on raw inputs, in label names."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

import cadence
from cadence.config import DataConfig
from cadence.errors import ConfigError, DataError
from cadence.models.artefact import read_meta

SPECIES = np.array(["setosa", "versicolor", "virginica"])


@pytest.fixture(scope="module")
def iris_csv(tmp_path_factory):
    """Iris as a user's CSV: text class names in the target column, an id column the model ignores."""
    from sklearn.datasets import load_iris

    bunch = load_iris(as_frame=True)
    frame = bunch.frame.drop(columns="target")
    frame.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    frame["species"] = SPECIES[bunch.target]
    path = tmp_path_factory.mktemp("iris") / "iris.csv"
    frame.to_csv(path, index=False)
    return path, frame


@pytest.fixture(scope="module")
def iris_run(iris_csv, tmp_path_factory):
    path, _ = iris_csv
    data = cadence.load_data(DataConfig(name=str(path), target="species"))
    run = cadence.train(data=data, model="mlp:16", optimizer="adam", lr=0.01, max_epochs=30, threads=1)
    run_dir = run.save(tmp_path_factory.mktemp("runs") / "iris")
    return run, data, run_dir


def test_loaded_model_predicts_the_runs_own_test_rows_exactly_in_label_names(iris_csv, iris_run):
    _, frame = iris_csv
    run, data, run_dir = iris_run
    model = cadence.load(run_dir)
    raw = frame.iloc[data.test_rows]  # the raw, unstandardized test rows of the run's split
    with torch.no_grad():
        out = run.model.eval()(data.x_test)
    np.testing.assert_array_equal(model.predict(raw), SPECIES[out.argmax(dim=1).numpy()])
    np.testing.assert_array_equal(model.predict_proba(raw), torch.softmax(out, dim=1).numpy())
    metrics = model.evaluate(raw, raw["species"])
    assert metrics == {k.removeprefix("test_"): v for k, v in run.test_metrics.items()}
    assert model.labels == ["setosa", "versicolor", "virginica"]


def test_dataframe_columns_are_matched_by_name_extra_ignored_missing_named(iris_csv, iris_run):
    _, frame = iris_csv
    model = cadence.load(iris_run[2])
    shuffled = frame[["species", "petal_width", "sepal_length", "petal_length", "sepal_width"]].assign(id=1)
    np.testing.assert_array_equal(model.predict(shuffled), model.predict(frame))
    with pytest.raises(DataError, match=r"lack the column\(s\) 'petal_length', 'petal_width'"):
        model.predict(frame[["sepal_length", "sepal_width"]])
    by_position = frame[model.features].to_numpy()  # an array is taken in the training column order
    np.testing.assert_array_equal(model.predict(by_position), model.predict(frame))


def test_the_metadata_names_spec_inputs_standardization_and_versions(iris_run):
    run, data, run_dir = iris_run
    meta = read_meta(run_dir / "model.safetensors")
    inputs = meta["inputs"]
    assert meta["model"]["spec"] == "mlp:16"
    assert (inputs["task"], inputs["n_classes"], inputs["input_shape"]) == ("classification", 3, [4])
    assert (inputs["target"], inputs["features"][0]) == ("species", "sepal_length")
    assert np.array_equal(np.float32(inputs["standardize"]["mean"]), data.mean.reshape(-1).numpy())
    assert meta["versions"]["torch"] == torch.__version__ and meta["versions"]["cadence"] == cadence.__version__


def test_unknown_label_names_are_refused_naming_them(iris_csv, iris_run):
    _, frame = iris_csv
    model = cadence.load(iris_run[2])
    with pytest.raises(DataError, match=r"'rose' are not classes of this model. Known: setosa, versicolor"):
        model.evaluate(frame.head(2), ["setosa", "rose"])


def test_loading_does_not_move_the_global_random_state(iris_run):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    cadence.load(iris_run[2])
    assert torch.equal(torch.rand(3), expected)


def _image_folder(root, n=12):
    """Two classes a model can tell apart: bright top half (`sky`) or bright bottom half (`sea`)."""
    rng = np.random.default_rng(0)
    for name, rows in (("sea", slice(4, 8)), ("sky", slice(0, 4))):
        (root / name).mkdir(parents=True)
        for i in range(n):
            a = rng.integers(0, 60, (8, 8), dtype=np.uint8)
            a[rows] += 180
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root


def test_image_folder_class_names_round_trip(tmp_path):
    folder = _image_folder(tmp_path / "pics")
    data = cadence.load_data(DataConfig(name=str(folder), image_size=(8, 8), val_fraction=0.2, test_fraction=0.25))
    run = cadence.train(
        data=data, model="mlp:8", optimizer="adam", lr=0.01, max_epochs=20, threads=1, batch_size=8
    )
    model = cadence.load(run.save(tmp_path / "run"))
    files = sorted(folder.glob("*/*.png"))
    got = model.predict(files)
    assert set(got) <= {"sea", "sky"} and model.labels == ["sea", "sky"]
    assert (got == np.array([f.parent.name for f in files])).mean() == 1.0  # measured 1.0: an easy task
    with torch.no_grad():  # the run's own test images, read back from disk, predict the same
        own = np.array(["sea", "sky"])[run.model.eval()(data.x_test).argmax(1).numpy()]
    test_files = [files[i] for i in data.test_rows]
    np.testing.assert_array_equal(model.predict(test_files), own)
    np.testing.assert_array_equal(model.predict(folder / "sky"), ["sky"] * 12)


def test_regression_model_predicts_values_and_refuses_probabilities(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 3)) * [1, 10, 100] + 50
    y = (x @ [1.0, 0.1, 0.01]).astype(np.float32)
    data = cadence.from_arrays(x, y)
    run = cadence.train(data=data, model="logreg", optimizer="adam", lr=0.05, max_epochs=5, threads=1)
    model = cadence.load(run.save(tmp_path / "run"))
    raw_test = x[data.test_rows]
    with torch.no_grad():
        own = run.model.eval()(data.x_test).reshape(-1).numpy()
    np.testing.assert_array_equal(model.predict(raw_test), own)
    assert model.evaluate(raw_test, y[data.test_rows])["r2"] == run.test_metrics["test_r2"]
    with pytest.raises(ConfigError, match="predict_proba is for classification"):
        model.predict_proba(raw_test)


class TwoLayer(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x):
        return self.net(x)


def test_a_custom_module_run_is_recorded_honestly_and_loads_into_the_module_given(digits, tmp_path):
    torch.manual_seed(0)
    run = cadence.train(TwoLayer(8), digits, optimizer="adam", lr=0.01, max_epochs=1, threads=1)
    run_dir = run.save(tmp_path / "run")
    spec = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["spec"]
    assert spec == f"custom:{__name__}.TwoLayer"  # not the default mlp:128,64
    with pytest.raises(ConfigError, match="cannot rebuild it without its constructor arguments. Fix: pass"):
        cadence.load(run_dir)
    model = cadence.load(run_dir, model=TwoLayer(8))
    with torch.no_grad():
        own = run.model.eval()(digits.x_test).argmax(1).numpy()
    assert (
        model.predict(digits.x_test * digits.std + digits.mean) == np.asarray(digits.class_names)[own]
    ).mean() > 0.99


def test_a_built_in_mlp_passed_as_an_object_is_recorded_by_its_spec(digits):
    from cadence.models import MLP

    run = cadence.train(MLP(64, [12], 10, activation="tanh"), digits, max_epochs=1, threads=1)
    assert (run.config.model.spec, run.config.model.activation) == ("mlp:12", "tanh")


def _factory_module(tmp_path, monkeypatch, name):
    """An importable module whose import leaves a marker file: proof of whether it ran."""
    marker = tmp_path / f"{name}.imported"
    (tmp_path / f"{name}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from torch import nn\n"
        "def make(input_shape, n_outputs):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], n_outputs))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


def test_a_factory_named_only_by_the_run_is_not_imported_without_trust(digits, tmp_path, monkeypatch):
    marker = _factory_module(tmp_path, monkeypatch, "cadence_probe_factory_a")
    run = cadence.train("cadence_probe_factory_a:make", digits, max_epochs=1, threads=1)
    run_dir = run.save(tmp_path / "run")
    del sys.modules["cadence_probe_factory_a"]
    marker.unlink()
    with pytest.raises(ConfigError, match="asks to import module 'cadence_probe_factory_a'.*--trust-code"):
        cadence.load(run_dir)
    assert "cadence_probe_factory_a" not in sys.modules and not marker.exists()
    named = cadence.load(run_dir, model="cadence_probe_factory_a:make")  # named again: imported
    assert marker.exists()
    trusted = cadence.load(run_dir, trust_code=True)
    np.testing.assert_array_equal(named.predict(np.ones((3, 64))), trusted.predict(np.ones((3, 64))))


def test_an_ensemble_directory_loads_as_the_averaged_model(digits, tmp_path):
    ens = cadence.train_ensemble("mlp:8", digits, members=2, max_epochs=1, threads=1)
    model = cadence.load(ens.save(tmp_path / "ens"))
    raw = (digits.x_test * digits.std + digits.mean).numpy()
    with torch.no_grad():
        own = ens.model.eval()(digits.x_test).argmax(1).numpy()
    assert (model.predict(raw) == np.asarray(digits.class_names)[own]).mean() > 0.99
    assert model.evaluate(raw, digits.y_test.numpy())["accuracy"] == pytest.approx(
        ens.test_metrics["test_accuracy"], abs=0.01
    )
