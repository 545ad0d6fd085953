"""Classical reducers, fitted in closed form on the training words with scikit-learn's own estimators.

Each becomes an `nn.Linear(D, dim)` holding the estimator's `transform` (PCA's centring in the bias), so it
is evaluated, logged and served exactly like the trained encoders (see the protocol in `reducers.py`).
"""

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.random_projection import GaussianRandomProjection
from torch import nn

from simreduce.errors import SimreduceError


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


def fit_cosine_svd(vectors: torch.Tensor, dim: int) -> TruncatedSVD:
    """Truncated SVD of the L2-normalised rows of [N, D] `vectors` (uncentred; classical MDS on the cosine Gram).

    Its `components_` [dim, D] give the best rank-`dim` fit of the cosine matrix among projections of
    normalised vectors: the `svd` baseline, and where the cosine encoder and the floor start.
    """
    check_rank(dim, vectors.shape[0], "the SVD")
    unit_rows = F.normalize(vectors.double(), dim=1).numpy()
    return TruncatedSVD(dim, algorithm="arpack", random_state=0).fit(unit_rows)


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
    """Centred PCA: `(x - mean) @ components.T`."""

    kind = "pca"

    def linear_map(self, train_vectors: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        check_rank(self.hparams.dim, train_vectors.shape[0], "PCA")
        pca = PCA(self.hparams.dim, random_state=self.hparams.seed).fit(train_vectors.double().numpy())
        return pca.components_, -pca.components_ @ pca.mean_


class SVDReducer(ClosedFormReducer):
    """Truncated SVD of normalised vectors. Applied to raw rows it only rescales each output row, which no
    cosine similarity sees, so no normalisation layer is needed."""

    kind = "svd"

    def linear_map(self, train_vectors: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        svd = fit_cosine_svd(train_vectors, self.hparams.dim)
        return svd.components_, np.zeros(self.hparams.dim)


class RandomProjectionReducer(ClosedFormReducer):
    """Gaussian random projection, seeded: the reference that learns nothing from the data."""

    kind = "random"

    def linear_map(self, train_vectors: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        projection = GaussianRandomProjection(self.hparams.dim, random_state=self.hparams.seed)
        projection.fit(train_vectors.double().numpy())
        return projection.components_, np.zeros(self.hparams.dim)
