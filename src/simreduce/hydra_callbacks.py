"""Hydra callbacks: set up the shared MLflow store once, before any job of a run or sweep writes to it."""

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class PrepareTrackingStore(Callback):
    def _prepare(self, config: DictConfig) -> None:
        from simreduce import tracking  # MLflow's import is deferred so that bad input fails fast

        tracking.prepare_store(config.tracking.uri or tracking.default_tracking_uri(), config.tracking.experiment)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._prepare(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._prepare(config)
