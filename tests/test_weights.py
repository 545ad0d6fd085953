"""A reducer's map as a layer spec and safetensors: what compress serves, rebuilt without running code."""

import numpy as np
import pytest
import torch
from helpers.reducers import build, fit_full_batch, low_rank_vectors

from simreduce.reducers.base import apply_net
from simreduce.reducers.precision import StoredPrecision
from simreduce.reducers.weights import SPEC_FORMAT, layer_spec, rebuild, save_weights
from simreduce.runtime.errors import SimreduceError


@pytest.mark.parametrize(
    ("name", "overrides"),
    [("cosine", []), ("cosine", ["encoder.hidden=[8]"]), ("autoencoder", []), ("pca", []), ("svd", []), ("random", [])],
)
def test_every_reducer_is_rebuilt_from_its_spec_and_tensors(tmp_path, name, overrides):
    x = low_rank_vectors()
    reducer = build(name, x, *overrides)
    if reducer.trains:
        fit_full_batch(reducer, x, max_steps=3)
    (candidate,) = reducer.candidates()
    save_weights(candidate.net, tmp_path / "w.safetensors")
    rebuilt, stored = rebuild(layer_spec(candidate.net), tmp_path / "w.safetensors", "m")
    assert torch.equal(apply_net(rebuilt, x), apply_net(candidate.net, x)) and stored.name == "float32"


@pytest.mark.parametrize("precision", ["float16", "int8", "int4", "int2", "int1", "pq2", "binary"])
def test_the_stored_precision_and_its_constants_travel_with_the_tensors(tmp_path, precision):
    x = low_rank_vectors()
    net = build("pca", x).net
    stored = StoredPrecision.calibrated(precision, apply_net(net, x))
    save_weights(net, tmp_path / "w.safetensors", stored)
    rebuilt, served = rebuild(layer_spec(net, precision), tmp_path / "w.safetensors", "m")
    assert served.name == precision
    assert np.array_equal(served.encode(apply_net(rebuilt, x).numpy()), stored.encode(apply_net(net, x).numpy()))


def test_a_spec_without_a_precision_is_float32_and_an_unknown_one_is_refused(tmp_path):
    net = build("pca", low_rank_vectors()).net
    save_weights(net, tmp_path / "w.safetensors")
    spec = layer_spec(net)
    del spec["precision"]  # logged before precisions
    assert rebuild(spec, tmp_path / "w.safetensors", "m")[1].name == "float32"
    with pytest.raises(SimreduceError, match="model 'm' stores its vectors as 'int3'"):
        rebuild({**spec, "precision": "int3"}, tmp_path / "w.safetensors", "m")
    with pytest.raises(SimreduceError, match="weights that do not match its layer spec"):
        rebuild({**spec, "precision": "int8"}, tmp_path / "w.safetensors", "m")  # no calibration constants
    with pytest.raises(SimreduceError, match="weights that do not match its layer spec"):
        rebuild({**spec, "precision": "int4"}, tmp_path / "w.safetensors", "m")  # no rotation, no levels


def test_a_map_that_is_not_a_build_mlp_stack_has_no_spec():
    with pytest.raises(TypeError, match="not a build_mlp stack"):
        layer_spec(torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.ReLU(), torch.nn.Linear(2, 2)))


def test_unknown_formats_and_mismatched_tensors_are_refused(tmp_path):
    net = build("pca", low_rank_vectors()).net
    save_weights(net, tmp_path / "w.safetensors")
    spec = layer_spec(net)
    with pytest.raises(SimreduceError, match="layer format 'other/2'"):
        rebuild({**spec, "format": "other/2"}, tmp_path / "w.safetensors", "m")
    with pytest.raises(SimreduceError, match="weights that do not match its layer spec"):
        rebuild({**spec, "dim": spec["dim"] + 1}, tmp_path / "w.safetensors", "m")
    (tmp_path / "w.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(SimreduceError, match="weights that do not match"):
        rebuild(spec, tmp_path / "w.safetensors", "m")
    assert spec["format"] == SPEC_FORMAT
