"""Storage precisions: int8 is sentence-transformers' calibrated recipe, binary its packed sign bits, int4/int2/int1
packed codes of rotated values with levels fit on the training rows, and what a candidate is scored on is what a
search over the stored vectors computes."""

import mlflow
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.project import store_uri
from sentence_transformers.util.quantization import quantize_embeddings

from simreduce.evaluate.scoring import EvalSettings
from simreduce.experiment.tracking import TrackingStore
from simreduce.experiment.tracking.registry import load_reducer
from simreduce.experiment.tracking.runs import job_run
from simreduce.reducers.base import apply_net, build_mlp
from simreduce.reducers.codes import CODE_BITS, CodeForm, lloyd_levels, rotated
from simreduce.reducers.precision import PRECISIONS, ROTATED, StoredPrecision
from simreduce.reducers.product_codes import VALUES_PER_CODE
from simreduce.runtime.errors import SimreduceError

N, DIM = 60, 13  # 13 bits: binary pads its second byte
TRAIN = torch.arange(40)  # the rows int8 is calibrated on; the other 20 may fall outside their ranges


def reduced_rows() -> torch.Tensor:
    """[N, DIM] reduced vectors of unequal ranges per dimension, one of them constant (a zero range)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, DIM, generator=g) * torch.linspace(2.0, 0.1, DIM) + 0.3
    x[:, 5] = 0.7
    return x


def cosines(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    unit = F.normalize(torch.as_tensor(x).double(), dim=1)
    return unit @ unit.T


def test_int8_codes_are_sentence_transformers_codes_calibrated_on_the_training_rows():
    x = reduced_rows()
    codes = StoredPrecision.calibrated("int8", x, TRAIN).encode(x.numpy())
    expected = quantize_embeddings(x.numpy(), precision="int8", calibration_embeddings=x[TRAIN].numpy())
    assert codes.dtype == np.int8 and np.array_equal(codes, expected)
    assert (codes[:, 5] == -128).all()  # a constant dimension: a step of 1 from its one value


def test_int8_codes_and_constants_reproduce_the_similarities_the_candidate_is_scored_on():
    x = reduced_rows()
    stored = StoredPrecision.calibrated("int8", x, TRAIN)
    codes = stored.encode(x.numpy())
    dequantised = (codes.astype(np.float64) + 128) * stored.steps + stored.starts  # what a reader of the codes does
    torch.testing.assert_close(cosines(stored.comparable(x)), cosines(dequantised), rtol=1e-6, atol=1e-6)
    below = x[TRAIN].numpy() - dequantised[TRAIN.numpy()]  # a training value lies in its code's step
    assert (below >= -1e-6).all() and (below <= stored.steps + 1e-6).all()


def test_binary_packs_the_sign_bits_and_compares_by_hamming_distance():
    x = reduced_rows()
    stored = StoredPrecision.calibrated("binary", x, TRAIN)
    packed = stored.encode(x.numpy())
    assert packed.dtype == np.uint8 and packed.shape == (N, 2)
    assert np.array_equal(packed, quantize_embeddings(x.numpy(), precision="ubinary"))
    assert np.array_equal(np.unpackbits(packed, axis=1, count=DIM).astype(bool), x.numpy() > 0)  # round trip
    hamming = np.unpackbits(packed[:, None, :] ^ packed[None, :, :], axis=-1).sum(axis=-1).astype(np.int64)  # pad: 0
    torch.testing.assert_close(cosines(stored.comparable(x)), torch.from_numpy((DIM - 2 * hamming) / DIM))


@pytest.mark.parametrize("name", list(CODE_BITS))
def test_codes_decode_with_their_tables_to_the_vectors_the_candidate_is_scored_on(name):
    """A reader of the packed codes with the rotation and levels alone (no simreduce): each code's level, rotated
    back, gives the very similarities the metrics were computed from."""
    x = reduced_rows()
    stored = StoredPrecision.calibrated(name, x, TRAIN)
    bits = CODE_BITS[name]
    packed = stored.encode(x.numpy())
    assert packed.dtype == np.uint8 and packed.shape == (N, -(-DIM * bits // 8))
    codes = np.unpackbits(packed, axis=1).reshape(N, -1, bits) @ (2 ** np.arange(bits - 1, -1, -1))  # by hand
    read = stored.levels[np.arange(DIM), codes[:, :DIM]].astype(np.float64) @ stored.rotation.T.astype(np.float64)
    torch.testing.assert_close(cosines(stored.comparable(x)), cosines(read), rtol=1e-5, atol=1e-5)
    assert (codes[:, DIM:] == 0).all()  # the padding after the last code
    kept = (F.normalize(x.double(), dim=1) * F.normalize(torch.from_numpy(read), dim=1)).sum(dim=1)
    assert kept.min() > {1: 0.5, 2: 0.8, 4: 0.95}[bits]  # each stored vector's cosine with its own reduced one


def test_a_code_is_the_nearest_level_of_its_rotated_value_packed_high_bits_first():
    rotation = np.eye(3, dtype=np.float32)
    levels = np.tile(np.array([-0.6, -0.2, 0.2, 0.6], dtype=np.float32), (3, 1))
    vectors = torch.tensor([[0.9, -0.3, 0.3], [-0.1, 0.05, -0.99]])
    packed = CodeForm(rotation, levels)(vectors).numpy()
    # unit rows: [0.905, -0.302, 0.302] -> levels 3, 1, 2; [-0.1, 0.05, -0.994] -> 1, 2, 0; 2 bits each, 4 a byte
    assert packed.tolist() == [[0b11_01_10_00], [0b01_10_00_00]]


@pytest.mark.parametrize("name", list(CODE_BITS))
def test_code_levels_are_fit_on_the_training_rows_alone(name):
    x = reduced_rows()
    moved = x.clone()
    moved[TRAIN.max() + 1 :] *= -5  # every row outside TRAIN changes
    before, after = (StoredPrecision.calibrated(name, rows, TRAIN) for rows in (x, moved))
    assert np.array_equal(before.levels, after.levels) and np.array_equal(before.rotation, after.rotation)
    assert not np.array_equal(before.levels, StoredPrecision.calibrated(name, x).levels)
    assert np.allclose(before.rotation @ before.rotation.T, np.eye(DIM), atol=1e-5)


@pytest.mark.parametrize("bits", [2, 4])
def test_the_levels_are_one_dimensional_k_means_as_good_as_faiss_product_quantization_with_one_value_a_code(bits):
    """faiss's ProductQuantizer with M = dim and nbits = b is per-dimension k-means: ours reaches its distortion."""
    faiss = pytest.importorskip("faiss")
    spread = torch.randn(2000, 8, generator=torch.Generator().manual_seed(2)) * torch.linspace(2, 0.2, 8)
    values = rotated(spread, np.eye(8, dtype=np.float32))
    levels = lloyd_levels(values, bits)
    ours = ((levels[np.arange(8), np.abs(values[:, :, None] - levels).argmin(-1)] - values) ** 2).mean()
    pq = faiss.ProductQuantizer(8, 8, bits)
    pq.train(values)
    theirs = ((pq.decode(pq.compute_codes(values)) - values) ** 2).mean()
    assert ours <= theirs * 1.01


@pytest.mark.parametrize("name", ["pq4", "pq2", "pq1"])
def test_product_codes_decode_with_their_centroids_to_the_vectors_the_candidate_is_scored_on(name):
    """One byte per 8 / b rotated values: a reader takes each code's centroid, drops the padding and rotates back."""
    x = reduced_rows()
    stored = StoredPrecision.calibrated(name, x, TRAIN)
    width = VALUES_PER_CODE[name]
    codes = stored.encode(x.numpy())
    assert codes.dtype == np.uint8 and codes.shape == (N, -(-DIM // width)) == (N, stored.bytes_per_vector(DIM))
    assert stored.codebooks.shape == (codes.shape[1], 256, width)
    parts = np.stack([stored.codebooks[m, codes[:, m]] for m in range(codes.shape[1])], axis=1)
    read = parts.reshape(N, -1)[:, :DIM].astype(np.float64) @ stored.rotation.T.astype(np.float64)
    torch.testing.assert_close(cosines(stored.comparable(x)), cosines(read), rtol=1e-5, atol=1e-5)
    moved = x.clone()
    moved[TRAIN.max() + 1 :] *= -5  # the centroids and rotation see the training rows alone
    again = StoredPrecision.calibrated(name, moved, TRAIN)
    assert np.array_equal(again.codebooks, stored.codebooks) and np.array_equal(again.rotation, stored.rotation)


@pytest.mark.parametrize("name", ["int4", "pq2"])
def test_a_nested_prefix_of_codes_is_refused_in_one_line(name):
    stored = StoredPrecision.calibrated(name, reduced_rows(), TRAIN)
    with pytest.raises(SimreduceError, match="has no prefix codes") as refused:
        stored.prefix(8)
    assert "\n" not in str(refused.value)


def test_float16_is_a_cast_and_float32_the_vectors_themselves():
    x = reduced_rows()
    assert np.array_equal(StoredPrecision("float16").encode(x.numpy()), x.numpy().astype(np.float16))
    assert torch.equal(StoredPrecision.calibrated("float16", x).comparable(x), x.half().float())
    assert StoredPrecision.calibrated("float32", x).comparable(x) is x


@pytest.mark.parametrize(
    ("name", "expected"),
    [("float32", 52), ("float16", 26), ("int8", 13), ("int4", 7), ("int2", 4), ("int1", 2), ("pq4", 7), ("pq2", 4)]
    + [("pq1", 2), ("binary", 2)],
)
def test_bytes_per_vector_are_what_a_stored_vector_holds(name, expected):
    x = reduced_rows()
    stored = StoredPrecision.calibrated(name, x, TRAIN)
    assert stored.bytes_per_vector(DIM) == expected == stored.encode(x.numpy())[0].nbytes


@pytest.mark.parametrize(
    ("name", "dim"),
    [("float32", DIM), ("float16", DIM), ("int8", DIM), ("binary", DIM), ("binary", 16), ("int4", DIM), ("int2", 16)]
    + [("pq2", DIM), ("pq1", 16)],
)
def test_the_model_mlflow_serves_returns_what_compress_stores(project, monkeypatch, name, dim):
    """`mlflow.pyfunc` runs the exported map and stored form (int8's constants inside the program; a rotated code
    through simreduce's code model, no program exported) and gives the very arrays compress writes from the
    weights file; MLflow loads it with pickle refused."""
    x = torch.randn(N, 24, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    net = build_mlp(24, [16], dim)
    stored = StoredPrecision.calibrated(name, apply_net(net, x).detach(), TRAIN)
    store = TrackingStore.create(store_uri(project))
    with job_run(store, store.experiment_id("served"), "candidate", {}) as run:
        run.log_model(net, stored, x[:8])
    model_uri = f"runs:/{run.run_id}/model"
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # MLflow checks the pt2 archive first
    served = mlflow.pyfunc.load_model(model_uri).predict(x.numpy())
    compressed = load_reducer(store, model_uri).reduce(x.numpy())
    assert served.dtype == compressed.dtype == stored.dtype and served.shape == (N, stored.stored_width(dim))
    assert np.array_equal(served, compressed)
    info = mlflow.models.get_model_info(model_uri)
    (output,) = info.signature.outputs.inputs
    assert output.type == stored.dtype and output.shape == (-1, stored.stored_width(dim))
    assert ("pytorch" in info.flavors) == (name not in ROTATED)


def test_an_unknown_precision_is_refused_in_one_line_naming_the_known_ones():
    with pytest.raises(SimreduceError) as refused:
        EvalSettings(precisions=["float32", "int3"])
    message = str(refused.value)
    assert "'int3'" in message and all(name in message for name in PRECISIONS) and "\n" not in message
    with pytest.raises(SimreduceError, match="must be a list"):
        EvalSettings(precisions="int8")


def test_float32_is_always_a_candidate_and_each_precision_comes_once():
    assert EvalSettings(precisions=["int8", "binary", "int8"]).candidate_precisions == ["float32", "int8", "binary"]
    assert EvalSettings(precisions=[]).candidate_precisions == ["float32"]
