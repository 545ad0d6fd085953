"""What scoring a reducer costs as N grows: every pair in blocks up to `eval.max_exact_n`, a fixed number
of sampled pairs above it, so the cost rises as N² and then levels off."""

import time

import torch
from common import anisotropic_vectors, compose_config, print_table

from simreduce.evaluate.neighbours import retrieval_recall
from simreduce.evaluate.pairs import difference_stats, pair_similarities
from simreduce.evaluate.scoring import EvalSettings, OriginalSide, score_reduction
from simreduce.reducers.precision import StoredPrecision


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


def time_candidates(n: int, d: int, dims: list[int], cfg) -> dict:
    """Seconds to score a nested job's candidates (each prefix of one map, at float32 and int8) against one
    original side, and against a fresh one per candidate as before it was shared."""
    original = anisotropic_vectors(n, d)
    whole = original @ (torch.randn(d, max(dims), generator=torch.Generator().manual_seed(1)) / d**0.5)
    train_idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: int(0.8 * n)]
    val_idx = torch.tensor(sorted(set(range(n)) - set(train_idx.tolist())))
    settings = EvalSettings(**{k: cfg.eval[k] for k in ("max_exact_n", "n_sampled_pairs", "max_queries", "recall_k")})
    stored = [
        StoredPrecision.calibrated(p, whole[:, :dim], train_idx).comparable(whole[:, :dim])
        for dim in dims
        for p in ("float32", "int8")
    ]
    seconds = {}
    for mode in ("fresh", "shared"):
        started = time.perf_counter()
        shared = OriginalSide(original, train_idx, val_idx, settings)
        for reduced in stored:
            side = shared if mode == "shared" else OriginalSide(original, train_idx, val_idx, settings)
            score_reduction(side, reduced, bytes_per_vector=4 * reduced.shape[1])
        seconds[mode] = time.perf_counter() - started
    return {"n": n, "candidates": len(stored), **seconds}


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
    dims = [16, 32, 64, 128, 256]
    jobs = [time_candidates(n, d, dims, cfg) for n in (8_192, 50_000)]
    print_table(
        f"A nested job's {2 * len(dims)} candidates (prefixes {dims} x float32, int8) scored, {d}-d original",
        ["N", "candidates", "fresh original side each (s)", "one shared original side (s)", "ratio"],
        [
            [
                f"{j['n']:,}",
                j["candidates"],
                f"{j['fresh']:.1f}",
                f"{j['shared']:.1f}",
                f"{j['fresh'] / j['shared']:.2f}x",
            ]
            for j in jobs
        ],
        note="Shared: the original pairs, neighbour samples, search truths and spectra are computed once per job.",
    )
    return results
