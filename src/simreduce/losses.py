"""The one training objective: keep every pairwise cosine similarity as it was."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

EPS = 1e-8


def pairwise_cosine(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """[N, D] (and [M, D]) -> [N, M] cosine similarities; a zero row gives 0 instead of NaN."""
    xn = F.normalize(x, dim=-1, eps=EPS)
    yn = xn if y is None else F.normalize(y, dim=-1, eps=EPS)
    return xn @ yn.T


def similarity_mse(original: torch.Tensor, reduced: torch.Tensor) -> torch.Tensor:
    """Mean over pairs i<j of (original - reduced)^2, for two [N, N] similarity matrices with a diagonal of 1."""
    n = original.shape[0]
    if n < 2:
        raise ValueError(f"a batch of {n} vector(s) has no pairs")
    diff = original - reduced
    # The matrix is symmetric with a zero diagonal, so the full sum is twice the sum over i<j.
    off_diagonal = diff.square().sum() - diff.diagonal().square().sum()
    return off_diagonal / (n * (n - 1))


def cosine_similarity_loss(original: torch.Tensor, reduced: torch.Tensor) -> torch.Tensor:
    """Mean over pairs i<j of (S(original) - S(reduced))^2; the diagonal (always 1) is left out."""
    return similarity_mse(pairwise_cosine(original), pairwise_cosine(reduced))


def prefix_cosine_losses(original: torch.Tensor, reduced: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """[len(dims)]: `cosine_similarity_loss(original, reduced[:, :d])` for each prefix width d (ascending) of the
    [N, dim] `reduced`. The original's similarities are computed once, and each prefix's dot products and norms
    are the previous prefix's plus those of the columns it adds, so all prefixes cost one [N, N] product."""
    target = pairwise_cosine(original)
    dots = torch.zeros_like(target)
    squared_norms = torch.zeros(len(reduced), dtype=reduced.dtype, device=reduced.device)
    losses, start = [], 0
    for d in dims:
        added = reduced[:, start:d]
        dots = dots + added @ added.T
        squared_norms = squared_norms + added.square().sum(dim=1)
        inverse_norms = 1 / squared_norms.sqrt().clamp_min(EPS)  # as `F.normalize`: a zero row has cosine 0
        losses.append(similarity_mse(target, dots * inverse_norms[:, None] * inverse_norms[None, :]))
        start = d
    return torch.stack(losses)
