"""Reducers map [N, D] vectors to [N, dim]. The cosine encoder is trained with the similarity loss.

Every reducer is a LightningModule built by `instantiate(cfg.encoder, in_dim=D)` with:
`kind` (run names and tags), `hparams.dim`, `prepare(train_vectors)` (initialise, or fit in closed form),
`trains` (whether Lightning's fit loop runs), and `net`, the torch module that maps [N, D] -> [N, dim]
and is logged as the MLflow model.
"""

import logging
from collections.abc import Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from simreduce.errors import SimreduceError
from simreduce.losses import cosine_similarity_loss

log = logging.getLogger(__name__)

INITS = ("pca", "random")


def check_dim(dim: int, in_dim: int) -> None:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise SimreduceError(f"encoder.dim={dim!r} must be a positive integer.")
    if dim >= in_dim:
        raise SimreduceError(
            f"encoder.dim={dim} is not below the input width {in_dim}: nothing would be compressed; pick a smaller dim."
        )


def build_mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    """Linear layers with GELU between them; `hidden=[]` is a single linear map."""
    widths = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False)):
        layers.append(nn.Linear(a, b, bias=i < len(widths) - 2))
        if i < len(widths) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


def cosine_pca_directions(x: torch.Tensor, dim: int) -> torch.Tensor:
    """[N, D] -> [D, dim]: the top right singular vectors of the L2-normalised rows (uncentred).

    Projecting onto them gives the best rank-`dim` fit of the cosine Gram matrix among linear maps of
    normalised vectors, so it is where gradient descent on the cosine loss should start.
    """
    _, _, vh = torch.linalg.svd(F.normalize(x.double(), dim=1), full_matrices=False)
    return vh[:dim].T.float()


class CosineEncoder(pl.LightningModule):
    """The decoder-less encoder: `x -> net(x)`, trained so that cos_sim(net(x)) matches cos_sim(x)."""

    kind = "cosine"
    trains = True

    def __init__(
        self,
        in_dim: int,
        dim: int,
        hidden: Sequence[int] = (),
        init: str = "pca",
        lr: float = 1e-3,
        steps: int = 2000,
        plateau_patience: int = 50,
        plateau_factor: float = 0.5,
        min_lr: float = 1e-6,
    ):
        super().__init__()
        check_dim(dim, in_dim)
        if init not in INITS:
            raise SimreduceError(f"encoder.init={init!r} is not one of {INITS}.")
        self.save_hyperparameters()
        self.net = build_mlp(in_dim, list(hidden), dim)

    def prepare(self, train_vectors: torch.Tensor) -> None:
        """Start from the PCA of the cosine geometry (single linear layer only); random init otherwise."""
        if self.hparams.init == "pca" and not self.hparams.hidden:
            with torch.no_grad():
                self.net[0].weight.copy_(cosine_pca_directions(train_vectors, self.hparams.dim).T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = cosine_similarity_loss(batch, self(batch))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val/loss", cosine_similarity_loss(batch, self(batch)), prog_bar=True)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.optimizers().param_groups[0]["lr"] < self.hparams.min_lr:
            self.trainer.should_stop = True

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=self.hparams.plateau_factor, patience=self.hparams.plateau_patience
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "train/loss", "interval": "step"},
        }
