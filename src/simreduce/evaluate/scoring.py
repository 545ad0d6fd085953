"""Every final metric of a candidate: the statistics of its differences, rank and neighbour agreement per pair
set, and the reference figures (Eckart-Young floor, PCA's share) of the training rows. What the original
vectors alone decide (their pairs' cosines, true neighbours, spectra) is an `OriginalSide`, computed once per
job and shared by its candidates: a nested encoder's ten would otherwise redo it ten times."""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from simreduce.evaluate.bounds import eckart_young_bound, pca_explained_variance
from simreduce.evaluate.neighbours import (
    Neighbours,
    neighbour_metrics,
    neighbour_subset,
    retrieval_recall,
    true_neighbours,
)
from simreduce.evaluate.pairs import (
    PairSimilarities,
    difference_stats,
    pair_sets,
    side_similarities,
    similarity_ranks,
    similarity_spearman,
)
from simreduce.reducers.precision import PRECISIONS, check_precisions
from simreduce.reducers.spectrum import Spectrum, centred_spectrum, cosine_spectrum
from simreduce.runtime.checks import is_positive_int
from simreduce.runtime.errors import SimreduceError

INPUT_BYTES = 4  # an input value, float32: what `compression_ratio` compares a stored vector with
QUERY_MODES = ("float", "stored")


@dataclass(frozen=True)
class EvalSettings:
    """Config group `eval`: how many rows are scored exactly, on how many rows neighbours are compared, at
    which storage precisions each trained reducer is scored (float32 always: it is the training run's own), and
    how a query meets the stored vectors (`queries`): `float`, reduced but not stored, against each stored
    vector decoded (what faiss's SQ and PQ indexes, Qdrant's and Milvus' quantized collections do), or
    `stored`, both sides stored (a store that keeps one type: pgvector's `bit` with Hamming distance)."""

    max_exact_n: int = 8192
    n_sampled_pairs: int = 1_000_000
    max_neighbour_rows: int = 2048
    recall_k: Sequence[int] = (10,)
    max_queries: int = 1000
    precisions: Sequence[str] = ("float32", "int8")
    queries: str = "float"
    seed: int = 0

    def __post_init__(self):
        for name in ("max_exact_n", "n_sampled_pairs"):
            if not getattr(self, name) >= 1:
                raise SimreduceError(f"eval.{name}={getattr(self, name)} must be at least 1: pairs have to be scored.")
        if not self.max_neighbour_rows >= 2:
            raise SimreduceError(f"eval.max_neighbour_rows={self.max_neighbour_rows} must be at least 2.")
        if not self.max_queries >= 1:
            raise SimreduceError(f"eval.max_queries={self.max_queries} must be at least 1.")
        if not self.recall_k or not all(is_positive_int(k) for k in self.recall_k):
            raise SimreduceError(f"eval.recall_k={list(self.recall_k)} must list positive integers, e.g. [10].")
        check_precisions(self.precisions)
        if self.queries not in QUERY_MODES:
            raise SimreduceError(f"eval.queries={self.queries!r} must be one of {', '.join(QUERY_MODES)}.")

    @property
    def candidate_precisions(self) -> list[str]:
        """float32 first (the training run's candidate), then the others asked for, each once, in
        PRECISIONS order."""
        return [p for p in PRECISIONS if p == "float32" or p in self.precisions]


@dataclass(frozen=True)
class Scores:
    metrics: dict[str, float]
    pairs: dict[str, PairSimilarities]


class OriginalSide:
    """What scoring computes from the original [N, D] vectors alone: every candidate of a job is scored
    against the same pairs, neighbours, search truths and spectra, so each is computed once, when first asked
    for. Neighbour metrics of `fit` are among the training rows, those of `heldout` among the validation rows
    alone, each on at most `max_neighbour_rows` of them (a seeded sample, its size logged); search queries
    are at most `max_queries` of each; the reference figures (`bound_ey`, PCA's share) are of the rows
    `fit_idx` (default: every training row)."""

    def __init__(
        self,
        vectors: torch.Tensor,
        train_idx: torch.Tensor,
        val_idx: torch.Tensor,
        settings: EvalSettings,
        fit_idx: torch.Tensor | None = None,
    ):
        self.vectors = vectors
        self.train_idx = train_idx
        self.settings = settings
        self.fit_idx = train_idx if fit_idx is None else fit_idx
        self.rows = {"fit": train_idx, "heldout": val_idx}

    @cached_property
    def pairs(self) -> dict[str, np.ndarray]:
        return self._side(self.vectors)

    def paired_with(self, stored: torch.Tensor, queries: torch.Tensor | None = None) -> dict[str, PairSimilarities]:
        """The same pairs' cosines among the [N, dim] `stored` rows (pair i < j: row i of `queries` against row
        j of `stored` when given, see `side_similarities`), beside the original ones."""
        sampled = len(self.vectors) > self.settings.max_exact_n
        return pair_sets(self.pairs, self._side(stored, queries), sampled=sampled)

    def _side(self, vectors: torch.Tensor, queries: torch.Tensor | None = None) -> dict[str, np.ndarray]:
        s = self.settings
        return side_similarities(vectors, self.train_idx, s.max_exact_n, s.n_sampled_pairs, s.seed, queries=queries)

    @cached_property
    def pair_ranks(self) -> dict[str, np.ndarray]:
        return {name: similarity_ranks(similarities) for name, similarities in self.pairs.items()}

    @cached_property
    def neighbour_rows(self) -> dict[str, torch.Tensor]:
        return self._sampled_rows(self.settings.max_neighbour_rows)

    @cached_property
    def queries(self) -> dict[str, torch.Tensor]:
        return self._sampled_rows(self.settings.max_queries)

    def _sampled_rows(self, count: int) -> dict[str, torch.Tensor]:
        """Each pair set's rows, at most `count` of them (a seeded sample)."""
        return {name: neighbour_subset(rows, count, self.settings.seed) for name, rows in self.rows.items()}

    @cached_property
    def search_truths(self) -> dict[str, Neighbours]:
        """Each pair set's queries' true top max(recall_k) + 1 (one more, to see a tie at the k-th), where the corpus
        has max(recall_k) other rows."""
        k = max(self.settings.recall_k)
        return {
            name: true_neighbours(self.vectors, queries, k + 1)
            for name, queries in self.queries.items()
            if len(queries) and len(self.vectors) - 1 >= k
        }

    @cached_property
    def fit_vectors(self) -> torch.Tensor:
        return self.vectors[self.fit_idx]  # a gathered copy: made once here

    @cached_property
    def cosine_spectrum(self) -> Spectrum:
        return cosine_spectrum(self.fit_vectors)

    @cached_property
    def centred_spectrum(self) -> Spectrum:
        return centred_spectrum(self.fit_vectors)

    def reference_figures(self, dim: int, fit_rmse: float) -> dict[str, float]:
        """What no `dim`-dimensional reduction of the rows a fit sees can beat (`bound_ey`), PCA's share of
        their variance at `dim`, and how far above the bound a candidate's `fit_rmse` sits."""
        bound = eckart_young_bound(self.fit_vectors, dim, self.cosine_spectrum)
        figures = {
            "bound_ey": bound,
            "pca_explained_variance": pca_explained_variance(self.fit_vectors, dim, self.centred_spectrum),
        }
        if bound > 0:  # zero when dim reaches the rank of the training vectors: nothing to compare with
            figures["rmse_over_bound"] = fit_rmse / math.sqrt(bound)
        return figures


def score_reduction(
    original: OriginalSide, reduced: torch.Tensor, *, bytes_per_vector: int, unstored: torch.Tensor | None = None
) -> Scores:
    """The [N, dim] reduction of `original`'s vectors (as stored: see `precision.StoredPrecision.comparable`),
    stored in `bytes_per_vector` -> the candidate's metrics, and the pairs they came from.

    With `eval.queries=float`, `unstored` ([N, dim], the vectors before they were stored) is the query side:
    recall@k's queries search the stored corpus with it, and a pair i < j is row i of it against stored row j
    (the similarity a search reports when i is the query). Neighbour metrics within a word set (knn recall,
    trustworthiness) are of the stored rows among themselves in either mode: they describe the stored set."""
    settings, vectors = original.settings, original.vectors
    dim = reduced.shape[1]
    queries = unstored if settings.queries == "float" else None
    pairs = original.paired_with(reduced, queries)
    metrics = {f"{name}/{k}": v for name, p in pairs.items() for k, v in difference_stats(p.diff).items()}
    metrics |= {f"{name}/n_pairs": len(p) for name, p in pairs.items()}
    metrics |= {f"{name}/spearman": similarity_spearman(p, original.pair_ranks[name]) for name, p in pairs.items()}
    for name, subset in original.neighbour_rows.items():
        if found := neighbour_metrics(vectors[subset], reduced[subset]):
            metrics |= {f"{name}/{k}": v for k, v in found.items()} | {f"{name}/n_neighbour_rows": len(subset)}
    for name, truth in original.search_truths.items():
        query_rows = original.queries[name]
        recalls = retrieval_recall(
            vectors, reduced, query_rows, list(settings.recall_k), truth=truth, query_vectors=queries
        )
        metrics |= {f"{name}/recall_at_{k}": v for k, v in recalls.items()} | {f"{name}/n_queries": len(query_rows)}
    metrics |= {
        "compression_ratio": vectors.shape[1] * INPUT_BYTES / bytes_per_vector,
        "bytes_per_vector": bytes_per_vector,
        "n_train_rows": len(original.train_idx),
    }
    if dim < vectors.shape[1]:  # a reduction; a code decoded back to the input's width has no size to bound
        metrics |= original.reference_figures(dim, metrics["fit/rmse"])
    return Scores(metrics, pairs)


def logged_metric_names(settings: EvalSettings) -> set[str]:
    """Every metric name a candidate logs under `settings` (`fit/rmse`, `heldout/recall_at_10`, ...), found by
    scoring a small seeded reduction, so a misspelt `select.metric` is refused before the first job trains."""
    n = max(128, 2 * max(settings.recall_k) + 2)  # held-out rows enough for the neighbour metrics, and a corpus over k
    vectors = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
    rows = torch.arange(n)
    train, val = rows[: 3 * n // 4], rows[3 * n // 4 :]
    original = OriginalSide(vectors, train, val, settings, train)
    return set(score_reduction(original, vectors[:, :4], bytes_per_vector=16).metrics) | {"train_seconds"}
