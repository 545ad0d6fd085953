"""faiss's product quantization (OPQ rotation + PQ codes) as a reference: what storing codes instead of a
reduction gives at the same bytes per vector, scored with the same metrics on the vectors its codes decode to.

A yardstick from another library, not a candidate to serve: its runs are tagged `reference`, log no model and
cannot win a sweep. faiss is an optional extra (`pip install -e ".[faiss]"`), imported only here.
"""

import importlib
import logging

import numpy as np
import torch
from torch import nn

from simreduce.reducers.base import Candidate, Reducer, check_dim
from simreduce.runtime.errors import SimreduceError

CODE_BITS = 8  # per sub-quantizer: 256 centroids, one byte of code each
CENTROIDS = 2**CODE_BITS
BLOCK_ROWS = 65_536  # rows coded and decoded at a time


def import_faiss():
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it reports at INFO which CPU build it found
    try:
        return importlib.import_module("faiss")
    except ImportError as e:
        raise SimreduceError(
            "encoder=pq needs faiss, an optional extra: pip install -e '.[faiss]' (faiss-cpu), or pick another encoder."
        ) from e


class DecodedCodes(nn.Module):
    """[N, D] vectors -> [N, D] float32: each L2-normalised row quantized by a trained faiss index and decoded
    back, the vectors a search over the stored codes compares (a faiss `sa_encode` / `sa_decode` round trip)."""

    def __init__(self, index):
        super().__init__()
        self.index = index

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        decoded = torch.empty(vectors.shape, dtype=torch.float32)
        for start in range(0, len(vectors), BLOCK_ROWS):  # a block's normalised copy at a time, not the corpus's
            unit = nn.functional.normalize(vectors[start : start + BLOCK_ROWS].float(), dim=1).numpy()
            decoded[start : start + BLOCK_ROWS] = torch.from_numpy(self.index.sa_decode(self.index.sa_encode(unit)))
        return decoded


def quiet(quantizer):
    """`quantizer`, set not to warn once per k-means (hundreds of lines) below 39 training rows per centroid: a
    reference trained on a small sample is still one, and the README says so."""
    quantizer.cp.min_points_per_centroid = 1
    return quantizer


class ProductQuantizer(Reducer):
    """OPQ + PQ with `dim` sub-quantizers of one byte each: a code of `dim` bytes per vector, so its `dim` is its
    bytes (`encoder.bytes`) and a sweep over `encoder.dim` puts it beside reducers of the same sizes.

    The rows are L2-normalised first (cosine sees only directions), rotated by OPQ (`opq_iterations`
    alternations of rotation and codebooks) to the largest multiple of `dim` at most D, and cut into `dim`
    sub-vectors of 256 centroids each.
    """

    kind = "pq"
    reference = True

    def __init__(self, in_dim: int, dim: int, bytes: int | None = None, opq_iterations: int = 20, threads: int = 1):
        check_dim(dim, in_dim)
        if bytes is not None and bytes != dim:
            raise SimreduceError(
                f"encoder.bytes={bytes} differs from encoder.dim={dim}: a pq code takes one byte per sub-quantizer, "
                "so its size is set once, by encoder.dim (encoder.bytes follows it)."
            )
        self.faiss = import_faiss()
        self.in_dim = in_dim
        self.dim = dim
        self.opq_iterations = opq_iterations
        self.threads = threads
        self.net: nn.Module | None = None

    def fit(self, train_vectors: torch.Tensor) -> "ProductQuantizer":
        if len(train_vectors) < CENTROIDS:
            raise SimreduceError(
                f"encoder=pq needs at least {CENTROIDS} training rows ({CENTROIDS} centroids per sub-quantizer), "
                f"not {len(train_vectors)}: add rows or leave pq out."
            )
        faiss = self.faiss
        faiss.omp_set_num_threads(self.threads)  # OpenMP's spinning threads crawl on a shared, busy machine
        rotated_dim = self.dim * (self.in_dim // self.dim)
        rotation = faiss.OPQMatrix(self.in_dim, self.dim, rotated_dim)
        rotation.niter = self.opq_iterations
        rotation_codebooks = quiet(faiss.ProductQuantizer(rotated_dim, self.dim, CODE_BITS))
        rotation.pq = rotation_codebooks  # a raw pointer, used by `train` alone
        codes = faiss.IndexPQ(rotated_dim, self.dim, CODE_BITS)
        quiet(codes.pq)
        index = faiss.IndexPreTransform(rotation, codes)
        index.train(np.ascontiguousarray(nn.functional.normalize(train_vectors.float(), dim=1).numpy()))
        rotation.pq = None  # `rotation_codebooks` goes with this frame
        self.net = DecodedCodes(index)
        return self

    def candidates(self, precisions=("float32",)) -> list[Candidate]:
        """One candidate whatever `precisions`: the codes are what is stored, `dim` bytes each."""
        return [Candidate(self.kind, self.dim, self.net, code_bytes=self.net.index.sa_code_size())]
