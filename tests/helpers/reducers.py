"""Reducers on small synthetic data, built from the real configs and fitted as `train.py` would."""

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from helpers.project import compose_config
from simreduce.reducers.base import Reducer

N, D, DIM = 40, 12, 5


def low_rank_vectors(n: int = N, d: int = D, rank: int = 6, seed: int = 0) -> torch.Tensor:
    """[n, d] vectors with an offset and most of their variance in `rank` directions, like real embeddings."""
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, rank, generator=g) @ torch.randn(rank, d, generator=g)
        + 0.1 * torch.randn(n, d, generator=g)
        + torch.randn(d, generator=g)
    )


def build(name: str, x: torch.Tensor, *overrides: str, dim: int = DIM) -> Reducer:
    """The reducer of config `encoder=name`, fitted on x [N, D] as `train.py` would (a trained one: its start)."""
    cfg = compose_config([f"encoder={name}", f"encoder.dim={dim}", *overrides])
    pl.seed_everything(cfg.seed, verbose=False)
    return instantiate(cfg.encoder, in_dim=x.shape[1]).fit(x)


def fit_full_batch(reducer: pl.LightningModule, x: torch.Tensor, max_steps: int) -> None:
    """Lightning's fit loop on x [N, D] as one batch per step, without logger, checkpoints or validation."""
    trainer = pl.Trainer(
        max_steps=max_steps,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
    )
    trainer.fit(reducer, DataLoader([x] * max_steps, batch_size=None))
