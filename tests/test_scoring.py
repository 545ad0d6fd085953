"""A job's candidates are scored against one original side: computed once, and scoring as if each had its own."""

import numpy as np
import pytest
import torch

from simreduce.evaluate import scoring
from simreduce.evaluate.scoring import EvalSettings, OriginalSide, score_reduction


def scored(original: OriginalSide, reductions: list[torch.Tensor]) -> list[dict[str, float]]:
    return [score_reduction(original, r, bytes_per_vector=4 * r.shape[1]).metrics for r in reductions]


@pytest.mark.parametrize("max_exact_n", [10_000, 50])  # every pair, and sampled pairs
def test_the_original_side_is_computed_once_for_every_candidate_and_scores_as_a_fresh_one(monkeypatch, max_exact_n):
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(120, 24, generator=generator)
    reductions = [vectors @ torch.randn(24, dim, generator=generator) for dim in (3, 6, 6, 12)]
    settings = EvalSettings(max_exact_n=max_exact_n, n_sampled_pairs=500, max_queries=30, recall_k=(5, 10))
    split = torch.arange(90), torch.arange(90, 120)

    def side():
        return OriginalSide(vectors, *split, settings)

    fresh = [scored(side(), [r])[0] for r in reductions]
    widths: dict[str, list[int]] = {}  # the width of the vectors each original-side computation was given

    def counted(name, compute):
        def wrapper(vectors, *args, **kwargs):
            widths.setdefault(name, []).append(vectors.shape[-1])
            return compute(vectors, *args, **kwargs)

        return wrapper

    for name in ("true_neighbours", "side_similarities", "similarity_ranks", "cosine_spectrum", "centred_spectrum"):
        monkeypatch.setattr(scoring, name, counted(name, getattr(scoring, name)))
    shared = scored(side(), reductions)

    assert shared == fresh  # the same numbers, bit for bit
    on_originals = {name: found.count(24) for name, found in widths.items() if name != "similarity_ranks"}
    # One original side for all four: its pairs once, its search truths once per pair set, its spectra once.
    assert on_originals == {"side_similarities": 1, "true_neighbours": 2, "cosine_spectrum": 1, "centred_spectrum": 1}
    assert len(widths["similarity_ranks"]) == 2  # the original pairs' ranks, once per pair set
    assert sorted(widths["side_similarities"]) == [3, 6, 6, 12, 24]  # and each candidate's own side
    assert all(np.isfinite(m["heldout/recall_at_10"]) and m["heldout/n_queries"] == 30 for m in shared)
