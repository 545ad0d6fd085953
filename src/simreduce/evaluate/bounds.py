"""What the spectrum of the training rows alone says any `dim`-dimensional reducer can reach: a floor on its
pairs' squared cosine error (Eckart-Young) and a ceiling on the variance a linear projection keeps (PCA's).
A caller computing them for every dim passes the spectrum, computed once."""

import torch

from simreduce.reducers.spectrum import Spectrum, centred_spectrum, cosine_spectrum, row_blocks


@torch.no_grad()
def eckart_young_bound(vectors: torch.Tensor, dim: int, found: Spectrum | None = None) -> float:
    """[N, D] vectors -> MSE over pairs i<j of the best rank-`dim` approximation S_d of their cosine matrix S.

    A floor for any `dim`-dimensional embedding: its cosine matrix has rank <= dim and an exact unit
    diagonal, so its off-diagonal squared error is at least ||S - S_d||_F^2, which is at least the off-diagonal
    part measured here. With X the normalised rows and P the projection on their top `dim` right singular
    vectors, S - S_d = X (I - P) X^T: the full squared error is the sum of the remaining squared eigenvalues
    (singular values to the 4th) and the diagonal's is sum_i (|x_i|^2 - |P x_i|^2)^2. Memory O(D^2), never O(N^2).
    """
    n = vectors.shape[0]
    found = cosine_spectrum(vectors) if found is None else found  # computed once for every dim by a caller
    full_error = found.singular_values[dim:].pow(4).sum()
    top = found.axes[:dim].T
    diagonal_error = sum(
        ((b.square().sum(dim=1) - (b @ top).square().sum(dim=1)) ** 2).sum() for b in row_blocks(vectors, unit=True)
    )
    return max(float(full_error - diagonal_error) / (n * (n - 1)), 0.0)


def pca_explained_variance(vectors: torch.Tensor, dim: int, found: Spectrum | None = None) -> float:
    """Share of the variance of [N, D] vectors that their top `dim` (centred) principal components keep
    (`found`: their centred spectrum, computed once for every dim)."""
    variances = (centred_spectrum(vectors) if found is None else found).singular_values.square()
    return float(variances[:dim].sum() / variances.sum())
