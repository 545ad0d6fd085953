"""Hydra callbacks: set up the shared MLflow store once, before any job of a run or sweep writes to it, and
pick the sweep's winner once all its jobs are done."""

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from simreduce.runtime.distributed import is_rank_zero
from simreduce.runtime.errors import StopRequested, exit_on_user_error, explained
from simreduce.runtime.signals import stop_signals_deferred

log = logging.getLogger(__name__)


class PrepareTrackingStore(Callback):
    """Before any job: check the settings (a missing or empty word list fails here, in seconds, before MLflow
    is imported), then create the store and the experiment once (on rank 0 of a trainer=ddp job), so parallel
    jobs do not race to. A bad setting or an unusable store ends the run or sweep here, once, with one line and
    exit 2."""

    def _prepare(self, config: DictConfig) -> None:
        from simreduce.experiment.settings import check_settings

        try:
            with exit_on_user_error(store=config.tracking.uri):
                check_settings(config)
                if not is_rank_zero():  # of a trainer=ddp job: rank 0 alone writes to the store
                    return
                from simreduce.experiment.tracking import TrackingStore

                TrackingStore.create(config.tracking.uri).experiment_id(config.tracking.experiment)
        except Exception:  # Hydra would warn and launch the jobs anyway: a bug stops the run here too
            log.exception("the settings could not be checked")
            raise SystemExit(1) from None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._prepare(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._prepare(config)


class SelectSweepWinner(Callback):
    """After `simreduce train -m ...`: rank the sweep's runs, log its summary run, register the winner, and
    repeat the sizes the sweep skipped.

    The sweep exits 1 when any job failed (whether or not its MLflow run was opened) or selection failed, with
    a last line naming the failed jobs; retrying selection is suggested only where it can help (the runs are
    there and readable, and something else went wrong). A job failed on a full disk means nothing is selected:
    the runs that finished are a part of the sweep, and `@winner` stays where it was until the sweep is resumed.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_rank_zero():  # of a trainer=ddp sweep: rank 0's jobs are the ones logged
            return
        from simreduce.experiment import summary as sweep
        from simreduce.experiment.notes import FAILED_FILE, FULL_DISK_FILE, SKIPPED_FILE, job_notes
        from simreduce.experiment.selection import make_target
        from simreduce.experiment.tracking import TrackingStore
        from simreduce.experiment.tracking.sweeps import failed_sweep_runs, sweep_id_of

        sweep_id = config.tracking.sweep_id or sweep_id_of(config.hydra.sweep.dir)
        failed = {failed_job_name(line) for line in job_notes(config.hydra.sweep.dir, FAILED_FILE)}
        skipped = job_notes(config.hydra.sweep.dir, SKIPPED_FILE)
        if full := job_notes(config.hydra.sweep.dir, FULL_DISK_FILE):
            log.error(
                "%d job(s) of sweep %s stopped on a full disk, so nothing was selected and @winner stays where it was: "
                "free space, then run the same command again (the sizes that finished are skipped)",
                len(full),
                sweep_id,
            )
            raise SystemExit(1)
        if skipped and len(skipped) == len(list(Path(config.hydra.sweep.dir).glob("*/.hydra"))):
            print("\n".join([*skipped, f"sweep {sweep_id}: every size was skipped, so there is nothing to select."]))
            return  # the user asked for sizes that are no reduction: nothing failed
        selected = False
        try:
            store = TrackingStore.open(config.tracking.uri)
            with stop_signals_deferred():
                summaries = sweep.summarise_sweep(
                    store,
                    sweep_id,
                    config.select.tolerance,
                    skipped=skipped,
                    register=config.select.register,
                    target=make_target(config.select.metric, config.select.target),
                )
            for result in summaries:
                print(result.report(), flush=True)
            selected = True
            failed |= set(failed_sweep_runs(store, sweep_id))
        except StopRequested as stop:
            print(
                f"simreduce: {stop} during selection; the summary run is marked KILLED and nothing was registered: "
                f"redo it with `simreduce select --sweep {sweep_id}`",
                file=sys.stderr,
            )
            raise SystemExit(128 + stop.signum) from None
        except Exception as e:  # the runs are kept whatever went wrong
            known = explained(e, config.tracking.uri)
            retry = "" if known else f": retry with `simreduce select --sweep {sweep_id}`"
            log.error("selection of sweep %s failed (%s)%s", sweep_id, known or f"{type(e).__name__}: {e}", retry)
        exported = export_selected(config, summaries) if selected and config.select.get("export_to") else True
        if failed:
            log.error("%d job(s) of sweep %s failed: %s", len(failed), sweep_id, ", ".join(sorted(failed)))
        if failed or not selected or not exported:
            raise SystemExit(1)


def export_selected(config: DictConfig, summaries: list) -> bool:
    """`select.export_to`: the winners exported; False when that failed, its error logged with the way to redo it."""
    from simreduce.experiment.export import export_winners

    try:
        for exported in export_winners(config.tracking.uri, summaries, config.select.export_to):
            print(exported.report(), flush=True)
    except Exception as e:
        error = explained(e, config.tracking.uri) or f"{type(e).__name__}: {e}"
        redo = f"simreduce export --model models:/<name>/<version> --to {config.select.export_to}"
        log.error("the winner was selected but not exported (%s): redo it with `%s`", error, redo)
        return False
    return True


def failed_job_name(line: str) -> str:
    """`cosine-d0064` from a job's `FAILED cosine-d0064: <error>` line."""
    return line.removeprefix("FAILED ").split(": ", 1)[0]
