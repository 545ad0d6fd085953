"""Whitened coordinates for the encoder's first layer: the same map, moved by the optimiser along directions of
equal scale, so that the cosine loss is as well conditioned as it can be."""

import torch
from torch import nn

from simreduce.reducers.spectrum import Spectrum


def whitening_basis(found: Spectrum, n_rows: int, rtol: float = 1e-6) -> torch.Tensor:
    """The `cosine_spectrum` of [N, D] vectors -> [r, D]: its axes, each divided by its singular value and
    multiplied by sqrt(N), for the r singular values above `rtol` times the largest (near-dead input features
    drop out).

    `normalize(x) @ basis.T` are whitened coordinates: over the training words every direction they span has
    unit mean square.
    """
    keep = found.singular_values > rtol * found.singular_values[0]
    return (found.axes[keep] * (n_rows**0.5 / found.singular_values[keep, None])).float()


class WhitenedInput(nn.Module):
    """Parametrises a first-layer weight [out, D] as coords [out, r] @ basis [r, D] (see `whitening_basis`).

    The map is the same; only the coordinates the optimiser moves change. In raw coordinates the loss is
    as ill-conditioned as the input's spectrum, and L-BFGS from the PCA start stalls above the floor at large
    dims; in whitened ones (every direction of the training rows has unit mean square) it reaches the floor.
    """

    def __init__(self, basis: torch.Tensor):
        super().__init__()
        self.register_buffer("basis", basis)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return coords @ self.basis

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return weight @ torch.linalg.pinv(self.basis)
