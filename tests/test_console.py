"""The console: one bar per job that ends on the real step, and dependencies' banners kept off unless verbose."""

import logging

import lightning.pytorch as pl
import pytest
from helpers.reducers import build, low_rank_vectors
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch.utils.data import DataLoader

from simreduce.experiment.console import StepProgressBar, quiet_dependencies


@pytest.mark.parametrize("verbose", [False, True])
def test_lightning_banners_show_only_when_verbose(caplog, verbose):
    with caplog.at_level(logging.INFO), quiet_dependencies(verbose=verbose):
        rank_zero_info("GPU available: False, used: False")
    assert ("GPU available" in caplog.text) == verbose


@pytest.mark.parametrize("verbose", [False, True])
def test_mlflows_note_on_each_logged_pyfunc_model_shows_only_when_verbose(caplog, verbose):
    with caplog.at_level(logging.INFO), quiet_dependencies(verbose=verbose):
        logging.getLogger("mlflow.pyfunc").info("Validating input example against model signature")
        logging.getLogger("mlflow.pyfunc").warning("a real problem")
    assert ("Validating input example" in caplog.text) == verbose
    assert "a real problem" in caplog.text


def test_the_bar_is_named_after_the_run_and_ends_on_the_step_training_stopped_at():
    x = low_rank_vectors()
    encoder = build("cosine", x)  # lbfgs: a plateau rule stops it long before max_steps
    bar = StepProgressBar(refresh_rate=20)
    trainer = pl.Trainer(max_steps=1000, callbacks=[bar], logger=False, enable_checkpointing=False, accelerator="cpu")
    trainer.fit(encoder, DataLoader([x] * 1000, batch_size=None))
    assert 0 < trainer.global_step < 1000
    assert bar.train_progress_bar.n == trainer.global_step
    assert bar.train_progress_bar.total is None  # no "of 1000" for a run that stops on a plateau
    assert bar.train_progress_bar.desc.startswith("cosine-d0005")
