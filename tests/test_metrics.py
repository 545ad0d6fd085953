import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from simreduce.evaluate.bounds import eckart_young_bound, pca_explained_variance
from simreduce.evaluate.neighbours import neighbour_metrics, neighbour_subset, retrieval_recall
from simreduce.evaluate.pairs import pair_similarities, similarity_spearman


def explicit_rank_d_mse(x: torch.Tensor, dim: int) -> float:
    """Build the N x N cosine matrix, keep its top `dim` eigenpairs, and score the pairs i<j."""
    unit = F.normalize(x.double(), dim=1)
    cosine = unit @ unit.T
    values, vectors = torch.linalg.eigh(cosine)
    top = vectors[:, -dim:]
    approx = top @ torch.diag(values[-dim:]) @ top.T
    i, j = torch.triu_indices(len(x), len(x), offset=1)
    return float(((cosine - approx)[i, j] ** 2).mean())


@pytest.mark.parametrize("dim", [1, 3, 5])
def test_bound_ey_is_the_mse_of_an_explicit_rank_d_reconstruction(dim):
    x = torch.randn(14, 6, generator=torch.Generator().manual_seed(dim))
    expected = explicit_rank_d_mse(x, dim)
    assert expected > 1e-4
    assert eckart_young_bound(x, dim) == pytest.approx(expected, rel=1e-9)


def test_bound_ey_is_zero_at_full_rank():
    x = torch.randn(14, 6)
    assert eckart_young_bound(x, 6) == 0.0
    assert eckart_young_bound(x, 9) == 0.0
    assert eckart_young_bound(x, 5) > 0


def test_bound_ey_is_below_a_real_embedding_error():
    x = torch.randn(40, 10)
    reduced = x[:, :3]
    diff = pair_similarities(x, reduced, torch.arange(40))["fit"].diff
    assert np.mean(diff.astype(np.float64) ** 2) >= eckart_young_bound(x, 3)


def test_identity_reducer_keeps_order_and_neighbours():
    x = torch.randn(30, 8)
    pairs = pair_similarities(x, x.clone(), torch.arange(30))["fit"]
    assert similarity_spearman(pairs) == pytest.approx(1.0)
    assert neighbour_metrics(x, x.clone()) == {"knn_recall_at_10": 1.0, "trustworthiness_at_10": pytest.approx(1.0)}


def test_neighbour_metrics_are_scale_free_and_drop_with_a_bad_reducer():
    x = torch.randn(60, 16)
    scaled = x * torch.rand(60, 1).add(0.5)  # cosine neighbours ignore each row's length
    assert neighbour_metrics(x, scaled)["knn_recall_at_10"] == 1.0
    bad = neighbour_metrics(x, torch.randn(60, 2))
    assert bad["knn_recall_at_10"] < 0.5 and bad["trustworthiness_at_10"] < 0.8


def test_small_word_sets_have_no_neighbour_metrics():
    x = torch.randn(20, 4)
    assert neighbour_metrics(x, x) == {}


def test_neighbour_subset_is_seeded_and_bounded():
    idx = torch.arange(0, 100, 2)
    assert torch.equal(neighbour_subset(idx, 100, seed=0), idx)
    picked = neighbour_subset(idx, 10, seed=0)
    assert len(picked) == 10 and set(picked.tolist()) <= set(idx.tolist())
    assert torch.equal(picked, neighbour_subset(idx, 10, seed=0))
    assert torch.equal(picked, picked.sort().values)


def test_pca_explained_variance_grows_to_one():
    x = torch.randn(50, 8)
    shares = [pca_explained_variance(x, d) for d in (1, 4, 8, 20)]
    assert shares == sorted(shares)
    assert 0 < shares[0] < 1 and shares[-1] == pytest.approx(1.0)


def clustered(n_clusters: int = 8, per_cluster: int = 12, d: int = 16, seed: int = 0) -> torch.Tensor:
    """Rows in tight clusters around random unit centres: each row's nearest neighbours are its cluster."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(n_clusters, d, generator=g), dim=1)
    return centres.repeat_interleave(per_cluster, 0) + 0.01 * torch.randn(n_clusters * per_cluster, d, generator=g)


def test_retrieval_recall_finds_a_kept_neighbour_structure_and_loses_a_broken_one():
    x = clustered()
    queries = torch.arange(0, len(x), 5)
    assert retrieval_recall(x, 3.0 * x, queries, [1, 5, 11]) == {1: 1.0, 5: 1.0, 11: 1.0}  # scale: same cosines
    # Each row keeps only its cluster's centre direction: the 11 others of its cluster stay its top 11.
    centres_only = x.clone()
    centres_only[:, 8:] = 0
    assert retrieval_recall(x, centres_only, queries, [11])[11] == pytest.approx(1.0, abs=0.05)
    shuffled = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(1))]
    assert retrieval_recall(x, shuffled, queries, [11])[11] < 0.3


def test_retrieval_recall_is_the_same_in_any_block_size_and_never_counts_the_query_itself():
    x, reduced = clustered(), clustered()[:, :3]
    queries = torch.arange(len(clustered()))
    whole = retrieval_recall(x, reduced, queries, [1, 10])
    assert retrieval_recall(x, reduced, queries, [1, 10], max_block=len(x)) == pytest.approx(whole)  # 1 per block
    duplicate = torch.cat([x[:1], x])  # row 0 and row 1 are the same vector: each is the other's nearest
    assert retrieval_recall(duplicate, duplicate, torch.tensor([0]), [1]) == {1: 1.0}
    assert retrieval_recall(x[:5], x[:5], torch.arange(5), [10]) == {}  # fewer other rows than k


@pytest.mark.parametrize("levels", [None, 5])  # continuous similarities, and few values with many ties (binary)
def test_spearman_from_ranks_computed_once_is_scipys(levels):
    from scipy.stats import spearmanr

    from simreduce.evaluate.pairs import PairSimilarities, similarity_ranks

    rng = np.random.default_rng(0)
    original = rng.normal(size=5000).astype(np.float32)
    reduced = original + rng.normal(scale=0.5, size=5000).astype(np.float32)
    if levels:
        reduced = np.round(reduced * levels / 4) / levels
    pairs = PairSimilarities(original, reduced, sampled=False)
    expected = spearmanr(original, reduced).statistic
    assert similarity_spearman(pairs) == pytest.approx(expected, rel=1e-12)
    assert similarity_spearman(pairs, similarity_ranks(original)) == pytest.approx(expected, rel=1e-12)


def copies(distinct: torch.Tensor, n_copies: int) -> torch.Tensor:
    """Each row of `distinct` `n_copies` times, the copies spread through the rows (not side by side)."""
    return distinct.repeat(n_copies, 1)


def test_recall_of_a_few_rows_copied_many_times_is_nan_not_an_artefact_of_ties():
    """3 distinct rows x 100 copies: every row's 10 nearest are 10 of its 99 copies, which 10 being row order."""
    x = copies(torch.randn(3, 16, generator=torch.Generator().manual_seed(0)), 100)
    reduced = x[:, :4]
    recall = retrieval_recall(x, reduced, torch.arange(0, 300, 7), [1, 10])
    assert math.isnan(recall[1]) and math.isnan(recall[10])
    assert math.isnan(neighbour_metrics(x[:60], reduced[:60])["knn_recall_at_10"])


def test_with_some_rows_copied_recall_counts_the_queries_whose_top_k_is_determined_whatever_the_row_order():
    x = clustered()  # 96 rows
    x = torch.cat([x, x[:1].repeat(15, 1)])  # row 0 and 15 copies: their 10 nearest are tied copies
    reduced = x[:, :6]
    queries = torch.arange(len(x))
    copied = torch.tensor([0, *range(96, 111)])
    others = queries[~torch.isin(queries, copied)]
    recall = retrieval_recall(x, reduced, queries, [10])[10]
    assert recall == retrieval_recall(x, reduced, others, [10])[10]  # the copies' queries are left out
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(3))
    assert retrieval_recall(x[order], reduced[order], queries, [10])[10] == pytest.approx(recall)
    assert neighbour_metrics(x, reduced)["knn_recall_at_10"] == pytest.approx(
        neighbour_metrics(x[order], reduced[order])["knn_recall_at_10"]
    )
