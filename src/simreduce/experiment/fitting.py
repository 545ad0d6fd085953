"""A reducer built from the config and fitted: its closed-form start, then Lightning's fit loop when it trains."""

import signal

import lightning.pytorch as pl
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from simreduce.experiment.console import quiet_dependencies
from simreduce.experiment.notes import hydra_verbose
from simreduce.reducers.base import Reducer
from simreduce.runtime.errors import StopRequested
from simreduce.runtime.signals import raise_if_stop_requested
from simreduce.vectors.data import VectorDataModule


class StopAtSignal(pl.Callback):
    """Ends training at the step after a stop signal, where no MLflow call is half done (see `signals.py`).

    Lightning checks for SIGTERM itself a little later in the same step and raises `SIGTERMException`, a
    `SystemExit` with status 0; `train` turns that into `StopRequested` too."""

    def on_train_batch_end(self, *args) -> None:
        raise_if_stop_requested()


def build_reducer(cfg: DictConfig, in_dim: int) -> Reducer:
    """The configured reducer for `in_dim`-d vectors, seeded: every rank of a `trainer=ddp` job builds the same."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    return instantiate(cfg.encoder, in_dim=in_dim)


def fit(reducer: Reducer, datamodule: VectorDataModule, trainer_cfg: DictConfig, logger=False) -> int:
    """Fit `reducer` to the data: its closed-form fit (a baseline's whole fit, an encoder's start), then
    Lightning's fit loop when it trains, on the batches it asked for (`full_batch`: every fit row as one), its
    curves written by `logger`. Returns the training steps taken."""
    reducer.fit(datamodule.fit_vectors)
    raise_if_stop_requested()
    if not reducer.trains:
        return 0
    datamodule.full_batch = reducer.full_batch
    with quiet_dependencies(verbose=hydra_verbose()):
        trainer = instantiate(trainer_cfg, logger=logger)
        trainer.callbacks.append(StopAtSignal())
        try:
            trainer.fit(reducer, datamodule=datamodule)
        except SIGTERMException:
            raise StopRequested(signal.SIGTERM) from None
    return trainer.global_step
