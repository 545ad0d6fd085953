"""Every final metric of a candidate: the statistics of its differences, rank and neighbour agreement per pair
set, and the reference figures (Eckart-Young floor, PCA's share) of the training rows."""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from simreduce.errors import SimreduceError
from simreduce.evaluation import (
    PairSimilarities,
    difference_stats,
    eckart_young_bound,
    neighbour_metrics,
    neighbour_subset,
    pair_similarities,
    pca_explained_variance,
    retrieval_recall,
    similarity_spearman,
)
from simreduce.precision import PRECISIONS, check_precisions
from simreduce.reducers.base import is_positive_int

INPUT_BYTES = 4  # an input value, float32: what `compression_ratio` compares a stored vector with


@dataclass(frozen=True)
class EvalSettings:
    """Config group `eval`: how many rows are scored exactly, on how many rows neighbours are compared, and at
    which storage precisions each trained reducer is scored (float32 always: it is the training run's own)."""

    max_exact_n: int = 8192
    n_sampled_pairs: int = 1_000_000
    max_neighbour_words: int = 2048
    recall_k: Sequence[int] = (10,)
    max_queries: int = 1000
    precisions: Sequence[str] = ("float32", "int8")
    seed: int = 0

    def __post_init__(self):
        for name in ("max_exact_n", "n_sampled_pairs"):
            if not getattr(self, name) >= 1:
                raise SimreduceError(f"eval.{name}={getattr(self, name)} must be at least 1: pairs have to be scored.")
        if not self.max_neighbour_words >= 2:
            raise SimreduceError(f"eval.max_neighbour_words={self.max_neighbour_words} must be at least 2.")
        if not self.max_queries >= 1:
            raise SimreduceError(f"eval.max_queries={self.max_queries} must be at least 1.")
        if not self.recall_k or not all(is_positive_int(k) for k in self.recall_k):
            raise SimreduceError(f"eval.recall_k={list(self.recall_k)} must list positive integers, e.g. [10].")
        check_precisions(self.precisions)

    @property
    def candidate_precisions(self) -> list[str]:
        """float32 first (the training run's candidate), then the others asked for, each once, in
        PRECISIONS order."""
        return [p for p in PRECISIONS if p == "float32" or p in self.precisions]


@dataclass(frozen=True)
class Scores:
    metrics: dict[str, float]
    pairs: dict[str, PairSimilarities]


def score_reduction(
    vectors: torch.Tensor,
    reduced: torch.Tensor,
    train_idx: torch.Tensor,
    val_idx: torch.Tensor,
    settings: EvalSettings,
    fit_idx: torch.Tensor | None = None,
    *,
    bytes_per_vector: int,
) -> Scores:
    """[N, D] vectors and their [N, dim] reduction (as stored: see `precision.StoredPrecision.comparable`),
    stored in `bytes_per_vector` -> the candidate's metrics, and the pairs they came from.

    Neighbour metrics of `fit` are among the training rows, those of `heldout` among the validation rows
    alone; each on at most `max_neighbour_words` of them (a seeded sample, its size logged). The reference
    figures (`bound_ey`, PCA's share) are of the rows `fit_idx` (default: every training row).
    """
    dim = reduced.shape[1]
    pairs = pair_similarities(
        vectors, reduced, train_idx, settings.max_exact_n, settings.n_sampled_pairs, settings.seed
    )
    metrics = {f"{name}/{k}": v for name, p in pairs.items() for k, v in difference_stats(p.diff).items()}
    metrics |= {f"{name}/n_pairs": len(p) for name, p in pairs.items()}
    metrics |= {f"{name}/spearman": similarity_spearman(p) for name, p in pairs.items()}
    for name, rows in {"fit": train_idx, "heldout": val_idx}.items():
        subset = neighbour_subset(rows, settings.max_neighbour_words, settings.seed)
        if found := neighbour_metrics(vectors[subset], reduced[subset]):
            metrics |= {f"{name}/{k}": v for k, v in found.items()} | {f"{name}/n_neighbour_words": len(subset)}
    for name, rows in {"fit": train_idx, "heldout": val_idx}.items():
        queries = neighbour_subset(rows, settings.max_queries, settings.seed)
        if len(queries) and (recalls := retrieval_recall(vectors, reduced, queries, list(settings.recall_k))):
            metrics |= {f"{name}/recall_at_{k}": v for k, v in recalls.items()} | {f"{name}/n_queries": len(queries)}
    metrics |= {
        "compression_ratio": vectors.shape[1] * INPUT_BYTES / bytes_per_vector,
        "bytes_per_vector": bytes_per_vector,
        "n_train_words": len(train_idx),
    }
    if dim < vectors.shape[1]:  # a reduction; a code decoded back to the input's width has no size to bound
        metrics |= reference_figures(vectors[train_idx if fit_idx is None else fit_idx], dim, metrics["fit/rmse"])
    return Scores(metrics, pairs)


def reference_figures(fit_vectors: torch.Tensor, dim: int, fit_rmse: float) -> dict[str, float]:
    """What no `dim`-dimensional reduction of the [N, D] rows a fit sees can beat (`bound_ey`), PCA's share of
    their variance at `dim`, and how far above the bound the candidate's `fit_rmse` sits."""
    bound = eckart_young_bound(fit_vectors, dim)
    figures = {"bound_ey": bound, "pca_explained_variance": pca_explained_variance(fit_vectors, dim)}
    if bound > 0:  # zero when dim reaches the rank of the training vectors: nothing to compare with
        figures["rmse_over_bound"] = fit_rmse / math.sqrt(bound)
    return figures
