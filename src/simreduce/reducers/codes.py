"""Codes of `b` bits a value (`int4`, `int2`, `int1`): each reduced vector L2-normalised, turned by an
orthogonal rotation learned on the training rows, and each rotated value replaced by the nearest of its
dimension's 2^b levels; the level numbers are packed `8 // b` to a byte, the first value in the highest bits
(`np.packbits` order for b = 1).

Why each part (measured by `bench/bits.py` on 5,000 real package descriptions, all-MiniLM-L6-v2, recall@10 of
held-out float queries; see bench/results/bits.md):
- Normalised first: cosine sees only directions, so no level is spent on a vector's length and no per-vector
  norm has to be stored: `bytes_per_vector` is the packed codes alone, ceil(dim * b / 8).
- A rotation: a reduction's values have very unequal spreads (PCA's and SVD's fall off with the component),
  and b bits on a nearly constant dimension are wasted. A seeded random rotation spreads the variance over all
  dimensions (128-d SVD, 1 bit: recall@10 0.514 unrotated, 0.579 random); a rotation learned on the training
  rows, ITQ-style (alternating the levels and an orthogonal Procrustes step), also turns the values towards
  their levels and kept more again at 1 and 2 bits (0.604; 2 bits at 128-d 0.739 against 0.729, at 256-d 0.850
  against 0.838; at 4 bits, 64-d, all three within 0.002). It costs seconds of fitting per candidate (256-d,
  4,000 rows, one thread: about 10 s on a busy machine), bounded by ITQ_ROWS; it is the one kept, started from
  the seeded random rotation.
- Levels per dimension by 1-D k-means (Lloyd-Max) on the training rows, started from the quantiles: after the
  rotation each dimension is close to Gaussian, where evenly spaced levels over the training range put most
  values in two or three middle levels; uniform levels kept less recall@10 at every size (2 bits, 256-d, both
  after the random rotation: 0.769 against 0.838). faiss's ProductQuantizer with M = dim and nbits = b is the
  same quantizer (1-D k-means per dimension; tests/test_precision.py checks ours reaches its distortion); this
  one is exact Lloyd iterations on the sorted values, in numpy, so no faiss is needed to fit or to serve.
- Decoding maps the levels back through the rotation's transpose: a decoded vector lives in the reduced space,
  so a float query (reduced, not quantised) is compared with it directly.
"""

import numpy as np
import torch
from torch import nn

CODE_BITS = {"int4": 4, "int2": 2, "int1": 1}
LLOYD_ITERATIONS = 40  # 1-D k-means converges in far fewer on near-Gaussian values; more changes no level
ITQ_ITERATIONS = 20  # rotation steps, each an SVD of [dim, dim] and two passes over the rows
ITQ_LLOYD_ITERATIONS = 3  # level updates between rotation steps, warm-started: the levels move little per step
ITQ_ROWS = 20_000  # training rows ITQ sees at most: a rotation of dim^2 values needs no more


def random_rotation(dim: int, seed: int = 0) -> np.ndarray:
    """A seeded, uniformly random [dim, dim] orthogonal matrix (QR of a Gaussian, signs fixed by R's diagonal)."""
    gaussian = np.random.default_rng(seed).standard_normal((dim, dim))
    q, r = np.linalg.qr(gaussian)
    return (q * np.sign(np.diag(r))).astype(np.float32)


def rotated(reduced: torch.Tensor, rotation: np.ndarray) -> np.ndarray:
    """[N, dim] reduced vectors -> [N, dim] the values their codes quantise: each row L2-normalised, then rotated."""
    return (nn.functional.normalize(reduced.float(), dim=1, eps=1e-12) @ torch.from_numpy(rotation)).numpy()


def lloyd_levels(
    values: np.ndarray, bits: int, iterations: int = LLOYD_ITERATIONS, start: np.ndarray | None = None
) -> np.ndarray:
    """[n, dim] training values -> [dim, 2^bits] sorted levels per dimension: 1-D k-means (Lloyd-Max) started
    at `start` ([dim, 2^bits]) or the quantiles. Each dimension is sorted once, so an iteration is a search of its
    2^bits - 1 boundaries and differences of cumulative sums, not a pass over every value; an empty cell keeps
    its level."""
    n_levels = 2**bits
    ordered = np.sort(np.asarray(values, dtype=np.float64), axis=0)
    n, dim = ordered.shape
    sums = np.vstack([np.zeros((1, dim)), np.cumsum(ordered, axis=0)])
    if start is None:
        start = np.quantile(ordered, (np.arange(n_levels) + 0.5) / n_levels, axis=0).T
    levels = start.astype(np.float64)
    for _ in range(iterations):
        boundaries = (levels[:, 1:] + levels[:, :-1]) / 2
        # cell j of a dimension holds its sorted values [edge j, edge j+1): values above boundary j-1, up to boundary j
        edges = np.stack([np.searchsorted(ordered[:, d], boundaries[d], side="right") for d in range(dim)])
        edges = np.hstack([np.zeros((dim, 1), dtype=np.int64), edges, np.full((dim, 1), n)])
        counts = np.diff(edges, axis=1)
        cell_sums = np.diff(np.take_along_axis(sums.T, edges, axis=1), axis=1)
        levels = np.where(counts > 0, cell_sums / np.maximum(counts, 1), levels)
    return np.sort(levels, axis=1).astype(np.float32)


def nearest_levels(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """[n, dim] values -> [n, dim] each replaced by the nearest of its dimension's sorted `levels` [dim, L]."""
    boundaries = (levels[:, 1:] + levels[:, :-1]) / 2
    codes = np.stack([np.searchsorted(boundaries[d], values[:, d], side="left") for d in range(values.shape[1])], 1)
    return levels[np.arange(values.shape[1]), codes]


def learned_rotation(unit: np.ndarray, bits: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ITQ (Gong and Lazebnik's iterative quantization) for b bits: [n, dim] unit training rows -> the [dim, dim]
    rotation and [dim, 2^bits] levels, alternating the levels of the rotated rows (Lloyd, warm-started) and the
    orthogonal Procrustes rotation that maps the rows closest to their quantised selves, from the seeded random
    rotation; at most ITQ_ROWS of them (a seeded sample), so its cost does not grow with the corpus."""
    if len(unit) > ITQ_ROWS:
        unit = unit[np.sort(np.random.default_rng(seed).choice(len(unit), ITQ_ROWS, replace=False))]
    rotation = random_rotation(unit.shape[1], seed)
    levels = lloyd_levels(unit @ rotation, bits)
    for _ in range(ITQ_ITERATIONS):
        u, _, vt = np.linalg.svd(unit.T @ nearest_levels(unit @ rotation, levels))
        rotation = (u @ vt).astype(np.float32)
        levels = lloyd_levels(unit @ rotation, bits, iterations=ITQ_LLOYD_ITERATIONS, start=levels)
    return rotation, lloyd_levels(unit @ rotation, bits, start=levels)


def packed_width(dim: int, bits: int) -> int:
    """Bytes holding `dim` codes of `bits` bits: ceil(dim * bits / 8)."""
    return (dim * bits + 7) // 8


def unpack(stored: np.ndarray, dim: int, bits: int) -> np.ndarray:
    """[N, packed_width] uint8 -> [N, dim] level numbers (uint8), the inverse of `CodeForm`'s packing."""
    per_byte = 8 // bits
    shifts = np.arange(per_byte - 1, -1, -1, dtype=np.uint8) * bits
    codes = (stored[:, :, None] >> shifts) & np.uint8(2**bits - 1)
    return codes.reshape(len(stored), -1)[:, :dim]


def decode(stored: np.ndarray, rotation: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """[N, packed_width] codes -> [N, dim] float32 vectors in the reduced space (unit length up to the levels'
    error): each code's level, rotated back by `rotation`'s transpose."""
    dim, n_levels = levels.shape
    codes = unpack(stored, dim, int(n_levels).bit_length() - 1)
    return levels[np.arange(dim), codes] @ rotation.T


class CodeForm(nn.Module):
    """[N, dim] float32 reduced vectors -> [N, ceil(dim * b / 8)] uint8 packed codes, in torch so the served
    model computes them (`torch.export` keeps `rotation` [dim, dim] and `boundaries` [dim, 2^b - 1], the
    midpoints between neighbouring levels, as buffers): a value's code is the number of its dimension's
    boundaries it exceeds, the nearest level's number."""

    def __init__(self, rotation: np.ndarray, levels: np.ndarray):
        super().__init__()
        self.bits = int(levels.shape[1]).bit_length() - 1
        boundaries = (levels[:, 1:] + levels[:, :-1]) / 2
        self.register_buffer("rotation", torch.tensor(rotation, dtype=torch.float32))
        self.register_buffer("boundaries", torch.tensor(boundaries, dtype=torch.float32))

    def forward(self, reduced: torch.Tensor) -> torch.Tensor:
        turned = nn.functional.normalize(reduced, dim=1, eps=1e-12) @ self.rotation
        codes = (turned[:, :, None] > self.boundaries).sum(dim=-1)
        per_byte = 8 // self.bits
        codes = nn.functional.pad(codes, (0, -reduced.shape[1] % per_byte))
        place = 2 ** (self.bits * torch.arange(per_byte - 1, -1, -1, device=reduced.device))
        return (codes.unflatten(1, (-1, per_byte)) * place).sum(dim=-1).to(torch.uint8)
