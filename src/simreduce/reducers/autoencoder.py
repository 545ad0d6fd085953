"""The conventional design the study departs from: an encoder and a decoder trained to reconstruct."""

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from simreduce.reducers.base import build_mlp, check_dim, check_lr
from simreduce.reducers.training import StopBelowLearningRate, TrainedReducer


class Autoencoder(TrainedReducer):
    """`decoder(net(x))` trained to reconstruct x (MSE). Only the encoder `net` is evaluated and logged; the
    decoder mirrors its hidden widths. Trained the conventional way: Adam, the learning rate halved whenever the
    loss stops falling for `plateau_patience` steps, and training stopped once it has decayed below `min_lr`.
    """

    kind = "autoencoder"

    def __init__(
        self,
        in_dim: int,
        dim: int,
        hidden: Sequence[int] = (),
        lr: float = 1e-2,
        steps: int = 2000,
        plateau_patience: int = 10,
        plateau_factor: float = 0.5,
        min_lr: float = 1e-3,
    ):
        super().__init__()
        check_dim(dim, in_dim)
        check_lr(lr)
        self.save_hyperparameters()
        self.dim = dim
        self.net = build_mlp(in_dim, list(hidden), dim, out_bias=True)
        self.decoder = build_mlp(dim, list(hidden)[::-1], in_dim, out_bias=True)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.decoder(self(batch)), batch)

    def configure_callbacks(self) -> list[pl.Callback]:
        return [StopBelowLearningRate(self.hparams.min_lr)]

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=self.hparams.plateau_factor, patience=self.hparams.plateau_patience
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "train/loss", "interval": "step"},
        }
