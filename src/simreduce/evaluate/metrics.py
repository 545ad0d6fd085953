"""How well a reducer keeps cosine similarities, on the pairs of a word set.

`fit` pairs join two training words; `heldout` pairs involve at least one validation word. Up to
`max_exact_n` words every pair is scored, block by block; above it a seeded uniform sample of pairs is.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from simreduce.reducers.losses import EPS
from simreduce.reducers.spectrum import Spectrum, cosine_spectrum, row_blocks, row_mean, spectrum

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


def _exact_side(unit: torch.Tensor, is_train: torch.Tensor, name: str, block_rows: int) -> np.ndarray:
    """The cosines of every pair i < j of the set `name` among [N, w] L2-normalised rows, a block of rows at a time."""
    n = unit.shape[0]
    cols = torch.arange(n)
    found = []
    for start in range(0, n, block_rows):
        rows = torch.arange(start, min(start + block_rows, n))
        mask = (cols[None, :] > rows[:, None]) & _in_set(name, is_train[rows][:, None], is_train[None, :])
        found.append((unit[rows] @ unit.T)[mask].float())
    return torch.cat(found).numpy()


def _sampled_side(vectors: torch.Tensor, is_train: torch.Tensor, name: str, n_pairs: int, seed: int) -> np.ndarray:
    """The cosines of `n_pairs` seeded pairs of the set `name` among [N, w] rows, drawn a block at a time: two
    sets of SAMPLE_BLOCK rows drawn uniformly, and every pair between them that is in the set (i != j). The
    same seed draws the same pairs whatever the rows, so each side of a comparison is computed on its own.

    Each pair is uniform over the set's pairs, as when drawn one by one, but a block's cosines are one matrix
    product of 2 x SAMPLE_BLOCK gathered rows instead of two gathered rows per pair: at 100k x 2048 that moved
    32 GB through memory for 2M pairs and took 10 s.
    """
    n = vectors.shape[0]
    generator = torch.Generator().manual_seed(seed)
    found, count = [], 0
    while count < n_pairs:
        i = torch.randint(n, (SAMPLE_BLOCK,), generator=generator)
        j = torch.randint(n, (SAMPLE_BLOCK,), generator=generator)
        keep = (i[:, None] != j[None, :]) & _in_set(name, is_train[i][:, None], is_train[j][None, :])
        keep &= keep.flatten().cumsum(0).view_as(keep) <= n_pairs - count  # the last block only tops up
        rows_i, rows_j = (F.normalize(vectors[rows].double(), dim=1, eps=EPS) for rows in (i, j))
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
) -> dict[str, np.ndarray]:
    """[N, w] vectors -> the cosines of the `fit` and `heldout` pairs (sets without pairs left out): every pair
    up to `max_exact_n` rows, a seeded sample above, the same pairs for any vectors of N rows. One side of
    `pair_similarities`, so a job computes the original side once for all its candidates."""
    n = vectors.shape[0]
    exact = n <= max_exact_n
    if exact:
        unit = F.normalize(vectors.double(), dim=1, eps=EPS)
    is_train = torch.zeros(n, dtype=torch.bool)
    is_train[train_idx] = True
    n_train = int(is_train.sum())
    n_pairs = {
        "fit": n_train * (n_train - 1) // 2,
        "heldout": n * (n - 1) // 2 - n_train * (n_train - 1) // 2,
    }
    return {
        name: _exact_side(unit, is_train, name, block_rows)
        if exact
        else _sampled_side(vectors, is_train, name, min(n_sampled_pairs, n_pairs[name]), seed)
        for name in PAIR_SETS
        if n_pairs[name] > 0
    }


NEIGHBOURS = 10


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


def neighbour_subset(indices: torch.Tensor, max_words: int, seed: int) -> torch.Tensor:
    """`indices`, or a seeded sorted sample of `max_words` of them: neighbour metrics cost O(n^2) memory."""
    if len(indices) <= max_words:
        return indices
    pick = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))[:max_words]
    return indices[pick.sort().values]


def _nearest(unit_rows: torch.Tensor, k: int) -> torch.Tensor:
    """[n, D] L2-normalised rows -> [n, k] indices of each row's k most cosine-similar other rows."""
    sims = unit_rows @ unit_rows.T
    sims.fill_diagonal_(-torch.inf)
    return sims.topk(k, dim=1).indices


@torch.no_grad()
def neighbour_metrics(original: torch.Tensor, reduced: torch.Tensor, k: int = NEIGHBOURS) -> dict[str, float]:
    """[n, D] and [n, dim] vectors of one word set -> `knn_recall_at_<k>` (the share of each word's k nearest
    neighbours that stay among its k nearest) and `trustworthiness_at_<k>` (scikit-learn, cosine); MLflow
    does not allow `@` in metric names.

    Empty when the set has 2k words or fewer: trustworthiness is undefined there.
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
) -> dict[int, float]:
    """The search yardstick: each query row of `queries` searches all other rows of the corpus; recall@k is
    the share of its true top k (by cosine of `original` [N, D]; `truth`, when `true_neighbours` found them
    already) that the `reduced` [N, dim] rows also rank in their top k, averaged over the queries. Exact; the
    corpus is read in blocks of rows whose [queries, block] similarities hold at most `max_block` entries, so
    neither an N x N matrix nor a normalised copy of a (memory-mapped) `original` is ever made."""
    k_max = max(ks)
    if len(original) - 1 < k_max:
        return {}
    if truth is None:
        truth = true_neighbours(original, queries, k_max, max_block)
    retrieved = true_neighbours(reduced, queries, k_max, max_block)
    hits = {k: (truth[:, :k, None] == retrieved[:, None, :k]).any(dim=2).sum().item() / k for k in ks}
    return {k: hits[k] / len(queries) for k in ks}


def true_neighbours(vectors: torch.Tensor, queries: torch.Tensor, k: int, max_block: int = 2**24) -> torch.Tensor:
    """[Q, k] indices of each query row's k most cosine-similar other rows of [N, w] `vectors`, best first,
    reading blocks of rows whose [Q, block] similarities hold at most `max_block` entries."""
    return _top_k(vectors, queries, k, max(k + 1, max_block // len(queries)))


def _top_k(vectors: torch.Tensor, queries: torch.Tensor, k: int, block_rows: int) -> torch.Tensor:
    """[Q, k] indices of each query row's k most cosine-similar other rows of `vectors`, best first: the running
    top k is merged with each block's."""
    unit_queries = F.normalize(vectors[queries].float(), dim=1, eps=EPS)
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
    return best_rows


@torch.no_grad()
def eckart_young_bound(vectors: torch.Tensor, dim: int, found: Spectrum | None = None) -> float:
    """[N, D] vectors -> MSE over pairs i<j of the best rank-`dim` approximation S_d of their cosine matrix S.

    A floor for any `dim`-dimensional embedding: its cosine matrix has rank <= dim and an exact unit
    diagonal, so its off-diagonal squared error is at least ||S - S_d||_F^2, which is at least the off-diagonal
    part measured here. With X the normalised rows and P the projection on their top `dim` right singular
    vectors, S - S_d = X (I - P) X^T: the full squared error is the sum of the remaining squared eigenvalues
    (singular values to the 4th) and the diagonal's is sum_i (|x_i|^2 - |P x_i|^2)^2. Memory O(D^2), never O(N^2).
    """
    n = vectors.shape[0]
    found = cosine_spectrum(vectors) if found is None else found  # computed once for every dim by a caller
    full_error = found.singular_values[dim:].pow(4).sum()
    top = found.axes[:dim].T
    diagonal_error = sum(
        ((b.square().sum(dim=1) - (b @ top).square().sum(dim=1)) ** 2).sum() for b in row_blocks(vectors, unit=True)
    )
    return max(float(full_error - diagonal_error) / (n * (n - 1)), 0.0)


def pca_explained_variance(vectors: torch.Tensor, dim: int, found: Spectrum | None = None) -> float:
    """Share of the variance of [N, D] vectors that their top `dim` (centred) principal components keep
    (`found`: their centred spectrum, computed once for every dim)."""
    variances = (centred_spectrum(vectors) if found is None else found).singular_values.square()
    return float(variances[:dim].sum() / variances.sum())


def centred_spectrum(vectors: torch.Tensor) -> Spectrum:
    """The spectrum of [N, D] vectors less their mean: PCA's."""
    return spectrum(vectors, shift=-row_mean(vectors))
