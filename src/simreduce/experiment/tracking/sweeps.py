"""A sweep in the store: its id, its runs read back, resume (finished configs, runs left RUNNING by a dead
process), the runs that failed, and its `sweep-<id>` summary run."""

import contextlib
import logging
import os
import socket
from collections.abc import Iterator

import numpy as np
import pandas as pd
from mlflow.entities import Run

from simreduce.experiment.tracking.runs import JobRun
from simreduce.experiment.tracking.store import TrackingStore, quoted
from simreduce.runtime.errors import SimreduceError, StopRequested

log = logging.getLogger(__name__)

SUMMARY_TAG = "summary_of_sweep"
MAX_RUNS = 5000


def sweep_id_of(sweep_dir: str) -> str:
    """The last two parts of Hydra's sweep dir (its date and time by default), shared by all its jobs."""
    return "_".join(str(sweep_dir).replace("\\", "/").rstrip("/").split("/")[-2:])


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def close_stale_runs(store: TrackingStore, experiment_id: str, sweep_id: str) -> list[str]:
    """End as FAILED the RUNNING runs of this sweep whose process on this host is gone (killed, crashed).

    Runs on other hosts are left alone: their process cannot be checked from here.
    """
    stale = []
    running = f"tags.sweep_id = {quoted(sweep_id)} and attributes.status = 'RUNNING'"
    for run in store.client.search_runs([experiment_id], running, max_results=MAX_RUNS):
        tags = run.data.tags
        if tags["host"] == socket.gethostname() and not _is_alive(int(tags["pid"])):
            store.client.set_tag(run.info.run_id, "error", "the job's process ended without closing its run")
            store.client.set_terminated(run.info.run_id, "FAILED")
            stale.append(run.info.run_id)
    if stale:
        log.warning("marked %d stale run(s) of sweep %s as FAILED", len(stale), sweep_id)
    return stale


def find_finished_run(
    store: TrackingStore, experiment_id: str, sweep_id: str, cfg_hash: str, data_id: str
) -> Run | None:
    """The FINISHED job run of this config on this data (`data_id`, `VectorDataModule.identity`) in this sweep,
    if any: never one of its candidates' child runs, which a job killed after logging them leaves FINISHED under
    an unfinished job run. A run of the config on other data (a vectors file rewritten between two launches of
    the sweep) is not it: the job runs again, on the data there now, and says so."""
    runs = store.client.search_runs(
        [experiment_id],
        f"tags.sweep_id = {quoted(sweep_id)} and tags.config_hash = {quoted(cfg_hash)} "
        "and attributes.status = 'FINISHED'",
        max_results=MAX_RUNS,
    )
    jobs = [run for run in runs if is_job_run(run)]
    same = next((run for run in jobs if run.data.tags.get("data_id") == data_id), None)
    if same is None and jobs:
        log.warning(
            "run %s of sweep %s finished this config on other data (data_id %s, now %s): it runs again",
            jobs[0].info.run_id,
            sweep_id,
            jobs[0].data.tags.get("data_id"),
            data_id,
        )
    return same


JOB_RUN_TAG = "job_run"  # "true" on a job's own run, "false" on its candidates' child runs


def is_job_run(run: Run) -> bool:
    """Whether `run` is a job's own run, not one of its candidates' child runs (another precision, another
    prefix of a nested encoder)."""
    return run.data.tags[JOB_RUN_TAG] == "true"


def failed_sweep_runs(store: TrackingStore, sweep_id: str, experiment_ids: list[str] | None = None) -> dict[str, str]:
    """Run name -> error of the sweep's job runs that ended FAILED or KILLED and were not redone since (a
    later FINISHED job run of the same config, from a resumed sweep, supersedes them). A child run's failure is
    its job's, named once, by the job run."""
    runs = [
        run
        for run in store.client.search_runs(
            experiment_ids or store.all_experiment_ids(),
            f"tags.sweep_id = {quoted(sweep_id)} and attributes.status != 'RUNNING'",
            max_results=MAX_RUNS,
        )
        if is_job_run(run)
    ]
    redone = {run.data.tags["config_hash"] for run in runs if run.info.status == "FINISHED"}
    return {
        run.info.run_name: run.data.tags.get("error", run.info.status)
        for run in runs
        if run.info.status != "FINISHED" and run.data.tags["config_hash"] not in redone
    }


def _latest_sweep_id(store: TrackingStore, experiment_ids: list[str]) -> str:
    latest = store.client.search_runs(
        experiment_ids,
        "attributes.status = 'FINISHED' AND tags.sweep_id LIKE '%'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not latest:
        raise SimreduceError("the MLflow store holds no finished sweep runs: run `simreduce train -m ...` first.")
    return latest[0].data.tags["sweep_id"]


def sweep_runs(store: TrackingStore, sweep_id: str | None = None, experiment: str | None = None) -> pd.DataFrame:
    """The finished candidates of a sweep (default: the latest one), in one experiment or in all: its job runs
    and their children at other storage precisions (only those of a finished job run: a killed job's children
    are left out, so a resumed sweep does not list them twice).

    One row per run: `run_id, run_name, start_time, experiment_id, sweep_id, embedder, source, data_name, data_id,
    encoder, dim, precision, degenerate, reference, queries`, and every metric under its logged name (`heldout/rmse`,
    `bound_ey`, ...).
    """
    experiment_ids = [store.existing_experiment_id(experiment)] if experiment else store.all_experiment_ids()
    sweep_id = sweep_id or _latest_sweep_id(store, experiment_ids)
    finished = [
        run
        for run in store.client.search_runs(
            experiment_ids,
            f"attributes.status = 'FINISHED' AND tags.sweep_id = {quoted(sweep_id)}",
            max_results=MAX_RUNS,
        )
        if "encoder" in run.data.tags  # candidates, not a summary run
    ]
    job_run_ids = {run.info.run_id for run in finished if is_job_run(run)}
    runs = [run for run in finished if is_job_run(run) or run.data.tags.get("mlflow.parentRunId") in job_run_ids]
    if not runs:
        raise SimreduceError(f"sweep {sweep_id!r} has no finished runs in {experiment or 'any experiment'}.")
    rows = [
        {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "start_time": run.info.start_time,
            "experiment_id": run.info.experiment_id,
            "sweep_id": sweep_id,
            "embedder": run.data.tags["embedder"],
            "source": run.data.tags["source"],
            "data_name": run.data.tags["data_name"],
            "data_id": run.data.tags["data_id"],
            "encoder": run.data.tags["encoder"],
            "dim": int(run.data.params["encoder.dim"]),
            "precision": run.data.tags["precision"],
            "job_run": is_job_run(run),
            "degenerate": run.data.tags["degenerate"] == "true",
            "reference": run.data.tags["reference"] == "true",
            "queries": run.data.tags["queries"],
            **run.data.metrics,
        }
        for run in runs
    ]
    return pd.DataFrame(rows)


def load_run_array(store: TrackingStore, run_id: str, artifact_path: str) -> np.ndarray:
    """An array a run logged with `JobRun.log_array`, read back from its artifacts."""
    with store.downloaded(run_id, artifact_path) as path:
        return np.load(path)


@contextlib.contextmanager
def summary_run(
    store: TrackingStore,
    experiment_id: str,
    sweep_id: str,
    note: str,
    tags: dict[str, str],
    child_run_ids: list[str],
) -> Iterator[JobRun]:
    """The run `sweep-<id>` (the same one when selection runs again), `note` as its description in the UI and
    `tags` set, for the block to log into. It ends FINISHED with the sweep's runs `child_run_ids` nested under
    it; KILLED when a stop signal or Ctrl-C ends the block, FAILED when anything else does."""
    previous = store.client.search_runs([experiment_id], f"tags.{SUMMARY_TAG} = {quoted(sweep_id)}", max_results=1)
    if previous:
        run_id = previous[0].info.run_id
        store.client.update_run(run_id, status="RUNNING")
    else:
        run_id = store.client.create_run(experiment_id, run_name=f"sweep-{sweep_id}").info.run_id
    run = JobRun(store, run_id)
    try:
        for key, value in {SUMMARY_TAG: sweep_id, "mlflow.note.content": note, **tags}.items():
            run.set_tag(key, value)
        yield run
    except BaseException as e:
        store.client.set_terminated(run_id, "KILLED" if isinstance(e, KeyboardInterrupt | StopRequested) else "FAILED")
        raise
    store.client.set_terminated(run_id, "FINISHED")
    for child in child_run_ids:
        store.client.set_tag(child, "mlflow.parentRunId", run_id)
