"""Product codes (`pq4`, `pq2`, `pq1`): b bits a value spent as one byte per 8 / b values, a vector quantizer in
place of `codes.py`'s scalar one. Each reduced vector is L2-normalised, turned by a rotation learned on the
training rows, cut into sub-vectors of 8 / b values (the last padded with zeros), and each sub-vector stored as
the number of the nearest of its sub-space's 256 centroids (k-means on the training rows): ceil(dim * b / 8)
bytes, as many as the scalar code of the same bits.

Why beside the scalar codes: at 1 and 2 bits a value a scalar level per value cannot follow how the values of a
vector move together, and 256 centroids of 8 or 4 values can; faiss's OPQ+PQ does this to the raw 384-d vector
and kept more neighbours than any scalar code at 16 and 32 bytes (bench/results/bits.md). Doing it to the
reduced vector spends the same bytes on the directions that matter. The rotation is OPQ's non-parametric
one (Ge et al.): alternate the centroids and the orthogonal Procrustes rotation that maps the rows closest to
their quantised selves, from the seeded random rotation. Everything is torch and numpy: no faiss to fit or to
serve.
"""

import numpy as np
import torch
from torch import nn

from simreduce.reducers.codes import random_rotation

VALUES_PER_CODE = {"pq4": 2, "pq2": 4, "pq1": 8}  # values a one-byte code stands for: 8 / bits a value
CENTROIDS = 256  # per sub-space: one byte of code
KMEANS_ITERATIONS = 20
OPQ_ITERATIONS = 10  # rotation steps, each warm-starting the centroids for OPQ_KMEANS_ITERATIONS
OPQ_KMEANS_ITERATIONS = 4
FIT_ROWS = 20_000  # training rows the fit sees at most (a seeded sample): ~80 a centroid
SCORE_BLOCK = 2**24  # [sub-spaces, rows, centroids] scores computed at once while fitting (64 MB of float32)


def sub_vectors(rotated: torch.Tensor, width: int) -> torch.Tensor:
    """[N, dim] -> [N, M, width] with M = ceil(dim / width), the last sub-vector padded with zeros."""
    return nn.functional.pad(rotated, (0, -rotated.shape[1] % width)).unflatten(1, (-1, width))


def nearest(parts: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """[N, M, width] sub-vectors and [M, CENTROIDS, width] centroids -> [N, M] the nearest centroid's number,
    one sub-space at a time so memory holds [N, CENTROIDS], not [N, M, CENTROIDS]."""
    halved = (codebooks**2).sum(dim=-1) / 2
    return torch.stack([(parts[:, m] @ codebooks[m].T - halved[m]).argmax(dim=1) for m in range(len(codebooks))], 1)


def assign(parts: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """`nearest` for fitting: every sub-space in one batched product, over blocks of rows whose [M, rows,
    CENTROIDS] scores hold at most SCORE_BLOCK values (the served `nearest` loops over sub-spaces instead, which
    `torch.export` keeps whatever the batch size)."""
    halved = (codebooks**2).sum(dim=-1)[:, None, :] / 2
    block = max(1, SCORE_BLOCK // (len(codebooks) * CENTROIDS))
    found = []
    for start in range(0, len(parts), block):
        scores = torch.baddbmm(-halved, parts[start : start + block].transpose(0, 1), codebooks.transpose(1, 2))
        found.append(scores.argmax(dim=2).T)
    return torch.cat(found)


def kmeans(parts: torch.Tensor, codebooks: torch.Tensor, iterations: int) -> torch.Tensor:
    """Lloyd iterations of each sub-space's centroids [M, CENTROIDS, width] on [n, M, width] sub-vectors, every
    sub-space at once; an empty centroid stays where it is."""
    n_spaces, _, width = codebooks.shape
    offsets = torch.arange(n_spaces) * CENTROIDS  # sub-space m's centroids are rows m * CENTROIDS onwards
    for _ in range(iterations):
        cells = (assign(parts, codebooks) + offsets).flatten()
        sums = torch.zeros(n_spaces * CENTROIDS, width).index_add_(0, cells, parts.reshape(-1, width))
        counts = torch.bincount(cells, minlength=n_spaces * CENTROIDS)[:, None]
        means = (sums / counts.clamp(min=1)).view_as(codebooks)
        codebooks = torch.where(counts.view(n_spaces, CENTROIDS, 1) > 0, means, codebooks)
    return codebooks


def decoded_parts(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """[N, M] centroid numbers -> [N, M, width] their centroids."""
    return codebooks[torch.arange(len(codebooks)), codes.long()]


def fit_product_codes(unit: np.ndarray, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """[n, dim] unit training rows -> the [dim, dim] rotation and [M, CENTROIDS, width] centroids (OPQ, see the
    module), on at most FIT_ROWS of them; centroids start at seeded distinct rows (repeated when fewer)."""
    generator = np.random.default_rng(seed)
    if len(unit) > FIT_ROWS:
        unit = unit[np.sort(generator.choice(len(unit), FIT_ROWS, replace=False))]
    rows = torch.from_numpy(np.ascontiguousarray(unit, dtype=np.float32))
    rotation = torch.from_numpy(random_rotation(rows.shape[1], seed))
    parts = sub_vectors(rows @ rotation, width)
    start = generator.choice(len(rows), CENTROIDS, replace=len(rows) < CENTROIDS)
    codebooks = kmeans(parts, parts[torch.from_numpy(start)].transpose(0, 1).contiguous(), KMEANS_ITERATIONS)
    for _ in range(OPQ_ITERATIONS):
        quantised = decoded_parts(assign(parts, codebooks), codebooks).flatten(1)[:, : rows.shape[1]]
        u, _, vt = torch.linalg.svd(rows.T @ quantised)
        rotation = u @ vt
        parts = sub_vectors(rows @ rotation, width)
        codebooks = kmeans(parts, codebooks, OPQ_KMEANS_ITERATIONS)
    return rotation.numpy(), kmeans(parts, codebooks, KMEANS_ITERATIONS).numpy()


def decode_product(stored: np.ndarray, rotation: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """[N, M] uint8 codes -> [N, dim] float32 vectors in the reduced space: each code's centroid, the padding
    dropped, rotated back by `rotation`'s transpose."""
    parts = codebooks[np.arange(len(codebooks)), stored.astype(np.int64)]
    return parts.reshape(len(stored), -1)[:, : len(rotation)] @ rotation.T


class ProductForm(nn.Module):
    """[N, dim] float32 reduced vectors -> [N, M] uint8 codes, in torch so the served model computes them
    (`torch.export` keeps `rotation` and `codebooks` as buffers)."""

    def __init__(self, rotation: np.ndarray, codebooks: np.ndarray):
        super().__init__()
        self.register_buffer("rotation", torch.tensor(rotation, dtype=torch.float32))
        self.register_buffer("codebooks", torch.tensor(codebooks, dtype=torch.float32))

    def forward(self, reduced: torch.Tensor) -> torch.Tensor:
        turned = nn.functional.normalize(reduced, dim=1, eps=1e-12) @ self.rotation
        return nearest(sub_vectors(turned, self.codebooks.shape[2]), self.codebooks).to(torch.uint8)
