"""One nested (Matryoshka) encoder against a per-size `cosine` encoder at each of its prefixes, on the same data.

Each side is built and trained as a job does (the project's config, data module and Lightning trainer, the
MLflow logger left out). Quality is each prefix's loss over its per-size encoder's, on the training pairs (`fit`)
and on the pairs with a held-out row (`heldout`), measured on at most `max_rows` rows of each split so that the
20,000-word case needs no 16,000^2 matrix. Cost is training time: the nested run against the largest per-size
run and against all of them.
"""

import logging
import time
import warnings

import torch
from common import compose_config, print_table, quiet
from hydra.utils import instantiate

from simreduce.experiment.config import load_data
from simreduce.reducers.losses import pairwise_cosine
from simreduce.vectors.data import sample_rows

logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # its banners, once per Trainer


def trained(overrides: list[str], datamodule) -> tuple[torch.nn.Module, float, int]:
    """An encoder fitted and trained as a job does -> (it, training seconds, steps)."""
    cfg = compose_config(overrides)
    torch.manual_seed(cfg.seed)
    encoder = instantiate(cfg.encoder, in_dim=datamodule.dim)
    started = time.perf_counter()
    encoder.fit(datamodule.fit_vectors)
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False, callbacks=[])
    with quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(encoder, datamodule=datamodule)
    return encoder, time.perf_counter() - started, trainer.global_step


def split_losses(original: torch.Tensor, reduced: torch.Tensor, n_train: int) -> tuple[float, float]:
    """(mean squared cosine difference over pairs of training rows, over pairs with a held-out row), for rows
    ordered training first."""
    diff = (pairwise_cosine(original) - pairwise_cosine(reduced)).square()
    upper = torch.ones_like(diff, dtype=torch.bool).triu(1)
    train = torch.zeros_like(upper)
    train[:n_train, :n_train] = True
    return diff[upper & train].mean().item(), diff[upper & ~train].mean().item()


def compare(name: str, overrides: list[str], dims: list[int], max_rows: int) -> list[list[object]]:
    datamodule = load_data(compose_config(overrides).data)
    rows = torch.cat([sample_rows(datamodule.train_idx, max_rows, 0), sample_rows(datamodule.val_idx, max_rows, 0)])
    n_train = min(max_rows, len(datamodule.train_idx))
    original = datamodule.vectors[rows]
    per_size = {}
    for dim in dims:
        encoder, seconds, steps = trained([*overrides, f"encoder.dim={dim}"], datamodule)
        per_size[dim] = (split_losses(original, encoder.transform(original), n_train), seconds, steps)
    dims_override = f"encoder.dims=[{','.join(map(str, dims))}]"
    nested, nested_seconds, nested_steps = trained([*overrides, "encoder=nested", dims_override], datamodule)
    reduced = nested.transform(original)
    table = []
    for dim in dims:
        (fit, heldout), seconds, steps = per_size[dim]
        nested_fit, nested_heldout = split_losses(original, reduced[:, :dim], n_train)
        table.append(
            [name, dim, f"{fit:.3e}", f"{nested_fit / fit:.3f}x", f"{heldout:.3e}", f"{nested_heldout / heldout:.3f}x"]
            + [steps, f"{seconds:.1f}"]
        )
    largest = per_size[dims[-1]][1]
    every = sum(seconds for _, seconds, _ in per_size.values())
    table.append(
        [name, "nested", "", "", "", "", nested_steps, f"{nested_seconds:.1f}"]
        + [f"{nested_seconds / largest:.2f}x the largest, {nested_seconds / every:.2f}x all {len(dims)}"]
    )
    return table


def run(dims: list[int], words: int, max_rows: int) -> None:
    cases = [
        (f"{compose_config([]).data.n_words} words, full batch", []),
        (f"{words} words, mini-batches", [f"data.n_words={words}"]),
    ]
    table = [
        row + [""] * (9 - len(row)) for name, overrides in cases for row in compare(name, overrides, dims, max_rows)
    ]
    print_table(
        "A nested encoder's prefixes against per-size cosine encoders (default model)",
        ["data", "dim", "cosine fit loss", "nested / cosine", "cosine heldout loss", "nested / cosine"]
        + ["steps", "train s", "nested cost"],
        table,
        note=f"Losses on at most {max_rows} rows of each split; 'train s' covers the start (fit) and Lightning's "
        "fit loop. The full batch trains by L-BFGS until the loss plateaus, mini-batches by Adam for "
        "encoder.steps steps.",
    )
