"""`cadence predict`, `evaluate` and `export` end to end, and the one-line errors of bad specs and data."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import cadence
from cadence.cli.app import app

SPECIES = np.array(["setosa", "versicolor", "virginica"])
FAST = ["--model", "mlp:16", "--optimizer", "adam", "--lr", "0.01", "--epochs", "20", "--threads", "1", "--quiet"]


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def iris_files(tmp_path_factory):
    """iris.csv to train on, and new.csv: the same rows, shuffled columns, an id column, no target."""
    from sklearn.datasets import load_iris

    root = tmp_path_factory.mktemp("iris")
    bunch = load_iris()
    header = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    with open(root / "iris.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*header, "species"])
        w.writerows([*row, SPECIES[t]] for row, t in zip(bunch.data, bunch.target, strict=True))
    with open(root / "new.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "petal_width", "petal_length", "sepal_width", "sepal_length", "note"])
        w.writerows([f"flower-{i}", *row[::-1], "x"] for i, row in enumerate(bunch.data))
    result = invoke(
        "train", "--data", str(root / "iris.csv"), "--target", "species", *FAST, "--out", str(root / "run")
    )
    assert result.exit_code == 0, result.output
    return root


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_writes_one_row_per_input_row_with_its_id_label_and_probabilities(iris_files, tmp_path):
    out = tmp_path / "predictions.csv"
    result = invoke("predict", str(iris_files / "run"), "--data", str(iris_files / "new.csv"), "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = read_csv(out)
    assert len(rows) == 150 and [r["id"] for r in rows] == [f"flower-{i}" for i in range(150)]
    assert list(rows[0]) == ["id", "prediction", "p_setosa", "p_versicolor", "p_virginica"]
    model = cadence.load(iris_files / "run")
    from sklearn.datasets import load_iris

    np.testing.assert_array_equal([r["prediction"] for r in rows], model.predict(load_iris().data))
    assert np.mean([r["prediction"] == s for r, s in zip(rows, SPECIES[load_iris().target], strict=True)]) > 0.9
    chunked = tmp_path / "chunked.csv"
    args = ("--data", str(iris_files / "new.csv"), "--out", str(chunked), "--chunk-rows", "7")
    assert invoke("predict", str(iris_files / "run"), *args).exit_code == 0
    again = read_csv(chunked)  # the same predictions; probabilities to rounding (BLAS blocks by batch size)
    assert [(r["id"], r["prediction"]) for r in again] == [(r["id"], r["prediction"]) for r in rows]
    np.testing.assert_allclose(
        [float(r["p_setosa"]) for r in again], [float(r["p_setosa"]) for r in rows], atol=1e-6
    )


def test_predict_without_an_id_column_numbers_the_rows_and_writes_to_stdout(iris_files):
    result = invoke("predict", str(iris_files / "run"), "--data", str(iris_files / "iris.csv"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("row,prediction,p_setosa") and lines[1].startswith("0,setosa,")
    assert len(lines) == 151


def test_predict_names_the_missing_columns_in_one_line_and_exits_2(iris_files, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,sepal_length\n1,5.0\n")
    result = invoke("predict", str(iris_files / "run"), "--data", str(bad))
    assert result.exit_code == 2
    assert "lack the column(s) 'sepal_width', 'petal_length', 'petal_width'" in result.output
    assert "Traceback" not in result.output


def test_evaluate_prints_the_metrics_of_new_labelled_data(iris_files):
    result = invoke("evaluate", str(iris_files / "run"), "--data", str(iris_files / "iris.csv"), "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["samples"] == 150 and metrics["accuracy"] > 0.9  # measured 0.98
    table = invoke("evaluate", str(iris_files / "run"), "--data", str(iris_files / "iris.csv"))
    assert "accuracy" in table.stdout and f"{metrics['accuracy']:.4f}" in table.stdout


def test_predict_reads_jsonl_in_both_shapes(iris_files, tmp_path):
    from sklearn.datasets import load_iris

    x = load_iris().data[:4]
    lines = [json.dumps({"id": f"a{i}", "x": list(row)}) for i, row in enumerate(x[:2])]
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    lines += [json.dumps({"id": f"a{i + 2}", **dict(zip(names, row, strict=True))}) for i, row in enumerate(x[2:])]
    path = tmp_path / "new.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = invoke("predict", str(iris_files / "run"), "--data", str(path))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert [r["id"] for r in rows] == ["a0", "a1", "a2", "a3"]
    np.testing.assert_array_equal([r["prediction"] for r in rows], cadence.load(iris_files / "run").predict(x))


def test_export_onnx_from_the_command_line_runs_in_onnxruntime(iris_files):
    result = invoke("export", str(iris_files / "run"), "--format", "onnx")
    assert result.exit_code == 0, result.output
    from sklearn.datasets import load_iris

    x = load_iris().data.astype(np.float32)
    (proba,) = onnxruntime.InferenceSession(result.stdout.strip()).run(None, {"input": x})
    np.testing.assert_allclose(proba, cadence.load(iris_files / "run").predict_proba(x), atol=1e-5, rtol=0)
    assert invoke("export", str(iris_files / "run"), "--format", "tflite").exit_code == 2


def test_predict_and_evaluate_on_an_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for name, rows in (("dark", slice(0, 0)), ("light", slice(0, 8))):
        for i in range(10):
            a = rng.integers(0, 60, (8, 8), dtype=np.uint8)
            a[rows] += 180
            (tmp_path / "pics" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).save(tmp_path / "pics" / name / f"{i}.png")
    train = ["train", "--data", str(tmp_path / "pics"), "--image-size", "8", "8"] if False else None
    del train
    data = cadence.load_data(
        cadence.RunConfig().data.model_copy(update={"name": str(tmp_path / "pics"), "image_size": (8, 8)})
    )
    run = cadence.train(
        data=data, model="mlp:4", optimizer="adam", lr=0.05, max_epochs=10, threads=1, batch_size=8
    )
    run.save(tmp_path / "run")
    result = invoke("predict", str(tmp_path / "run"), "--data", str(tmp_path / "pics"))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert rows[0]["file"] == "dark/0.png" and len(rows) == 20
    assert [r["prediction"] for r in rows] == ["dark"] * 10 + ["light"] * 10
    scored = invoke("evaluate", str(tmp_path / "run"), "--data", str(tmp_path / "pics"), "--json")
    assert json.loads(scored.stdout)["accuracy"] == 1.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "os:system",
            "model factory 'os:system' failed when called as os.system(input_shape=(64,), n_outputs=10)",
        ),
        ("torch.nn:Linear", "failed when called as torch.nn.Linear(input_shape=(64,), n_outputs=10): TypeError"),
        ("mlp:100000000", "'mlp:100000000' has 7,500,000,010 parameters"),
        ("mlp:", "model spec 'mlp:' names no hidden widths"),
        ("mlp:64,,", "model spec 'mlp:64,,': hidden width 2 is empty"),
    ],
)
def test_bad_model_specs_are_one_line_errors_with_exit_2(spec, message, tmp_path):
    result = invoke("train", "--model", spec, "--epochs", "1", "--quiet", "--out", str(tmp_path / "r"))
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in " ".join(result.output.split())
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()


def test_a_one_class_image_folder_is_refused(tmp_path):
    (tmp_path / "pics" / "cat").mkdir(parents=True)
    for i in range(3):
        Image.new("L", (8, 8), i).save(tmp_path / "pics" / "cat" / f"{i}.png")
    result = invoke("train", "--data", str(tmp_path / "pics"), "--quiet", "--out", str(tmp_path / "r"))
    assert (
        result.exit_code == 2 and "has one class subfolder (cat); a classifier needs at least two" in result.output
    )


def test_a_csv_value_beyond_float32_is_reported_as_such(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("a,b,y\n" + "".join(f"{i},{i},{i % 2}\n" for i in range(10)) + "1,1e39,0\n")
    result = invoke("train", "--data", str(path), "--target", "y", "--quiet", "--out", str(tmp_path / "r"))
    assert result.exit_code == 2
    assert "line 12, column 'b': '1e39' is beyond float32" in result.output and "NaN or inf" not in result.output


def test_the_cadence_command_lists_the_new_commands():
    out = subprocess.run([sys.executable, "-m", "cadence", "--help"], capture_output=True, text=True, check=True)
    assert all(name in out.stdout for name in ("predict", "evaluate", "export"))
