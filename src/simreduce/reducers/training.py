"""What the trained reducers share: a LightningModule whose `net` is the map, its loss logged as `train/loss`
and `val/loss`, and the stopping rules Lightning has no callback for."""

from collections import deque

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from simreduce.reducers.base import Reducer


class TrainedReducer(Reducer, pl.LightningModule):
    """Subclasses set `net`, `loss`, their optimiser and their stopping rules (`configure_callbacks`)."""

    trains = True
    across_ranks = False  # while Lightning trains it over several processes (`trainer=ddp`)
    full_batch = False  # trains on one batch of every row `fit` saw (the data module serves it), else mini-batches

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def global_batch(self, original: torch.Tensor, reduced: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """While training over several processes, the whole batch from each rank's share of it ([n_rank, D] and
        [n_rank, dim] -> [n, D] and [n, dim], in rank order: one process's batch), `reduced` keeping its gradients;
        elsewhere both as they are.

        A loss over the batch's pairs does not split into per-rank parts (the pairs across shares would be lost), so
        every rank computes the whole batch's loss (CLIP's convention). Its backward sends each rank's rows the sum
        of every rank's (identical) gradient through the gather, W times one process's, and DDP's average over the W
        ranks divides it out: each rank holds one process's gradient.
        """
        if not self.across_ranks:
            return original, reduced
        sizes = self.all_gather(torch.tensor(len(original), device=original.device)).tolist()

        def gathered(rows: torch.Tensor, sync_grads: bool) -> torch.Tensor:
            padded = F.pad(rows, (0, 0, 0, max(sizes) - len(rows)))  # all_gather takes equal shapes
            parts = self.all_gather(padded, sync_grads=sync_grads)
            return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])

        return gathered(original, sync_grads=False), gathered(reduced, sync_grads=True)

    def fit(self, train_vectors: torch.Tensor) -> "TrainedReducer":
        """Nothing to set from the data before training, unless a subclass starts from it."""
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val/loss", self.loss(batch), prog_bar=True)

    def on_fit_start(self) -> None:
        # Some models have near-dead features (all-MiniLM-L6-v2 has two); their products with small gradients
        # are subnormal floats, which CPUs compute far more slowly and which change nothing.
        torch.set_flush_denormal(True)
        self.across_ranks = self.trainer.world_size > 1

    def on_fit_end(self) -> None:
        torch.set_flush_denormal(False)
        self.across_ranks = False


class StopOnPlateau(pl.Callback):
    """Stops training once the step loss (`training_step`'s output) has fallen by less than `tolerance`
    (relative) over the last `patience` steps. Lightning's `EarlyStopping` checks once per epoch or validation;
    full-batch training needs the check after every step."""

    def __init__(self, patience: int, tolerance: float):
        self.patience = patience
        self.tolerance = tolerance
        self.recent_losses: deque[float] = deque(maxlen=patience + 1)

    def full(self) -> bool:
        return len(self.recent_losses) == self.recent_losses.maxlen

    def relative_drop(self) -> float | None:
        """How much (relative) the loss fell over the last `patience` steps, for a person to read; None before
        that many steps, or from a zero loss."""
        if not self.full() or self.recent_losses[0] == 0:
            return None
        return 1 - self.recent_losses[-1] / self.recent_losses[0]

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = float(outputs["loss"])
        self.recent_losses.append(loss)
        if self.full() and loss > self.recent_losses[0] * (1 - self.tolerance):
            trainer.should_stop = True


class StopBelowLearningRate(pl.Callback):
    """Stops training once a decaying schedule (`ReduceLROnPlateau`) has taken the learning rate below `min_lr`."""

    def __init__(self, min_lr: float):
        self.min_lr = min_lr

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.optimizers[0].param_groups[0]["lr"] < self.min_lr:
            trainer.should_stop = True
