"""Whether a reducer keeps each row's nearest neighbours: kNN recall and trustworthiness within a row set,
and recall@k of exact cosine search over the whole corpus (its search: `simreduce.reducers.nearest`).

Both recalls count only the rows whose true top k is determined: where the k-th and the (k+1)-th similarity tie
(copies of one row, most often), which of the tied rows are "the" top k is a matter of index order, and so is
whether a search finds them; such rows are left out, and a recall with none left is NaN (never a winner).
"""

import torch
import torch.nn.functional as F

from simreduce.reducers.losses import EPS, Neighbours
from simreduce.reducers.nearest import true_neighbours

NEIGHBOURS = 10
TIE = 1e-6  # cosines closer than this are one value: float32 rounding of copies' products, not content


def kept_share(truth: Neighbours, found: torch.Tensor, k: int) -> float:
    """The share of each row's true top k among the first k of `found` [n, >= k], over the rows whose true top k is
    determined: `truth` holds k + 1 neighbours to tell (k when there are no more rows: then all are). NaN when no
    row's is."""
    determined = torch.ones(len(truth.rows), dtype=torch.bool)
    if truth.similarities.shape[1] > k:
        determined = truth.similarities[:, k - 1] - truth.similarities[:, k] > TIE
    if not determined.any():
        return float("nan")
    hits = (truth.rows[determined, :k, None] == found[determined, None, :k]).any(dim=2)
    return float(hits.double().mean())


def neighbour_subset(indices: torch.Tensor, max_rows: int, seed: int) -> torch.Tensor:
    """`indices`, or a seeded sorted sample of `max_rows` of them: neighbour metrics cost O(n^2) memory."""
    if len(indices) <= max_rows:
        return indices
    pick = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))[:max_rows]
    return indices[pick.sort().values]


def _nearest(unit_rows: torch.Tensor, k: int) -> Neighbours:
    """[n, D] L2-normalised rows -> each row's k most cosine-similar other rows."""
    sims = unit_rows @ unit_rows.T
    sims.fill_diagonal_(-torch.inf)
    top = sims.topk(k, dim=1)
    return Neighbours(top.indices, top.values)


@torch.no_grad()
def neighbour_metrics(original: torch.Tensor, reduced: torch.Tensor, k: int = NEIGHBOURS) -> dict[str, float]:
    """[n, D] and [n, dim] vectors of one row set -> `knn_recall_at_<k>` (the share of each row's k nearest
    neighbours that stay among its k nearest, over the rows whose k nearest are determined) and
    `trustworthiness_at_<k>` (scikit-learn, cosine); MLflow does not allow `@` in metric names.

    Empty when the set has 2k rows or fewer: trustworthiness is undefined there.
    """
    from sklearn.manifold import trustworthiness

    n = original.shape[0]
    if n <= 2 * k:
        return {}
    xo, xr = (F.normalize(x.double(), dim=1, eps=EPS) for x in (original, reduced))
    kept = kept_share(_nearest(xo, k + 1), _nearest(xr, k).rows, k)
    # scikit-learn ranks the embedded space by euclidean distance, which on unit rows ranks as cosine does.
    trust = trustworthiness(xo.numpy(), xr.numpy(), n_neighbors=k, metric="cosine")
    return {f"knn_recall_at_{k}": kept, f"trustworthiness_at_{k}": float(trust)}


@torch.no_grad()
def retrieval_recall(
    original: torch.Tensor,
    reduced: torch.Tensor,
    queries: torch.Tensor,
    ks: list[int],
    max_block: int = 2**24,
    truth: Neighbours | None = None,
    query_vectors: torch.Tensor | None = None,
) -> dict[int, float]:
    """The search yardstick: each query row of `queries` searches all other rows of the corpus; recall@k is
    the share of its true top k (by cosine of `original` [N, D]; `truth`, its top max(ks) + 1 when
    `true_neighbours` found them already) that the `reduced` [N, dim] rows also rank in their top k, averaged over
    the queries whose true top k is determined (see `kept_share`). Exact; the corpus is read in blocks of rows
    whose [queries, block] similarities hold at most `max_block` entries, so neither an N x N matrix nor a
    normalised copy of a (memory-mapped) `original` is ever made.

    `query_vectors`: [N, dim] rows a query searches with instead of its own `reduced` row (float queries: the
    query reduced but not stored, against the stored corpus)."""
    k_max = max(ks)
    if len(original) - 1 < k_max:
        return {}
    if truth is None:
        truth = true_neighbours(original, queries, k_max + 1, max_block)
    retrieved = true_neighbours(reduced, queries, k_max, max_block, query_vectors).rows
    return {k: kept_share(truth, retrieved, k) for k in ks}
