"""What a person sees while a job trains: one progress bar per job (its run's name, the step, the loss and
how near a plateau rule is to stopping), and dependencies' banners, adverts and deprecation notices kept
off the console unless Hydra is verbose (`hydra.verbose=true`)."""

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from simreduce.reducers.base import run_name
from simreduce.reducers.training import StopOnPlateau

# Lightning's "GPU available / TPU available" and its litlogger tip, once per Trainer, through both packages;
# MLflow's "Validating input example against model signature", once per pyfunc model logged (a nested map's).
BANNER_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "pytorch_lightning.utilities.rank_zero", "mlflow.pyfunc")
# Lightning's own pytree helper calls a torch API that torch has deprecated: nothing a user can act on.
DEPENDENCY_DEPRECATIONS = r".*isinstance\(treespec, LeafSpec\).*"
# Lightning's all_gather with gradients (trainer=ddp) calls the torch one torch has deprecated.
GATHER_DEPRECATION = r".*torch.distributed.nn.functional.all_gather is deprecated.*"


@contextlib.contextmanager
def quiet_dependencies(verbose: bool = False) -> Iterator[None]:
    """Within the block, dependencies' banners and deprecation notices stay off the console (`verbose`
    keeps them); our own warnings and errors are untouched."""
    with warnings.catch_warnings():
        # The batches are slices of one in-memory tensor: worker processes would only add overhead.
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        # trainer=ddp: every rank's loss is already the whole batch's (`TrainedReducer.global_batch`).
        warnings.filterwarnings("ignore", ".*when logging on epoch level in distributed setting.*")
        if verbose:
            yield
            return
        warnings.filterwarnings("ignore", DEPENDENCY_DEPRECATIONS)
        warnings.filterwarnings("ignore", GATHER_DEPRECATION)
        loggers = [logging.getLogger(name) for name in BANNER_LOGGERS]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _plateau_rule(trainer: pl.Trainer) -> StopOnPlateau | None:
    return next((c for c in trainer.callbacks if isinstance(c, StopOnPlateau)), None)


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, one per job: named after the run, counting steps (out of `max_steps` only when
    training runs to it: a plateau rule usually stops it far sooner), with the loss and the plateau rule's
    state. Validation, a few batches every few steps, gets no bar of its own."""

    def init_validation_tqdm(self) -> Tqdm:
        return Tqdm(disable=True)

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        """One epoch is the whole of training here (the batch stream is endless): name the bar after the run."""
        module = trainer.lightning_module
        self.train_progress_bar.reset(total=None if _plateau_rule(trainer) else trainer.max_steps)
        self.train_progress_bar.set_description(run_name(module.kind, module.dim))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The bar ends on the step training stopped at, not on the last multiple of `refresh_rate`."""
        self.train_progress_bar.n = trainer.global_step
        self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
        super().on_train_end(trainer, pl_module)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, int | str | float]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        rule = _plateau_rule(trainer)
        if rule is not None and (drop := rule.relative_drop()) is not None:
            metrics["plateau"] = f"fell {drop:.1e} in {rule.patience} steps, stops below {rule.tolerance:.0e}"
        return metrics
