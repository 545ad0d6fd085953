"""The one training objective: keep every pairwise cosine similarity as it was."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

EPS = 1e-8
# `gram_is_cheaper`'s cost model
PAIRWISE_PASS = 220
FLOAT64_COST = 3.5


def pairwise_cosine(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """[N, D] (and [M, D]) -> [N, M] cosine similarities; a zero row gives 0 instead of NaN."""
    xn = F.normalize(x, dim=-1, eps=EPS)
    yn = xn if y is None else F.normalize(y, dim=-1, eps=EPS)
    return xn @ yn.T


def check_pairs(n: int) -> None:
    """A mean over pairs needs two rows."""
    if n < 2:
        raise ValueError(f"a batch of {n} vector(s) has no pairs")


def similarity_mse(original: torch.Tensor, reduced: torch.Tensor) -> torch.Tensor:
    """Mean over pairs i<j of (original - reduced)^2, for two [N, N] similarity matrices with a diagonal of 1."""
    n = original.shape[0]
    check_pairs(n)
    diff = original - reduced
    # The matrix is symmetric with a zero diagonal, so the full sum is twice the sum over i<j.
    off_diagonal = diff.square().sum() - diff.diagonal().square().sum()
    return off_diagonal / (n * (n - 1))


def cosine_similarity_loss(original: torch.Tensor, reduced: torch.Tensor) -> torch.Tensor:
    """Mean over pairs i<j of (S(original) - S(reduced))^2; the diagonal (always 1) is left out."""
    return prefix_cosine_losses(original, reduced, [reduced.shape[1]])[0]


def prefix_cosine_losses(original: torch.Tensor, reduced: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """[len(dims)]: `cosine_similarity_loss(original, reduced[:, :d])` for each prefix width d (ascending) of the
    [N, dim] `reduced`, by whichever of the two exact ways costs less for this batch (`gram_is_cheaper`), on a
    device with float64 (Apple's MPS has none)."""
    if original.device.type != "mps" and gram_is_cheaper(len(original), original.shape[1], dims):
        return gram_prefix_losses(original, reduced, dims)
    return pairwise_prefix_losses(original, reduced, dims)


def pairwise_prefix_losses(original: torch.Tensor, reduced: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """`prefix_cosine_losses` from the [N, N] similarity matrices. The original's similarities are computed once,
    and each prefix's dot products and norms are the previous prefix's plus those of the columns it adds, so all
    prefixes cost one [N, N] product (and an elementwise pass over [N, N] each)."""
    target = pairwise_cosine(original)
    dots = torch.zeros_like(target)
    squared_norms = torch.zeros(len(reduced), dtype=reduced.dtype, device=reduced.device)
    losses, start = [], 0
    for d in dims:
        added = reduced[:, start:d]
        dots = dots + added @ added.T
        squared_norms = squared_norms + added.square().sum(dim=1)
        inverse_norms = squared_norms.clamp_min(EPS**2).rsqrt()  # as `F.normalize`: a zero row has cosine 0
        losses.append(similarity_mse(target, dots * inverse_norms[:, None] * inverse_norms[None, :]))
        start = d
    return torch.stack(losses)


def gram_prefix_losses(original: torch.Tensor, reduced: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """`prefix_cosine_losses` without any [N, N] matrix: with X and Z the row-normalised [N, D] original and
    [N, d] prefix, the sum over all pairs of (X X^T - Z Z^T)^2 is |X^T X|^2 - 2 |X^T Z|^2 + |Z^T Z|^2, products
    of width D and d; the diagonal is taken off as `similarity_mse` does. Time and memory grow with N, not N^2.

    In float64: the three terms are each about N^2 times the mean squared similarity and the loss of a wide
    reduction can be a millionth of that, a difference float32's rounding of the terms would visibly distort."""
    check_pairs(len(original))
    x = F.normalize(original.double(), dim=-1, eps=EPS)
    x_total = (x.T @ x).square().sum()
    x_diagonal = x.square().sum(dim=1)
    losses = []
    for d in dims:
        z = F.normalize(reduced[:, :d].double(), dim=-1, eps=EPS)
        total = x_total - 2 * (x.T @ z).square().sum() + (z.T @ z).square().sum()
        diagonal = (x_diagonal - z.square().sum(dim=1)).square().sum()
        losses.append(total - diagonal)
    return (torch.stack(losses) / (len(x) * (len(x) - 1))).to(reduced.dtype)


def gram_is_cheaper(n: int, width: int, dims: Sequence[int]) -> bool:
    """Whether `gram_prefix_losses` costs less than `pairwise_prefix_losses` for `n` rows of `width` features.

    A model of CPU time, forward and backward, fitted to `bench/loss_cost.py`'s timings, in float32 multiply-adds:
    the pairwise way's two [N, N] products plus ~PAIRWISE_PASS per [N, N] entry and prefix for its elementwise
    passes; the Gram products at FLOAT64_COST each (float64, and `x.T @ x` without gradient). At D = 384 the Gram
    way wins from ~700 rows.
    """
    pairwise = n * n * (width + dims[-1] + PAIRWISE_PASS * len(dims))
    gram = FLOAT64_COST * n * (width * width / 3 + width * sum(dims) + sum(d * d for d in dims))
    return gram < pairwise
