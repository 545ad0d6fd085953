"""Whether a reducer keeps each row's nearest neighbours: kNN recall and trustworthiness within a row set,
and recall@k of exact cosine search over the whole corpus (its search: `simreduce.reducers.nearest`)."""

import torch
import torch.nn.functional as F

from simreduce.reducers.losses import EPS
from simreduce.reducers.nearest import true_neighbours

NEIGHBOURS = 10


def neighbour_subset(indices: torch.Tensor, max_rows: int, seed: int) -> torch.Tensor:
    """`indices`, or a seeded sorted sample of `max_rows` of them: neighbour metrics cost O(n^2) memory."""
    if len(indices) <= max_rows:
        return indices
    pick = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))[:max_rows]
    return indices[pick.sort().values]


def _nearest(unit_rows: torch.Tensor, k: int) -> torch.Tensor:
    """[n, D] L2-normalised rows -> [n, k] indices of each row's k most cosine-similar other rows."""
    sims = unit_rows @ unit_rows.T
    sims.fill_diagonal_(-torch.inf)
    return sims.topk(k, dim=1).indices


@torch.no_grad()
def neighbour_metrics(original: torch.Tensor, reduced: torch.Tensor, k: int = NEIGHBOURS) -> dict[str, float]:
    """[n, D] and [n, dim] vectors of one row set -> `knn_recall_at_<k>` (the share of each row's k nearest
    neighbours that stay among its k nearest) and `trustworthiness_at_<k>` (scikit-learn, cosine); MLflow
    does not allow `@` in metric names.

    Empty when the set has 2k rows or fewer: trustworthiness is undefined there.
    """
    from sklearn.manifold import trustworthiness

    n = original.shape[0]
    if n <= 2 * k:
        return {}
    xo, xr = (F.normalize(x.double(), dim=1, eps=EPS) for x in (original, reduced))
    before, after = _nearest(xo, k), _nearest(xr, k)
    kept = (before[:, :, None] == after[:, None, :]).any(dim=2).double().mean()
    # scikit-learn ranks the embedded space by euclidean distance, which on unit rows ranks as cosine does.
    trust = trustworthiness(xo.numpy(), xr.numpy(), n_neighbors=k, metric="cosine")
    return {f"knn_recall_at_{k}": float(kept), f"trustworthiness_at_{k}": float(trust)}


@torch.no_grad()
def retrieval_recall(
    original: torch.Tensor,
    reduced: torch.Tensor,
    queries: torch.Tensor,
    ks: list[int],
    max_block: int = 2**24,
    truth: torch.Tensor | None = None,
    query_vectors: torch.Tensor | None = None,
) -> dict[int, float]:
    """The search yardstick: each query row of `queries` searches all other rows of the corpus; recall@k is
    the share of its true top k (by cosine of `original` [N, D]; `truth`, when `true_neighbours` found them
    already) that the `reduced` [N, dim] rows also rank in their top k, averaged over the queries. Exact; the
    corpus is read in blocks of rows whose [queries, block] similarities hold at most `max_block` entries, so
    neither an N x N matrix nor a normalised copy of a (memory-mapped) `original` is ever made.

    `query_vectors`: [N, dim] rows a query searches with instead of its own `reduced` row (float queries: the
    query reduced but not stored, against the stored corpus)."""
    k_max = max(ks)
    if len(original) - 1 < k_max:
        return {}
    if truth is None:
        truth = true_neighbours(original, queries, k_max, max_block)
    retrieved = true_neighbours(reduced, queries, k_max, max_block, query_vectors)
    hits = {k: (truth[:, :k, None] == retrieved[:, None, :k]).any(dim=2).sum().item() / k for k in ks}
    return {k: hits[k] / len(queries) for k in ks}
