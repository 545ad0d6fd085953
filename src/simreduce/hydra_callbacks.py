"""Hydra callbacks: set up the shared MLflow store once, before any job of a run or sweep writes to it, and
pick the sweep's winner once all its jobs are done."""

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from simreduce.errors import exit_on_user_error

log = logging.getLogger(__name__)


class PrepareTrackingStore(Callback):
    """Before any job: check the source's ids (a missing or empty word list fails here, in a second, before
    MLflow is imported), then create the store and the experiment once, so parallel jobs do not race to."""

    def _prepare(self, config: DictConfig) -> None:
        from hydra.utils import instantiate

        with exit_on_user_error():
            instantiate(config.data).source.ids()
            from simreduce.tracking import TrackingStore

            TrackingStore.create(config.tracking.uri).experiment_id(config.tracking.experiment)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._prepare(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._prepare(config)


class SelectSweepWinner(Callback):
    """After `python train.py -m ...`: rank the sweep's runs, log its summary run, register the winner, and
    repeat the sizes the sweep skipped.

    The runs are already safe in MLflow, so a failure of the selection itself is reported, with the command
    that retries it, and does not fail the sweep; a job that failed (and was not redone) makes it exit 1.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from simreduce import sweep
        from simreduce.job import skipped_sizes
        from simreduce.tracking import TrackingStore
        from simreduce.tracking.sweeps import failed_sweep_runs, sweep_id_of

        sweep_id = config.tracking.sweep_id or sweep_id_of(config.hydra.sweep.dir)
        store = TrackingStore(config.tracking.uri)
        skipped = skipped_sizes(config.hydra.sweep.dir)
        try:
            opened = TrackingStore.open(store.uri)
            for result in sweep.summarise_sweep(opened, sweep_id, config.select.tolerance, skipped=skipped):
                print(result.report(), flush=True)
        except Exception as e:  # the runs are kept whatever went wrong
            log.error(
                "selection of sweep %s failed (%s: %s); its runs are kept: retry with `simreduce select --sweep %s`",
                sweep_id,
                type(e).__name__,
                e,
                sweep_id,
            )
        if failed := failed_sweep_runs(store, sweep_id):
            log.error("%d job(s) of sweep %s failed: %s", len(failed), sweep_id, ", ".join(sorted(failed)))
            raise SystemExit(1)
