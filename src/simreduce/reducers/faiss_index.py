"""A faiss index serving what `simreduce compress` wrote: the reducer's map as the index's pre-transform, the
stored form's tables as its quantizer, compress's codes as its contents. `faiss.read_index(path).search(raw
queries, k)` then needs no simreduce.

How each stored form maps onto faiss's own classes (nothing re-implemented):
- b-bit codes (`int4`, `int2`, `int1`) and `binary`: an `IndexPQ` of one-dimensional sub-quantizers (M values,
  nbits = b), whose centroids are the levels (binary's: -1 and +1). faiss packs a byte's codes from its lowest
  bits and simreduce from its highest, so within each byte the sub-quantizers take our values in reverse order.
- product codes (`pq4`, `pq2`, `pq1`): an `IndexPQ` of our centroids, one byte a sub-quantizer, as stored.
- `int8`: an `IndexPQ` of one-dimensional 8-bit sub-quantizers whose 256 centroids are the dimension's levels in
  the order of the code's byte, so the int8 codes are added as they are.
- `float32`, `float16`: an `IndexFlatIP` / `IndexScalarQuantizer(QT_fp16)` of the vectors normalised (faiss's
  way to search by cosine).
The normalisation and the learned rotation the codes were made after are a `NormalizationTransform` and a
`LinearTransform` in the chain (padded with zero rows to the sub-quantizers' width); queries go through them too.

faiss ranks by inner product with each decoded vector, the yardstick by cosine. They are one ranking where every
decoded vector has the same norm (float, binary), nearly one where the codes were made of unit vectors (int4 to
pq1: the norms spread only by the quantisation error), and less so for int8, whose decoded vectors keep the
reduced vectors' own norms. `search_by_cosine` re-ranks faiss's best `k_factor * k` by cosine: the yardstick's
ranking, with faiss and numpy alone (the recipe in docs/serving.md).
"""

import numpy as np
from torch import nn

from simreduce.reducers.codes import CODE_BITS, packed_width
from simreduce.reducers.precision import StoredPrecision
from simreduce.reducers.product_codes import VALUES_PER_CODE
from simreduce.reducers.product_quantizer import import_faiss
from simreduce.runtime.errors import SimreduceError

SCALAR_BITS = {**CODE_BITS, "binary": 1}  # forms stored as packed one-dimensional codes of this many bits


def linear_map(net: nn.Module, source: str) -> nn.Linear:
    """The one `nn.Linear` a reducer's map is, or a one-line refusal: faiss's pre-transforms are linear."""
    layers = list(net) if isinstance(net, nn.Sequential) else [net]
    if len(layers) != 1 or not isinstance(layers[0], nn.Linear):
        raise SimreduceError(
            f"--faiss-index needs a linear map, but {source} is an MLP ({len(layers)} layers), which faiss cannot "
            "apply to queries: write the codes without it and reduce queries with simreduce compress."
        )
    return layers[0]


def linear_transform(faiss, weight: np.ndarray, bias: np.ndarray | None = None):
    """faiss's `LinearTransform` y = weight @ x (+ bias), for a [d_out, d_in] `weight`."""
    d_out, d_in = weight.shape
    transform = faiss.LinearTransform(d_in, d_out, bias is not None)
    faiss.copy_array_to_vector(np.ascontiguousarray(weight, dtype=np.float32).ravel(), transform.A)
    if bias is not None:
        faiss.copy_array_to_vector(np.ascontiguousarray(bias, dtype=np.float32), transform.b)
    transform.is_trained = True
    return transform


def byte_order(dim: int, bits: int) -> np.ndarray:
    """[ceil(dim * bits / 8) * 8 / bits] for faiss's sub-quantizer p, the value of ours its code holds (dim and
    beyond: padding): codes fill a byte from the highest bits in simreduce, from the lowest in faiss."""
    per_byte = 8 // bits
    positions = np.arange(packed_width(dim, bits) * per_byte)
    return positions - positions % per_byte + (per_byte - 1 - positions % per_byte)


def product_quantizer(faiss, centroids: np.ndarray):
    """An `IndexPQ` (inner product) over [M, 2^b, width] centroids, trained by them."""
    n_spaces, n_centroids, width = centroids.shape
    index = faiss.IndexPQ(n_spaces * width, n_spaces, n_centroids.bit_length() - 1, faiss.METRIC_INNER_PRODUCT)
    faiss.copy_array_to_vector(np.ascontiguousarray(centroids, dtype=np.float32).ravel(), index.pq.centroids)
    index.is_trained = True
    return index


def quantizer_and_turn(faiss, stored: StoredPrecision, dim: int):
    """The faiss index holding `stored`'s codes of `dim`-d reduced vectors, and the [width, dim] matrix that turns
    a reduced vector into that index's coordinates (None: the index takes reduced vectors as they are)."""
    name = stored.name
    if name == "float32":
        return faiss.IndexFlatIP(dim), None
    if name == "float16":
        return faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT), None
    if name == "int8":
        signed = np.arange(256).astype(np.uint8).view(np.int8).astype(np.float32)  # byte u's code
        levels = (signed[None, :] + 128) * stored.steps[:, None] + stored.starts[:, None]
        return product_quantizer(faiss, levels[:, :, None]), None
    if name in VALUES_PER_CODE:
        width = stored.codebooks.shape[2]
        turn = np.zeros((len(stored.codebooks) * width, dim), dtype=np.float32)
        turn[:dim] = stored.rotation.T
        return product_quantizer(faiss, stored.codebooks), turn
    bits = SCALAR_BITS[name]
    order = byte_order(dim, bits)
    real = order < dim
    levels = np.zeros((len(order), 2**bits), dtype=np.float32)
    levels[real] = np.array([-1.0, 1.0]) if name == "binary" else stored.levels[order[real]]
    turn = np.zeros((len(order), dim), dtype=np.float32)
    turn[real] = np.eye(dim, dtype=np.float32)[order[real]] if name == "binary" else stored.rotation.T[order[real]]
    return product_quantizer(faiss, levels[:, :, None]), turn


def faiss_index(net: nn.Module, stored: StoredPrecision, dim: int, source: str):
    """An empty, trained `IndexPreTransform` for the reducer `net` ([N, D] -> [N, dim], linear) stored as
    `stored`: raw [N, D] queries in, neighbours among the codes `add_codes` puts in it out."""
    faiss = import_faiss()
    layer = linear_map(net, source)
    bias = None if layer.bias is None else layer.bias.detach().numpy()
    chain = [linear_transform(faiss, layer.weight.detach().numpy(), bias)]
    quantizer, turn = quantizer_and_turn(faiss, stored, dim)
    if stored.name not in ("int8", "binary"):  # codes of unit vectors; float ones, for cosine as inner product
        chain.append(faiss.NormalizationTransform(dim, 2.0))
    if turn is not None:
        chain.append(linear_transform(faiss, turn))
    index = faiss.IndexPreTransform(quantizer)
    for transform in reversed(chain):
        index.prepend_transform(transform)
    return index


def inner_index(index):
    """The quantizer an `IndexPreTransform` (as built, or read back by `faiss.read_index`) hands queries to."""
    return import_faiss().downcast_index(index.index)


def add_codes(index, stored: np.ndarray, precision: str) -> None:
    """Put what compress stored ([N, width] codes, or float vectors) into `faiss_index`'s index, in row order:
    faiss's id i is the output's row i."""
    quantizer = inner_index(index)
    if precision in ("float32", "float16"):
        vectors = np.array(stored, dtype=np.float32)  # a copy: normalised in place, and `stored` may be mapped
        import_faiss().normalize_L2(vectors)
        quantizer.add(vectors)
    else:
        quantizer.add_sa_codes(np.ascontiguousarray(stored).view(np.uint8))
    index.ntotal = quantizer.ntotal


def search_by_cosine(index, queries: np.ndarray, k: int, k_factor: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """[n, D] raw queries -> ([n, k] cosines, [n, k] row numbers): faiss's best `k_factor * k` by inner product,
    re-ranked by cosine with their decoded vectors, the yardstick's measure (see the module). Rows faiss did not
    fill (fewer than k stored) are -1."""
    faiss = import_faiss()
    reduced = np.ascontiguousarray(queries, dtype=np.float32)
    for i in range(index.chain.size()):
        reduced = faiss.downcast_VectorTransform(index.chain.at(i)).apply(reduced)
    quantizer = inner_index(index)
    _, found = quantizer.search(reduced, min(k * k_factor, quantizer.ntotal))
    decoded = quantizer.reconstruct_batch(np.maximum(found, 0).ravel()).reshape(*found.shape, -1)
    norms = np.linalg.norm(decoded, axis=2) * np.linalg.norm(reduced, axis=1)[:, None]
    cosines = np.where(found >= 0, np.einsum("nkd,nd->nk", decoded, reduced) / np.maximum(norms, 1e-12), -np.inf)
    order = np.argsort(-cosines, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(cosines, order, axis=1), np.take_along_axis(found, order, axis=1)
