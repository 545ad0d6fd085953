"""Whether a reducer keeps each row's nearest neighbours: kNN recall and trustworthiness within a row set,
and recall@k of exact cosine search over the whole corpus.

Both recalls count only the rows whose true top k is determined: where the k-th and the (k+1)-th similarity tie
(copies of one row, most often), which of the tied rows are "the" top k is a matter of index order, and so is
whether a search finds them; such rows are left out, and a recall with none left is NaN (never a winner).
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F

from simreduce.reducers.losses import EPS

NEIGHBOURS = 10
TIE = 1e-6  # cosines closer than this are one value: float32 rounding of copies' products, not content


class Neighbours(NamedTuple):
    """Each row's nearest rows [n, k], best first, and their cosine similarities [n, k]."""

    rows: torch.Tensor
    sims: torch.Tensor


def kept_share(truth: Neighbours, found: torch.Tensor, k: int) -> float:
    """The share of each row's true top k among the first k of `found` [n, >= k], over the rows whose true top k is
    determined: `truth` holds k + 1 neighbours to tell (k when there are no more rows: then all are). NaN when no
    row's is."""
    determined = torch.ones(len(truth.rows), dtype=torch.bool)
    if truth.sims.shape[1] > k:
        determined = truth.sims[:, k - 1] - truth.sims[:, k] > TIE
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


def true_neighbours(
    vectors: torch.Tensor,
    queries: torch.Tensor,
    k: int,
    max_block: int = 2**24,
    query_vectors: torch.Tensor | None = None,
) -> Neighbours:
    """Each query row's k most cosine-similar other rows of [N, w] `vectors` ([Q, k], best first), reading blocks
    of rows whose [Q, block] similarities hold at most `max_block` entries; a query searches with its row of
    `query_vectors` ([N, w], default `vectors`)."""
    searched = vectors if query_vectors is None else query_vectors
    return _top_k(vectors, searched[queries], queries, k, max(k + 1, max_block // len(queries)))


def _top_k(
    vectors: torch.Tensor, query_rows: torch.Tensor, queries: torch.Tensor, k: int, block_rows: int
) -> Neighbours:
    """The k rows of `vectors` most cosine-similar to each of the [Q, w] `query_rows` (the rows `queries` excluded
    from their own results), best first: the running top k is merged with each block's."""
    unit_queries = F.normalize(query_rows.float(), dim=1, eps=EPS)
    best_sims = torch.full((len(queries), 0), -torch.inf)
    best_rows = torch.empty((len(queries), 0), dtype=torch.long)
    for start in range(0, len(vectors), block_rows):
        block = F.normalize(vectors[start : start + block_rows].float(), dim=1, eps=EPS)
        rows = torch.arange(start, start + len(block))
        sims = unit_queries @ block.T
        sims[queries[:, None] == rows[None, :]] = -torch.inf  # a query is not its own neighbour
        sims, picked = torch.cat([best_sims, sims], dim=1), torch.cat([best_rows, rows.expand(len(queries), -1)], dim=1)
        best_sims, top = sims.topk(min(k, sims.shape[1]), dim=1)
        best_rows = picked.gather(1, top)
    return Neighbours(best_rows, best_sims)
