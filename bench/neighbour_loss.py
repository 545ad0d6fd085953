"""The encoder's training recipes on real vectors against their own SVD start and PCA: heldout recall@10 (each
held-out row searching the whole corpus, the sweep's yardstick), fit rmse on a sample of training pairs, fit seconds.

Everything runs in-process through the package's own path (the composed config, `fitting.fit` on the data
module, `retrieval_recall`), on a vectors file (safetensors `vectors` [N, D]) split as `data.val_fraction` says.

    OMP_NUM_THREADS=1 python bench/neighbour_loss.py VECTORS.safetensors [--n 5000] [--dims 16,32,64,128]
        [--recipe "pairs-adam=encoder.optimizer=adam" --recipe "neighbours=encoder.loss=neighbours" ...]

A recipe with `encoder=nested` trains one nested encoder whose prefixes are the sizes, each scored as its own map.
"""

import argparse
import logging
import os
import time
import warnings

import torch
from common import machine_note, print_table, quiet
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from simreduce.evaluate.neighbours import retrieval_recall, true_neighbours
from simreduce.experiment.config import CONFIG_DIR
from simreduce.experiment.fitting import build_reducer, fit
from simreduce.reducers.base import apply_net
from simreduce.reducers.losses import pairwise_cosine
from simreduce.vectors.data import VectorDataModule
from simreduce.vectors.sources import Vectors

logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
BASELINES = ("svd", "pca")
DEFAULT_RECIPES = [
    "pairs=",
    "pairs-adam=encoder.optimizer=adam",
    "neighbours=encoder.loss=neighbours",
    "listwise=encoder.loss=listwise",
]
FIT_PAIR_ROWS = 2000  # training rows whose pairs give the fit rmse
NESTED = "encoder=nested"  # a recipe with it trains one map whose prefixes are the sizes


class InMemorySource:
    """The vectors file's rows as a data module's source, already in memory."""

    kind = "vectors"

    def __init__(self, vectors: torch.Tensor):
        self.vectors = vectors

    def load(self) -> Vectors:
        return Vectors([str(i) for i in range(len(self.vectors))], self.vectors)

    def cache_key(self) -> str:
        return "bench"


def config(overrides: list[str]):
    """The package's config with `overrides`, on the CPU."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=["trainer.accelerator=cpu", *overrides])


def score(vectors, reduced, queries, truth, fit_rows) -> tuple[float, float]:
    """(heldout recall@10, fit rmse over the pairs of `fit_rows`)."""
    recall = retrieval_recall(vectors, reduced, queries, [10], truth=truth)[10]
    original, kept = pairwise_cosine(vectors[fit_rows].double()), pairwise_cosine(reduced[fit_rows].double())
    upper = torch.triu_indices(len(fit_rows), len(fit_rows), 1)
    rmse = (original - kept)[upper[0], upper[1]].square().mean().sqrt().item()
    return recall, rmse


def run(path: str, n: int, dims: list[int], recipes: list[str]) -> None:
    vectors = load_file(path)["vectors"][:n].float().contiguous()
    split = config([]).data
    data = VectorDataModule(
        InMemorySource, "bench", split.val_fraction, split.batch_size, split.seed, split.max_fit_rows, vectors=vectors
    )
    data.setup("fit")
    queries = data.val_idx
    truth = true_neighbours(vectors, queries, 11)  # 11: whether each true top 10 is determined
    fit_rows = data.train_idx[torch.randperm(len(data.train_idx), generator=torch.Generator().manual_seed(0))]
    fit_rows = fit_rows[:FIT_PAIR_ROWS]
    rows = []
    named = [(b, [f"encoder={b}"]) for b in BASELINES] + [
        (r.split("=", 1)[0], [o for o in r.split("=", 1)[1].split() if o]) for r in recipes
    ]
    for name, overrides in named:
        cells = [name]
        # A nested encoder is fitted once, to every size as a prefix: its time and steps are that one fit's.
        fits = (
            [[f"encoder.dims=[{','.join(map(str, dims))}]"]]
            if NESTED in overrides
            else [[f"encoder.dim={d}"] for d in dims]
        )
        for size in fits:
            cfg = config([*overrides, *size])
            reducer = build_reducer(cfg, vectors.shape[1])
            started = time.perf_counter()
            with quiet(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                steps = fit(reducer, data, cfg.trainer)
            seconds = time.perf_counter() - started
            reduced = apply_net(reducer.net, vectors)
            used = getattr(reducer, "optimizer_name", "-")
            for dim in reducer.dims if NESTED in overrides else [cfg.encoder.dim]:
                recall, rmse = score(vectors, reduced[:, :dim], queries, truth, fit_rows)
                cells.append(f"{recall:.3f} / {rmse:.4f} / {seconds:.0f}s" + (f" ({used} {steps})" if steps else ""))
                print(name, dim, cells[-1], f"load {os.getloadavg()[0]:.1f}", flush=True)
        rows.append(cells)
    print_table(
        f"heldout recall@10 / fit rmse / fit seconds (optimizer steps): {n:,} rows of {os.path.basename(path)}, "
        f"{len(data.train_idx):,} training, {len(queries):,} held-out queries",
        ["recipe", *(f"d={d}" for d in dims)],
        rows,
        note=machine_note(),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("vectors", help="a safetensors file with `vectors` [N, D]")
    parser.add_argument("--n", type=int, default=5000, help="rows taken from the file")
    parser.add_argument("--dims", default="16,32,64,128")
    parser.add_argument("--recipe", action="append", help="NAME=OVERRIDES (space-separated); repeatable")
    args = parser.parse_args()
    run(args.vectors, args.n, [int(d) for d in args.dims.split(",")], args.recipe or DEFAULT_RECIPES)
