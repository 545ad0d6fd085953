"""Cosine similarities of the same word pairs before and after reduction, and how far they moved.

`fit` pairs join two training words; `heldout` pairs involve at least one validation word. Up to
`max_exact_n` words every pair is scored, block by block; above it a seeded uniform sample of pairs is.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from simreduce.reducers.losses import EPS

PAIR_SETS = ("fit", "heldout")
SAMPLE_BLOCK = 256  # sampled pairs come in blocks of up to SAMPLE_BLOCK^2 (see _sampled_side)


@dataclass
class PairSimilarities:
    """Cosine similarities of the same word pairs before and after reduction, [P] each."""

    original: np.ndarray
    reduced: np.ndarray
    sampled: bool

    @property
    def diff(self) -> np.ndarray:
        return self.original - self.reduced

    def __len__(self) -> int:
        return len(self.original)


def difference_stats(diff: np.ndarray) -> dict[str, float]:
    """The study's yardstick: a good reducer's differences are centred on 0 and narrow."""
    d = diff.astype(np.float64)
    p01, p99 = np.percentile(d, [1, 99])
    return {
        "diff_mean": float(d.mean()),
        "diff_var": float(d.var()),
        "diff_std": float(d.std()),
        "rmse": float(np.sqrt(np.mean(d**2))),
        "mae": float(np.abs(d).mean()),
        "max_abs": float(np.abs(d).max()),
        "p01": float(p01),
        "p99": float(p99),
    }


def _in_set(name: str, is_train_i: torch.Tensor, is_train_j: torch.Tensor) -> torch.Tensor:
    both_train = is_train_i & is_train_j
    return both_train if name == "fit" else ~both_train


def _exact_side(
    unit: torch.Tensor, unit_queries: torch.Tensor, is_train: torch.Tensor, name: str, block_rows: int
) -> np.ndarray:
    """The cosines of every pair i < j of the set `name`, row i of [N, w] L2-normalised `unit_queries` against row
    j of `unit` (the same tensor but for float queries), a block of rows at a time."""
    n = unit.shape[0]
    cols = torch.arange(n)
    found = []
    for start in range(0, n, block_rows):
        rows = torch.arange(start, min(start + block_rows, n))
        mask = (cols[None, :] > rows[:, None]) & _in_set(name, is_train[rows][:, None], is_train[None, :])
        found.append((unit_queries[rows] @ unit.T)[mask].float())
    return torch.cat(found).numpy()


def _sampled_side(
    vectors: torch.Tensor, queries: torch.Tensor, is_train: torch.Tensor, name: str, n_pairs: int, seed: int
) -> np.ndarray:
    """The cosines of `n_pairs` seeded pairs (i, j) of the set `name`, row i of [N, w] `queries` (`vectors` but
    for float queries) against row j of `vectors`, drawn a block at a time: two
    sets of SAMPLE_BLOCK rows drawn uniformly, and every pair between them that is in the set (i != j). The
    same seed draws the same pairs whatever the rows, so each side of a comparison is computed on its own.

    Each pair is uniform over the set's pairs, as when drawn one by one, but a block's cosines are one matrix
    product of 2 x SAMPLE_BLOCK gathered rows instead of two gathered rows per pair: each gathered row serves up
    to SAMPLE_BLOCK pairs, so the rows moved through memory grow with the number of blocks, not of pairs.
    """
    n = vectors.shape[0]
    generator = torch.Generator().manual_seed(seed)
    found, count = [], 0
    while count < n_pairs:
        i = torch.randint(n, (SAMPLE_BLOCK,), generator=generator)
        j = torch.randint(n, (SAMPLE_BLOCK,), generator=generator)
        keep = (i[:, None] != j[None, :]) & _in_set(name, is_train[i][:, None], is_train[j][None, :])
        keep &= keep.flatten().cumsum(0).view_as(keep) <= n_pairs - count  # the last block only tops up
        rows_i, rows_j = (F.normalize(x[rows].double(), dim=1, eps=EPS) for x, rows in ((queries, i), (vectors, j)))
        found.append((rows_i @ rows_j.T)[keep].float())
        count += int(keep.sum())
    return torch.cat(found).numpy()


@torch.no_grad()
def pair_similarities(
    original: torch.Tensor,
    reduced: torch.Tensor,
    train_idx: torch.Tensor,
    max_exact_n: int = 8192,
    n_sampled_pairs: int = 1_000_000,
    seed: int = 0,
    block_rows: int = 256,
) -> dict[str, PairSimilarities]:
    """[N, D] original and [N, dim] reduced vectors -> similarities of the `fit` and `heldout` pairs.

    Sets with no pairs (no validation words, say) are left out. Memory is bounded by the pair count
    (`max_exact_n`² / 2 or `n_sampled_pairs`) and by [`block_rows`, N] or [SAMPLE_BLOCK, D] work tensors,
    never by N² or a float64 copy of a large `original`.
    """
    sides = [
        side_similarities(x, train_idx, max_exact_n, n_sampled_pairs, seed, block_rows) for x in (original, reduced)
    ]
    return pair_sets(*sides, sampled=len(original) > max_exact_n)


def pair_sets(
    original: dict[str, np.ndarray], reduced: dict[str, np.ndarray], sampled: bool
) -> dict[str, PairSimilarities]:
    """Each pair set's similarities on both sides (from `side_similarities` with the same settings) joined."""
    return {name: PairSimilarities(original[name], reduced[name], sampled) for name in original}


@torch.no_grad()
def side_similarities(
    vectors: torch.Tensor,
    train_idx: torch.Tensor,
    max_exact_n: int = 8192,
    n_sampled_pairs: int = 1_000_000,
    seed: int = 0,
    block_rows: int = 256,
    queries: torch.Tensor | None = None,
) -> dict[str, np.ndarray]:
    """[N, w] vectors -> the cosines of the `fit` and `heldout` pairs (sets without pairs left out): every pair
    up to `max_exact_n` rows, a seeded sample above, the same pairs for any vectors of N rows. One side of
    `pair_similarities`, so a job computes the original side once for all its candidates.

    `queries`: [N, w] rows that take the first place i of each pair i < j instead of `vectors`' own (float
    queries: a search compares the query as reduced, not stored, with each stored vector), default `vectors`."""
    n = vectors.shape[0]
    exact = n <= max_exact_n
    queries = vectors if queries is None else queries
    if exact:
        unit = F.normalize(vectors.double(), dim=1, eps=EPS)
        unit_queries = unit if queries is vectors else F.normalize(queries.double(), dim=1, eps=EPS)
    is_train = torch.zeros(n, dtype=torch.bool)
    is_train[train_idx] = True
    n_train = int(is_train.sum())
    n_pairs = {
        "fit": n_train * (n_train - 1) // 2,
        "heldout": n * (n - 1) // 2 - n_train * (n_train - 1) // 2,
    }
    return {
        name: _exact_side(unit, unit_queries, is_train, name, block_rows)
        if exact
        else _sampled_side(vectors, queries, is_train, name, min(n_sampled_pairs, n_pairs[name]), seed)
        for name in PAIR_SETS
        if n_pairs[name] > 0
    }


def similarity_spearman(pairs: PairSimilarities, original_ranks: np.ndarray | None = None) -> float:
    """Rank correlation of original and reduced similarities: 1 when the reducer keeps their order. Spearman's
    rho as scipy's `spearmanr` computes it, the Pearson correlation of average ranks; `original_ranks`, the
    original side's (`similarity_ranks`), when a job ranked them once for all its candidates: ranking 27M
    pairs (8,192 words) takes seconds a side."""
    if original_ranks is None:
        original_ranks = similarity_ranks(pairs.original)
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN, as spearmanr's, when a side is constant
        return float(np.corrcoef(original_ranks, similarity_ranks(pairs.reduced))[0, 1])


def similarity_ranks(similarities: np.ndarray) -> np.ndarray:
    """Ranks 1..P of [P] similarities, ties sharing their average rank (scipy's `rankdata`)."""
    from scipy.stats import rankdata

    return rankdata(similarities)
