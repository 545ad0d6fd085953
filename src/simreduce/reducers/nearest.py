"""Exact cosine search in blocks of rows: each query row's k nearest others, without an N x N matrix.

The search yardstick (`simreduce.evaluate.neighbours`) and the neighbour-aware loss (`simreduce.reducers.losses`)
both need it; it lives with the reducers so that they do not import the evaluation stage.
"""

import torch
import torch.nn.functional as F

from simreduce.reducers.losses import EPS, Neighbours


def true_neighbours(
    vectors: torch.Tensor,
    queries: torch.Tensor,
    k: int,
    max_block: int = 2**24,
    query_vectors: torch.Tensor | None = None,
) -> Neighbours:
    """Each query row's k most cosine-similar other rows of [N, w] `vectors` ([Q, k], best first) and their
    similarities, reading blocks of rows whose [Q, block] similarities hold at most `max_block` entries; a query
    searches with its row of `query_vectors` ([N, w], default `vectors`)."""
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


@torch.no_grad()
def row_neighbours(
    vectors: torch.Tensor, k: int, reduced: torch.Tensor | None = None, chunk_rows: int = 4096
) -> Neighbours:
    """`batch_neighbours` of every row of [N, D] `vectors` (and [N, dim] `reduced`) found in blocks
    (`true_neighbours`): a full batch's, found once per fit, where an [N, N] matrix would not fit."""
    k = min(k, len(vectors) - 1)
    everyone = torch.arange(len(vectors))
    rows = true_neighbours(vectors, everyone, k).rows
    if reduced is not None:
        rows = torch.cat([rows, true_neighbours(reduced, everyone, k).rows], dim=1)
    similarities = torch.cat(
        [
            torch.einsum("cd,ckd->ck", F.normalize(part, dim=1, eps=EPS), F.normalize(vectors[found], dim=-1, eps=EPS))
            for part, found in zip(vectors.split(chunk_rows), rows.split(chunk_rows), strict=True)
        ]
    )
    return Neighbours(rows, similarities)
