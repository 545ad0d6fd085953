"""Classical reducers, fitted in closed form on the training rows: plain estimators, no training loop.

Each holds its transform as a one-layer `build_mlp`, an `nn.Linear(D, dim)` (PCA's centring in the bias), so it
is evaluated, logged and served exactly like the trained encoders. PCA and SVD take their axes from
`spectrum.py` rather than scikit-learn's estimators, which hold a float64 copy of the matrix (6 GiB at
100k x 2048); the tests check that they match scikit-learn's `PCA` and `TruncatedSVD`.
"""

import numpy as np
import torch
from sklearn.random_projection import GaussianRandomProjection

from simreduce.reducers.base import Reducer, build_mlp, check_dim, check_rank, set_linear
from simreduce.reducers.spectrum import cosine_spectrum, row_mean, spectrum


def cosine_svd_axes(vectors: torch.Tensor, dim: int) -> np.ndarray:
    """[N, D] vectors -> [dim, D] float64: the top right singular vectors of their L2-normalised rows
    (uncentred; classical MDS on the cosine Gram).

    They give the best rank-`dim` fit of the cosine matrix among projections of normalised vectors: the `svd`
    baseline, and where the cosine encoder and the floor start.
    """
    check_rank(dim, vectors.shape[0], "the SVD")
    return cosine_spectrum(vectors).axes[:dim].numpy()


class ClosedFormReducer(Reducer):
    """A linear map [N, D] -> [N, dim] set once by `fit` from `linear_map`."""

    def __init__(self, in_dim: int, dim: int, seed: int = 0):
        check_dim(dim, in_dim)
        self.dim = dim
        self.seed = seed
        self.net = build_mlp(in_dim, [], dim, out_bias=True)

    def linear_map(self, train_vectors: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """[N, D] training vectors -> (weight [dim, D], bias [dim]) of the fitted transform."""
        raise NotImplementedError

    def fit(self, train_vectors: torch.Tensor) -> "ClosedFormReducer":
        set_linear(self.net[0], *self.linear_map(train_vectors))
        return self


class PCAReducer(ClosedFormReducer):
    """Centred PCA: `(x - mean) @ axes.T`, the axes from the [D, D] covariance (see `spectrum.py`)."""

    kind = "pca"

    def linear_map(self, train_vectors: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        check_rank(self.dim, train_vectors.shape[0], "PCA")
        mean = row_mean(train_vectors)
        axes = spectrum(train_vectors, shift=-mean).axes[: self.dim]
        return axes.numpy(), (-axes @ mean).numpy()


class SVDReducer(ClosedFormReducer):
    """Truncated SVD of normalised vectors. Applied to raw rows it only rescales each output row, which no
    cosine similarity sees, so no normalisation layer is needed."""

    kind = "svd"

    def linear_map(self, train_vectors: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return cosine_svd_axes(train_vectors, self.dim), np.zeros(self.dim)


class RandomProjectionReducer(ClosedFormReducer):
    """scikit-learn's Gaussian random projection, seeded: the reference that learns nothing from the data."""

    kind = "random"

    def linear_map(self, train_vectors: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        projection = GaussianRandomProjection(self.dim, random_state=self.seed)
        projection.fit(train_vectors[:2].numpy())  # it draws the matrix from the input width alone
        return projection.components_, np.zeros(self.dim)
