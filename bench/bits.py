"""Bits, not dimensions: held-out recall@10 of float queries at 16, 32 and 64 bytes per vector, simreduce's best
candidate (reducer x dim x stored form) against faiss OPQ+PQ at the same bytes, on a real corpus; and the
measurements behind the b-bit codes' design (`reducers/codes.py`): which rotation, which levels.

    python bench/bits.py --vectors CACHE.safetensors   # a texts cache written by `simreduce train data=texts`
    python bench/bits.py --vectors CACHE.safetensors --skip-design --reducers svd

The split is the package's: 20% of the rows held out (seeded), every learned part (reductions, rotations, levels,
OPQ+PQ) fit on the other 80%. Each held-out row is a query searching all other rows; recall@10 is the share of its
true 10 nearest by original cosine found among the 10 nearest by the candidate's cosine, the query reduced but not
quantised (`eval.queries=float`), each other row as stored and decoded. One thread: OMP_NUM_THREADS=1.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from common import print_table
from safetensors.torch import load_file

from simreduce.evaluate.neighbours import retrieval_recall, true_neighbours
from simreduce.reducers.base import apply_net
from simreduce.reducers.closed_form import PCAReducer, SVDReducer
from simreduce.reducers.codes import CodeForm, decode, learned_rotation, lloyd_levels, random_rotation, rotated
from simreduce.reducers.precision import StoredPrecision
from simreduce.reducers.product_quantizer import ProductQuantizer

FORMS = ("float16", "int8", "int4", "int2", "int1", "pq4", "pq2", "pq1", "binary")
BEFORE = ("float32", "float16", "int8", "binary")  # the forms simreduce stored before issue 27
DIMS = (8, 16, 32, 64, 128, 256)
BUDGETS = (16, 32, 64)
K = 10


def split(n: int, val_fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The package's split: a seeded permutation, the first `val_fraction` of it held out."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = round(n * val_fraction)
    return order[n_val:].sort().values, order[:n_val].sort().values


class Yardstick:
    """recall@10 of the held-out queries: their true top 10 found once."""

    def __init__(self, vectors: torch.Tensor, queries: torch.Tensor):
        self.vectors, self.queries = vectors, queries
        self.truth = true_neighbours(vectors, queries, K + 1)  # K + 1: whether each true top K is determined

    def recall(self, stored: torch.Tensor, unstored: torch.Tensor) -> float:
        found = retrieval_recall(self.vectors, stored, self.queries, [K], truth=self.truth, query_vectors=unstored)
        return found[K]


def uniform_levels(values: np.ndarray, bits: int) -> np.ndarray:
    """2^bits levels per dimension, evenly spaced over the training range (the middle of each of equal cells)."""
    low, high = values.min(axis=0), values.max(axis=0)
    cells = (np.arange(2**bits) + 0.5) / 2**bits
    return (low[:, None] + (high - low)[:, None] * cells[None, :]).astype(np.float32)


def coded(reduced: torch.Tensor, rotation: np.ndarray, levels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(decode(CodeForm(rotation, levels)(reduced).numpy(), rotation, levels))


def design_choices(yardstick: Yardstick, reductions: dict, train: torch.Tensor) -> None:
    """Rotation (none, seeded random, ITQ-style learned: the package's) x levels (1-D k-means, uniform) at the
    sizes the goal table's winners come from."""
    rows = []
    for kind, dim, bits in [("svd", 128, 1), ("svd", 128, 2), ("svd", 64, 4), ("svd", 256, 2), ("pca", 128, 1)]:
        if (kind, dim) not in reductions:  # a reducer left out by --reducers
            continue
        reduced = reductions[kind, dim]
        unit_train = torch.nn.functional.normalize(reduced[train], dim=1).numpy()
        identity = np.eye(dim, dtype=np.float32)
        random = random_rotation(dim)
        started = time.perf_counter()
        learned = learned_rotation(unit_train, bits)
        itq_seconds = time.perf_counter() - started
        variants = {
            "none, k-means": (identity, lloyd_levels(rotated(reduced[train], identity), bits)),
            "random, k-means": (random, lloyd_levels(rotated(reduced[train], random), bits)),
            "random, uniform": (random, uniform_levels(rotated(reduced[train], random), bits)),
            "learned (ITQ), k-means": learned,
        }
        recalls = {name: yardstick.recall(coded(reduced, *parts), reduced) for name, parts in variants.items()}
        bytes_ = dim * bits // 8
        rows.append(
            [f"{kind} {dim}-d {bits} bit", bytes_, *(f"{r:.3f}" for r in recalls.values()), f"{itq_seconds:.1f}"]
        )
    print_table(
        "design of the b-bit codes: held-out recall@10, float queries, by rotation and levels",
        ["candidate", "bytes", *variants, "ITQ fit s"],
        rows,
    )


def goal_table(yardstick: Yardstick, vectors: torch.Tensor, reductions: dict, train: torch.Tensor) -> list:
    """Every candidate's recall, then the best at each budget beside OPQ+PQ of the same bytes."""
    scored = []  # (bytes, recall, label)
    for (kind, dim), reduced in reductions.items():
        scored.append((4 * dim, yardstick.recall(reduced, reduced), f"{kind} {dim}-d float32"))
        for form in FORMS:
            stored = StoredPrecision.calibrated(form, reduced, train)
            recall = yardstick.recall(stored.comparable(reduced), reduced)
            scored.append((stored.bytes_per_vector(dim), recall, f"{kind} {dim}-d {form}"))
    rows = []
    for budget in BUDGETS:
        fitting = [s for s in scored if s[0] <= budget]
        today = [s for s in fitting if s[2].endswith(BEFORE)]
        scalar = [s for s in fitting if not s[2].split()[-1].startswith("pq")]
        best, before, best_scalar = (max(found, key=lambda s: s[1]) for found in (fitting, today, scalar))
        started = time.perf_counter()
        pq = ProductQuantizer(vectors.shape[1], budget).fit(vectors[train])
        decoded = apply_net(pq.net, vectors)
        pq_seconds = time.perf_counter() - started
        pq_recall = yardstick.recall(decoded, vectors)
        rows.append(
            [budget, f"{before[1]:.3f} ({before[2]})", f"{best_scalar[1]:.3f} ({best_scalar[2]})",
             f"**{best[1]:.3f}** ({best[2]}, {best[0]} B)", f"{pq_recall:.3f} (fit {pq_seconds:.0f} s)",
             f"{best[1] - pq_recall:+.3f}"]
        )  # fmt: skip
    return rows, scored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=Path, required=True, help="a texts cache (safetensors, tensor `vectors`)")
    parser.add_argument("--skip-design", action="store_true", help="only the goal table")
    parser.add_argument("--reducers", default="svd,pca", help="closed-form reducers whose candidates compete")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    vectors = load_file(str(args.vectors))["vectors"].float()
    train, held_out = split(len(vectors))
    yardstick = Yardstick(vectors, held_out)
    reductions = {}
    for reducer in (SVDReducer, PCAReducer):
        if reducer.kind not in args.reducers.split(","):
            continue
        for dim in DIMS:
            fitted = reducer(vectors.shape[1], dim).fit(vectors[train])
            reductions[fitted.kind, dim] = apply_net(fitted.net, vectors)
    if not args.skip_design:
        design_choices(yardstick, reductions, train)
    rows, scored = goal_table(yardstick, vectors, reductions, train)
    print_table(
        f"held-out recall@10, float queries: {len(held_out)} queries against the other {len(vectors) - 1} rows "
        f"of {len(vectors)}, {vectors.shape[1]}-d; every learned part fit on the {len(train)} training rows",
        ["bytes", "best of float32/float16/int8/binary", "best with int4/int2/int1", "best candidate (any form)",
         "faiss OPQ+PQ", "best - PQ"],
        rows,
        note=f"load average {load:.2f} at start, {os.getloadavg()[0]:.2f} at the end; one thread",
    )  # fmt: skip
    frontier = sorted(scored)
    print_table(
        "every candidate at 64 bytes or fewer",
        ["bytes", "recall@10", "candidate"],
        [[b, f"{r:.3f}", label] for b, r, label in frontier if b <= 64],
    )


if __name__ == "__main__":
    main()
