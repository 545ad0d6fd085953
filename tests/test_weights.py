"""A reducer's map as a layer spec and safetensors: what compress serves, rebuilt without running code."""

import resource

import numpy as np
import pytest
import torch
from helpers.reducers import build, fit_full_batch, low_rank_vectors
from safetensors.torch import save_file

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


def test_a_spec_says_float32_by_default_and_a_missing_or_unknown_precision_is_refused(tmp_path):
    net = build("pca", low_rank_vectors()).net
    save_weights(net, tmp_path / "w.safetensors")
    spec = layer_spec(net)
    assert spec["precision"] == "float32" == rebuild(spec, tmp_path / "w.safetensors", "m")[1].name
    without = {k: v for k, v in spec.items() if k != "precision"}
    with pytest.raises(SimreduceError, match="model 'm' stores its vectors as None"):
        rebuild(without, tmp_path / "w.safetensors", "m")
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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dim": 30_000_000}, "declares layer 0.weight of shape [30000000, 8], its weights file holds [2, 8]"),
        ({"in_dim": 30_000_000}, "declares layer 0.weight of shape [2, 30000000], its weights file holds [2, 8]"),
        ({"hidden": [30_000_000]}, "declares layer 0.weight of shape [30000000, 8], its weights file holds [2, 8]"),
        ({"out_bias": True}, "declares layer 0.bias of shape [2], its weights file has no such tensor"),
        ({"dim": -3}, "weights that do not match its layer spec"),
    ],
)
def test_declared_shapes_are_checked_against_the_file_before_memory_is_taken(tmp_path, change, message):
    net = torch.nn.Sequential(torch.nn.Linear(8, 2, bias=False))
    save_weights(net, tmp_path / "w.safetensors")  # 64 bytes of weights
    before = peak_rss_mb()
    with pytest.raises(SimreduceError) as error:
        rebuild({**layer_spec(net), **change}, tmp_path / "w.safetensors", "m")
    assert message in str(error.value) and "\n" not in str(error.value)
    assert str(error.value).startswith("model 'm' has weights that do not match its layer spec")
    assert peak_rss_mb() - before < 200  # a [3e7, 8] float32 layer alone is 960 MB


def test_tensors_the_spec_does_not_declare_are_refused(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.GELU(), torch.nn.Linear(4, 2, bias=False))
    save_weights(net, tmp_path / "w.safetensors")
    one_layer = {**layer_spec(net), "hidden": [], "in_dim": 8}
    with pytest.raises(
        SimreduceError, match="declares layer 0.weight of shape \\[2, 8\\], its weights file holds \\[4, 8\\]"
    ):
        rebuild(one_layer, tmp_path / "w.safetensors", "m")
    extra = torch.nn.Sequential(torch.nn.Linear(8, 2, bias=False))
    save_file(
        {"0.weight": extra[0].weight.detach().contiguous(), "9.weight": torch.zeros(2)}, str(tmp_path / "w.safetensors")
    )
    with pytest.raises(SimreduceError, match=r"its weights file holds \['9.weight'\], which the spec does not declare"):
        rebuild(layer_spec(extra), tmp_path / "w.safetensors", "m")


@pytest.mark.parametrize("prefixes", [[2, 30_000_000], [0, 2], "2", [1.5]])
def test_prefix_sizes_beyond_the_maps_outputs_are_refused(tmp_path, prefixes):
    net = torch.nn.Sequential(torch.nn.Linear(8, 2, bias=False))
    save_weights(net, tmp_path / "w.safetensors")
    assert rebuild(layer_spec(net, prefix_dims=[1, 2]), tmp_path / "w.safetensors", "m")[0][0].out_features == 2
    with pytest.raises(SimreduceError, match=r"it declares prefix sizes .*, not sizes of its 2 outputs"):
        rebuild({**layer_spec(net), "prefix_dims": prefixes}, tmp_path / "w.safetensors", "m")
