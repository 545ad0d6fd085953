"""The guard that ends a training on its start's map when the trained one searches worse: the loss is a proxy for
search, and an encoder trained from the SVD map should never end below it."""

import copy
import logging

import lightning.pytorch as pl
import torch

from simreduce.reducers.losses import batch_neighbours

log = logging.getLogger(__name__)
GUARD_NEIGHBOURS = 10


@torch.no_grad()
def kept_neighbours(module: torch.nn.Module, rows: torch.Tensor, truth: torch.Tensor, dims: list[int]) -> float:
    """The share of each of the [n, D] `rows`' nearest others `truth` [n, k] (by original cosine) that `module`'s
    output also ranks in its top k among `rows`, the mean over the prefix widths `dims`."""
    reduced = module(rows)
    kept = [
        (truth[:, :, None] == batch_neighbours(reduced[:, :d], truth.shape[1]).rows[:, None, :]).any(dim=2)
        for d in dims
    ]
    return torch.stack(kept).float().mean().item()


class KeepBetterMap(pl.Callback):
    """Puts the start's weights back at the end of training when the start kept more of the nearest neighbours of a
    slice of training rows ([n, D] `rows`: never the held-out rows the yardstick scores) than the trained map does
    (`kept_neighbours` over its `dims`). The same on every rank: the rows and weights are."""

    def __init__(self, rows: torch.Tensor):
        self.rows = rows
        self.start: dict[str, torch.Tensor] = {}
        self.truth = torch.empty(0)
        self.start_recall = 0.0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.rows = self.rows.to(pl_module.device)
        self.truth = batch_neighbours(self.rows, GUARD_NEIGHBOURS).rows
        self.start = copy.deepcopy(pl_module.state_dict())
        self.start_recall = kept_neighbours(pl_module, self.rows, self.truth, pl_module.dims)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        end_recall = kept_neighbours(pl_module, self.rows, self.truth, pl_module.dims)
        if end_recall < self.start_recall:
            log.info(
                "trained map below its start on the guard rows (%.4f < %.4f): start kept", end_recall, self.start_recall
            )
            pl_module.load_state_dict(self.start)
