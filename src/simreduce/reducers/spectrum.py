"""Singular values and right singular vectors of [N, D] vectors in memory O(D^2), whatever N.

The SVD baseline, the encoder's start and whitening, the Eckart-Young bound and PCA's explained variance all
need the spectrum of the [N, D] matrix. A direct SVD of 100k x 2048 rows holds a float64 copy of the matrix
and its factors (about 6 GiB); the [D, D] Gram accumulated block by block holds 32 MiB and has the same
eigenvectors, its eigenvalues being the squared singular values.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sklearn.utils.extmath import svd_flip

from simreduce.reducers.losses import EPS

BLOCK_ROWS = 4096


@dataclass
class Spectrum:
    """`singular_values` [r] descending and `axes` [r, D] (the right singular vectors as rows), float64,
    with r = min(N, D). Each axis has its largest entry positive (scikit-learn's convention), so whichever
    way it was computed, the same vectors give the same axes."""

    singular_values: torch.Tensor
    axes: torch.Tensor

    def __post_init__(self) -> None:
        _, axes = svd_flip(None, self.axes.numpy().copy(), u_based_decision=False)
        self.axes = torch.from_numpy(axes)


def row_blocks(
    vectors: torch.Tensor, unit: bool = False, shift: torch.Tensor | None = None, block_rows: int = BLOCK_ROWS
) -> Iterator[torch.Tensor]:
    """[N, D] -> float64 blocks of at most `block_rows` rows, each L2-normalised (`unit`) or moved by `shift` [D]."""
    for block in vectors.split(block_rows):
        block = block.double()
        if unit:
            block = F.normalize(block, dim=1, eps=EPS)
        if shift is not None:
            block = block + shift
        yield block


def spectrum(
    vectors: torch.Tensor, unit: bool = False, shift: torch.Tensor | None = None, block_rows: int = BLOCK_ROWS
) -> Spectrum:
    """The spectrum of the rows of `vectors` as `row_blocks` transforms them.

    With no more rows than columns the float64 rows are at most [D, D] and a thin SVD is cheaper and more
    precise; with more, the Gram is summed block by block and diagonalised.
    """
    blocks = row_blocks(vectors, unit, shift, block_rows)
    n, d = vectors.shape
    if n <= d:
        _, singular_values, axes = torch.linalg.svd(torch.cat(list(blocks)), full_matrices=False)
        return Spectrum(singular_values, axes)
    gram = sum(block.T @ block for block in blocks)
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)  # ascending
    return Spectrum(eigenvalues.flip(0).clamp_min(0).sqrt(), eigenvectors.flip(1).T)


def cosine_spectrum(vectors: torch.Tensor, block_rows: int = BLOCK_ROWS) -> Spectrum:
    """The spectrum of the L2-normalised rows: the cosine matrix's eigenvalues are its squared singular values."""
    return spectrum(vectors, unit=True, block_rows=block_rows)


def row_mean(vectors: torch.Tensor, block_rows: int = BLOCK_ROWS) -> torch.Tensor:
    """[N, D] -> [D] float64 mean row, summed block by block."""
    return sum(block.sum(dim=0) for block in row_blocks(vectors, block_rows=block_rows)) / len(vectors)


def centred_spectrum(vectors: torch.Tensor) -> Spectrum:
    """The spectrum of [N, D] vectors less their mean: PCA's."""
    return spectrum(vectors, shift=-row_mean(vectors))
