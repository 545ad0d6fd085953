"""The training objectives: keep every pairwise cosine similarity as it was (`pairs`, the study's), and that plus
each row's nearest neighbours' similarities weighted up (`neighbours`)."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from simreduce.runtime.checks import is_positive_int
from simreduce.runtime.errors import SimreduceError

EPS = 1e-8
# `gram_is_cheaper`'s cost model
PAIRWISE_PASS = 220
FLOAT64_COST = 3.5
LOSSES = ("pairs", "neighbours", "listwise")  # `encoder.loss`
NEIGHBOUR_CHUNK_ROWS = 4096  # rows whose [rows, k, width] neighbour products one chunk holds


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


@dataclass(frozen=True)
class Neighbours:
    """Pairs the neighbour term keeps, K per row of a batch (its nearest others: see `batch_neighbours`): `rows`
    [N, K] indices and `similarities` [N, K] their original cosines, the targets."""

    rows: torch.Tensor
    similarities: torch.Tensor

    def to(self, device: torch.device) -> "Neighbours":
        return Neighbours(self.rows.to(device), self.similarities.to(device))


def batch_neighbours(original: torch.Tensor, k: int, reduced: torch.Tensor | None = None) -> Neighbours:
    """The `Neighbours` of the [N, D] rows of a mini-batch from its [N, N] similarities (a row is never its own
    neighbour; k is cut to N - 1): each row's k nearest by original cosine and, given the [N, dim] `reduced` rows,
    also its k nearest by their cosine (the rows a search of the reduced vectors would return), each pair's target
    its original cosine. A full batch of many rows finds them in blocks instead (`nearest.row_neighbours`)."""
    check_pairs(len(original))
    k = min(k, len(original) - 1)
    with torch.no_grad():
        similarities = pairwise_cosine(original)
        similarities.fill_diagonal_(-torch.inf)
        rows = similarities.topk(k, dim=1).indices
        if reduced is not None:
            searched = pairwise_cosine(reduced)
            searched.fill_diagonal_(-torch.inf)
            rows = torch.cat([rows, searched.topk(k, dim=1).indices], dim=1)
        return Neighbours(rows, similarities.gather(1, rows))


def neighbour_prefix_losses(
    reduced: torch.Tensor, neighbours: Neighbours, dims: Sequence[int], temperature: float | None = None
) -> torch.Tensor:
    """[len(dims)]: for each prefix width d of the [N, dim] `reduced` (z, its first d values), over each row i's K
    `neighbours` j, the mean over rows of
    - `temperature=None`: the mean of (cos(x_i, x_j) - cos(z_i, z_j))^2 over j, the pair loss restricted to the pairs
      a search returns or should return;
    - a temperature t: KL(softmax_j(cos(x_i, x_j) / t) || softmax_j(cos(z_i, z_j) / t)), which only the order and
      spacing of a row's similarities change, not a shift of them all (listwise).
    O(N K dim) time; memory bounded by `NEIGHBOUR_CHUNK_ROWS` (each chunk's products are recomputed in backward)."""
    errors = sum(
        checkpoint(_neighbour_errors, reduced, own, neighbours, dims, temperature, use_reentrant=False)
        if reduced.requires_grad
        else _neighbour_errors(reduced, own, neighbours, dims, temperature)
        for own in torch.arange(len(reduced), device=reduced.device).split(NEIGHBOUR_CHUNK_ROWS)
    )
    return errors / (neighbours.rows.numel() if temperature is None else len(neighbours.rows))


def _neighbour_errors(
    reduced: torch.Tensor, own: torch.Tensor, neighbours: Neighbours, dims: Sequence[int], temperature: float | None
) -> torch.Tensor:
    """[len(dims)] sums over the rows `own` [c] (and their neighbours) of `neighbour_prefix_losses`' errors, each
    prefix's dot products and squared norms read off running sums over the output's columns."""
    mine, theirs = reduced[own], reduced[neighbours.rows[own]]  # [c, w], [c, K, w]
    dots = (mine[:, None, :] * theirs).cumsum(dim=-1)
    last = [d - 1 for d in dims]
    inverse_norms = (
        mine.square().cumsum(dim=-1)[:, None, last].clamp_min(EPS**2).rsqrt()
        * theirs.square().cumsum(dim=-1)[..., last].clamp_min(EPS**2).rsqrt()
    )  # as `F.normalize`: a zero row has cosine 0
    kept = dots[..., last] * inverse_norms  # [c, K, len(dims)]
    targets = neighbours.similarities[own].to(kept.dtype)[..., None]
    if temperature is None:
        return (targets - kept).square().sum(dim=(0, 1))
    wanted = F.log_softmax(targets / temperature, dim=1)
    found = F.log_softmax(kept / temperature, dim=1)
    return (wanted.exp() * (wanted - found)).sum(dim=(0, 1))


def check_objective(loss: str, neighbours_k: int, neighbours_weight: float, temperature: float) -> None:
    """Refuse an unknown `encoder.loss`, a neighbour count that is not a positive integer, a negative weight or a
    temperature that is not positive."""
    if loss not in LOSSES:
        raise SimreduceError(f"encoder.loss={loss!r} is not one of {LOSSES}.")
    if not is_positive_int(neighbours_k):
        raise SimreduceError(f"encoder.neighbours_k={neighbours_k!r} must be a positive integer, e.g. 10.")
    if not (isinstance(neighbours_weight, int | float) and neighbours_weight >= 0):
        raise SimreduceError(f"encoder.neighbours_weight={neighbours_weight!r} must be a number of at least 0, e.g. 1.")
    if not (isinstance(temperature, int | float) and temperature > 0):
        raise SimreduceError(f"encoder.temperature={temperature!r} must be a positive number, e.g. 0.05.")
