"""What scoring a reducer costs as N grows: every pair in blocks up to `eval.max_exact_n`, a fixed number
of sampled pairs above it, so the cost rises as N² and then levels off."""

import time

import torch
from common import anisotropic_vectors, compose_config, print_table

from simreduce.evaluation import difference_stats, pair_similarities, retrieval_recall


def time_evaluation(n: int, d: int, projection: torch.Tensor, cfg) -> dict:
    """Seconds to score the fit and heldout pairs of N synthetic vectors (similarities and statistics)."""
    original = anisotropic_vectors(n, d)
    reduced = original @ projection
    train_idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: int(0.8 * n)]
    started = time.perf_counter()
    pairs = pair_similarities(original, reduced, train_idx, cfg.eval.max_exact_n, cfg.eval.n_sampled_pairs)
    for p in pairs.values():
        difference_stats(p.diff)
    took = time.perf_counter() - started
    return {
        "n": n,
        "seconds": took,
        "pairs": sum(len(p) for p in pairs.values()),
        "sampled": any(p.sampled for p in pairs.values()),
    }


def time_recall(n: int, d: int, projection: torch.Tensor, cfg) -> dict:
    """Seconds for recall@k of `eval.max_queries` queries against all N vectors, as one candidate pays."""
    original = anisotropic_vectors(n, d)
    reduced = original @ projection
    queries = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: cfg.eval.max_queries]
    started = time.perf_counter()
    retrieval_recall(original, reduced, queries, list(cfg.eval.recall_k))
    return {"n": n, "queries": len(queries), "seconds": time.perf_counter() - started}


def run(sizes: list[int], d: int, dim: int) -> list[dict]:
    cfg = compose_config([])
    projection = torch.randn(d, dim, generator=torch.Generator().manual_seed(1)) / d**0.5
    results = [time_evaluation(n, d, projection, cfg) for n in sizes]
    print_table(
        f"Evaluation cost: fit + heldout pairs, {d}-d original, {dim}-d reduced, statistics included",
        ["N", "pairs scored", "mode", "seconds", "ns per pair", "vs previous N"],
        [
            [
                r["n"],
                f"{r['pairs']:,}",
                "sampled" if r["sampled"] else "exact",
                f"{r['seconds']:.2f}",
                f"{1e9 * r['seconds'] / r['pairs']:.0f}",
                f"{r['seconds'] / prev['seconds']:.1f}x" if prev else "",
            ]
            for r, prev in zip(results, [None, *results[:-1]], strict=True)
        ],
        note=f"Defaults: eval.max_exact_n={cfg.eval.max_exact_n}, eval.n_sampled_pairs={cfg.eval.n_sampled_pairs:,} "
        "per pair set. Memory follows the pairs scored (two float32 per pair), never N².",
    )
    recall = [time_recall(n, d, projection, cfg) for n in [*sizes, 100_000]]
    print_table(
        f"Retrieval recall@{list(cfg.eval.recall_k)}: queries against the whole corpus, {d}-d and {dim}-d",
        ["N", "queries", "seconds"],
        [[f"{r['n']:,}", r["queries"], f"{r['seconds']:.2f}"] for r in recall],
        note="Exact, in blocks of queries whose [block, N] similarities hold at most 2**24 entries. Goal: 1,000 "
        "queries against 100,000 vectors within 5 s per candidate.",
    )
    return results
