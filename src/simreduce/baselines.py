"""Classical reducers, fitted in closed form on the training words.

Each becomes an `nn.Linear(D, dim)` holding its transform (PCA's centring in the bias), so it
is evaluated, logged and served exactly like the trained encoders (see the protocol in `reducers.py`).
"""

import lightning.pytorch as pl
import numpy as np
import torch
from sklearn.random_projection import GaussianRandomProjection
from torch import nn

from simreduce.errors import SimreduceError
from simreduce.spectrum import cosine_spectrum, row_mean, spectrum


def check_dim(dim: int, in_dim: int) -> None:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise SimreduceError(f"encoder.dim={dim!r} must be a positive integer.")
    if dim >= in_dim:
        raise SimreduceError(
            f"encoder.dim={dim} is not below the input width {in_dim}: nothing would be compressed; pick a smaller dim."
        )


def check_rank(dim: int, n_rows: int, method: str) -> None:
    if dim >= n_rows:
        raise SimreduceError(
            f"encoder.dim={dim} is not below the {n_rows} training words, so {method} has no {dim} components: "
            "pick a smaller dim or add words."
        )


def set_linear(layer: nn.Linear, weight: np.ndarray, bias: np.ndarray | None = None) -> None:
    """Copy a fitted [out, in] weight (and [out] bias) into `layer`, whatever the arrays' dtype and strides."""
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
        if bias is not None:
            layer.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias)))


def cosine_svd_axes(vectors: torch.Tensor, dim: int) -> np.ndarray:
    """[N, D] vectors -> [dim, D] float64: the top right singular vectors of their L2-normalised rows
    (uncentred; classical MDS on the cosine Gram).

    They give the best rank-`dim` fit of the cosine matrix among projections of normalised vectors: the `svd`
    baseline, and where the cosine encoder and the floor start.
    """
    check_rank(dim, vectors.shape[0], "the SVD")
    return cosine_spectrum(vectors).axes[:dim].numpy()


class ClosedFormReducer(pl.LightningModule):
    """A linear map [N, D] -> [N, dim] set once by `prepare`; Lightning's fit loop never runs."""

    kind: str
    trains = False

    def __init__(self, in_dim: int, dim: int, seed: int = 0):
        super().__init__()
        check_dim(dim, in_dim)
        self.save_hyperparameters()
        self.net = nn.Linear(in_dim, dim)

    def linear_map(self, train_vectors: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """[N, D] training vectors -> (weight [dim, D], bias [dim]) of the fitted transform."""
        raise NotImplementedError

    def prepare(self, train_vectors: torch.Tensor) -> None:
        set_linear(self.net, *self.linear_map(train_vectors))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PCAReducer(ClosedFormReducer):
    """Centred PCA: `(x - mean) @ axes.T`, the axes from the [D, D] covariance (see `spectrum.py`)."""

    kind = "pca"

    def linear_map(self, train_vectors: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        check_rank(self.hparams.dim, train_vectors.shape[0], "PCA")
        mean = row_mean(train_vectors)
        axes = spectrum(train_vectors, shift=-mean).axes[: self.hparams.dim]
        return axes.numpy(), (-axes @ mean).numpy()


class SVDReducer(ClosedFormReducer):
    """Truncated SVD of normalised vectors. Applied to raw rows it only rescales each output row, which no
    cosine similarity sees, so no normalisation layer is needed."""

    kind = "svd"

    def linear_map(self, train_vectors: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return cosine_svd_axes(train_vectors, self.hparams.dim), np.zeros(self.hparams.dim)


class RandomProjectionReducer(ClosedFormReducer):
    """Gaussian random projection, seeded: the reference that learns nothing from the data."""

    kind = "random"

    def linear_map(self, train_vectors: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        projection = GaussianRandomProjection(self.hparams.dim, random_state=self.hparams.seed)
        projection.fit(train_vectors[:2].numpy())  # it draws the matrix from the input width alone
        return projection.components_, np.zeros(self.hparams.dim)
