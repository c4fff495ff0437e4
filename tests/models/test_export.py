"""ONNX and TorchScript exports take raw inputs (standardization inside) and agree with the torch model."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch

import cadence
from cadence.models.export import export


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = cadence.load_data()  # digits: per-feature standardization, 10 classes named "0".."9"
    run = cadence.train(data=data, model="mlp:32", optimizer="adam", lr=0.01, max_epochs=2, threads=1)
    return cadence.load(run.save(tmp_path_factory.mktemp("run")))


@pytest.fixture(scope="module")
def raw_digits():
    from sklearn.datasets import load_digits

    return load_digits().data[:300].astype(np.float32)


def test_onnx_export_gives_the_torch_probabilities_in_onnxruntime(trained, raw_digits, tmp_path):
    path = export(trained, "onnx", tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": raw_digits})  # raw pixels 0..16: the graph standardizes
    np.testing.assert_allclose(got, trained.predict_proba(raw_digits), atol=1e-5, rtol=0)
    assert (got.argmax(1).astype(str) == trained.predict(raw_digits)).all()
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["cadence.labels"]) == [str(i) for i in range(10)]
    assert session.get_outputs()[0].name == "probabilities"
    (one,) = session.run(None, {"input": raw_digits[:1]})  # the batch axis is dynamic
    assert one.shape == (1, 10)


def test_torchscript_export_gives_the_torch_probabilities(trained, raw_digits, tmp_path):
    files = {"cadence.json": ""}
    loaded = torch.jit.load(str(export(trained, "torchscript", tmp_path / "model.pt")), _extra_files=files)
    got = loaded(torch.from_numpy(raw_digits)).detach().numpy()
    np.testing.assert_allclose(got, trained.predict_proba(raw_digits), atol=1e-6, rtol=0)
    assert json.loads(files["cadence.json"])["cadence.task"] == "classification"


def test_an_image_model_exports_with_its_global_scale(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (60, 1, 6, 6)).astype(np.float32)
    y = (x[:, 0, :3].mean((1, 2)) > x[:, 0, 3:].mean((1, 2))).astype(np.int64)
    run = cadence.train(
        data=cadence.from_arrays(x, y, images=True), model="cnn", max_epochs=1, threads=1, batch_size=16
    )
    trained = cadence.load(run.save(tmp_path / "run"))
    assert trained.mean.shape == ()  # one scale for all pixels
    path = export(trained, "onnx", tmp_path / "m.onnx")
    (got,) = onnxruntime.InferenceSession(str(path)).run(None, {"input": x})
    np.testing.assert_allclose(got, trained.predict_proba(x), atol=1e-5, rtol=0)
