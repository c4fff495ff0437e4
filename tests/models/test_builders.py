"""Model specs build the models they name, for the data's shape, and refuse bad specs clearly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cadence.config import ModelConfig
from cadence.errors import ConfigError
from cadence.models import MLP, build_model


def test_mlp_spec_builds_the_named_widths_with_options():
    model = build_model(
        ModelConfig(spec="mlp:128,64", dropout=0.2, batch_norm=True, activation="tanh"), (784,), 10
    )
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 128), (128, 64), (64, 10)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model) == 2
    assert sum(isinstance(m, nn.Dropout) for m in model) == 2 and sum(isinstance(m, nn.Tanh) for m in model) == 2


def test_logreg_is_a_single_linear_layer():
    model = build_model(ModelConfig(spec="logreg"), (64,), 10)
    assert isinstance(model, MLP) and [type(m) for m in model] == [nn.Flatten, nn.Linear]


def test_cnn_accepts_flat_square_images_and_image_tensors():
    flat = build_model(ModelConfig(spec="cnn"), (784,), 10)
    assert flat(torch.zeros(2, 784)).shape == (2, 10)
    rgb = build_model(ModelConfig(spec="cnn"), (3, 16, 16), 4)
    assert rgb(torch.zeros(2, 3, 16, 16)).shape == (2, 4)
    with pytest.raises(ConfigError, match="cnn needs image inputs; got 10 features"):
        build_model(ModelConfig(spec="cnn"), (10,), 2)


def returns_a_string(input_shape, n_outputs):
    return "model"


def tiny_factory(input_shape, n_outputs):
    return nn.Linear(input_shape[0], n_outputs)


def test_package_module_factory_spec_calls_the_factory():
    model = build_model(ModelConfig(spec=f"{__name__}:tiny_factory"), (5,), 3)
    assert isinstance(model, nn.Linear) and model.out_features == 3


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("mlp:128,x", "widths must be integers"),
        ("mlp:0", "widths must be > 0"),
        ("resnet", "unknown model spec 'resnet'"),
        ("no_such_module_xyz:make", "could not be loaded"),
        ("mlp:", r"names no hidden widths. Fix: give them, e.g. mlp:128,64, or use logreg"),
        ("mlp", "names no hidden widths"),
        ("mlp:64,,", "hidden width 2 is empty"),
        ("mlp:,64", "hidden width 1 is empty"),
        (
            "torch.nn:Linear",
            r"failed when called as torch.nn.Linear\(input_shape=\(4,\), n_outputs=2\): TypeError",
        ),
        ("os:system", r"failed when called as os.system\(input_shape=\(4,\), n_outputs=2\): TypeError"),
        ("math:pi", "is a float, not a function"),
        (f"{__name__}:returns_a_string", "returned str, not a torch.nn.Module"),
        ("custom:mypkg.Net", "records a run trained on a module passed as an object"),
    ],
)
def test_bad_model_specs_are_config_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        build_model(ModelConfig(spec=spec), (4,), 2)


def test_an_mlp_too_large_for_memory_is_refused_before_allocating(monkeypatch):
    from cadence.models import builders

    monkeypatch.setattr(builders, "MLP", None)  # reaching the constructor would fail with a TypeError
    monkeypatch.setattr(builders, "_available_memory", lambda: 16 * 2**30)
    match = r"'mlp:100000000' has 7,500,000,010 parameters: 55.9 GiB .* 16.0 GiB available. Fix: use smaller"
    with pytest.raises(ConfigError, match=match):
        build_model(ModelConfig(spec="mlp:100000000"), (64,), 10)


def test_factory_specs_are_told_apart_from_built_in_specs():
    from cadence.models.builders import factory_module

    assert factory_module("pkg.sub.mod:make") == "pkg.sub.mod"
    assert [factory_module(s) for s in ("mlp:128,64", "logreg", "cnn", "custom:a.B", "a b:c", "x:1")] == [None] * 6


def test_check_trusted_refuses_a_factory_from_a_file_and_passes_built_ins():
    from cadence.models.builders import check_trusted

    check_trusted("mlp:128,64", "run r", trust_code=False)
    check_trusted("antigravity:fly", "run r", trust_code=True)
    with pytest.raises(ConfigError, match=r"run r asks to import module 'antigravity' .*--model antigravity:fly"):
        check_trusted("antigravity:fly", "run r", trust_code=False)
