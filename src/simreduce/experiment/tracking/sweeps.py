"""A sweep in the store: its id, its runs read back, resume (finished configs, runs left RUNNING by a dead
process), the runs that failed, and its `sweep-<id>` summary run."""

import logging
import os
import socket

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow.entities import Run

from simreduce.experiment.tracking.runs import JobRun
from simreduce.experiment.tracking.store import TrackingStore, quoted
from simreduce.runtime.errors import SimreduceError, StopRequested
from simreduce.runtime.signals import raise_if_stop_requested

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
        if tags.get("host") == socket.gethostname() and not _is_alive(int(tags.get("pid", "0"))):
            store.client.set_tag(run.info.run_id, "error", "the job's process ended without closing its run")
            store.client.set_terminated(run.info.run_id, "FAILED")
            stale.append(run.info.run_id)
    if stale:
        log.warning("marked %d stale run(s) of sweep %s as FAILED", len(stale), sweep_id)
    return stale


def find_finished_run(store: TrackingStore, experiment_id: str, sweep_id: str, cfg_hash: str) -> Run | None:
    """The FINISHED job run of this config in this sweep, if any: never one of its candidates' child runs,
    which a job killed after logging them leaves FINISHED under an unfinished job run."""
    runs = store.client.search_runs(
        [experiment_id],
        f"tags.sweep_id = {quoted(sweep_id)} and tags.config_hash = {quoted(cfg_hash)} "
        "and attributes.status = 'FINISHED'",
        max_results=MAX_RUNS,
    )
    return next((run for run in runs if is_job_run(run)), None)


def precision_of(run: Run) -> str:
    """The storage precision of a run's candidate: runs logged before precisions are float32."""
    return run.data.tags.get("precision", "float32")


JOB_RUN_TAG = "job_run"  # "true" on a job's own run, "false" on its candidates' child runs


def is_job_run(run: Run) -> bool:
    """Whether `run` is a job's own run, not one of its candidates' child runs (another precision, another
    prefix of a nested encoder); runs logged before the tag: by their precision."""
    tagged = run.data.tags.get(JOB_RUN_TAG)
    return precision_of(run) == "float32" if tagged is None else tagged == "true"


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
    redone = {run.data.tags.get("config_hash") for run in runs if run.info.status == "FINISHED"}
    return {
        run.info.run_name: run.data.tags.get("error", run.info.status)
        for run in runs
        if run.info.status != "FINISHED" and run.data.tags.get("config_hash") not in redone
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

    One row per run: `run_id, run_name, experiment_id, sweep_id, embedder, source, data_name, data_id, encoder,
    dim, precision, degenerate, reference, queries`, and every metric under its logged name (`heldout/rmse`,
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
            "experiment_id": run.info.experiment_id,
            "sweep_id": sweep_id,
            "embedder": run.data.tags.get("embedder"),
            "source": run.data.tags.get("source", "words"),  # runs logged before sources had names
            "data_name": run.data.tags.get("data_name", run.data.tags.get("embedder")),  # likewise
            "data_id": run.data.tags.get("data_id", ""),
            "encoder": run.data.tags["encoder"],
            "dim": int(run.data.params["encoder.dim"]),
            "precision": precision_of(run),
            "job_run": is_job_run(run),
            "degenerate": run.data.tags.get("degenerate", "false") == "true",
            "reference": run.data.tags.get("reference", "false") == "true",
            "queries": run.data.tags.get("queries", "stored"),  # runs logged before query modes: both sides stored
            **run.data.metrics,
        }
        for run in runs
    ]
    return pd.DataFrame(rows)


def load_run_array(store: TrackingStore, run_id: str, artifact_path: str) -> np.ndarray:
    """An array a run logged with `JobRun.log_array`, read back from its artifacts."""
    with store.downloaded(run_id, artifact_path) as path:
        return np.load(path)


def log_sweep_summary(
    store: TrackingStore,
    experiment_id: str,
    sweep_id: str,
    texts: dict[str, str],
    figures: dict[str, Figure],
    note: str,
    tags: dict[str, str],
    metrics: dict[str, float],
    child_run_ids: list[str],
) -> str:
    """Log (or update, when selection runs again) the run `sweep-<id>`, `note` as its description in the UI,
    and nest the sweep's runs under it.

    Returns the summary run's id.
    """
    previous = store.client.search_runs([experiment_id], f"tags.{SUMMARY_TAG} = {quoted(sweep_id)}", max_results=1)
    if previous:
        run_id = previous[0].info.run_id
        store.client.update_run(run_id, status="RUNNING")
    else:
        run_id = store.client.create_run(experiment_id, run_name=f"sweep-{sweep_id}").info.run_id
    run = JobRun(store, run_id)
    try:  # a stop signal is taken between the parts (see `signals.py`), and ends the run KILLED
        for key, value in {SUMMARY_TAG: sweep_id, "mlflow.note.content": note, **tags}.items():
            run.set_tag(key, value)
        run.log_metrics(metrics)
        raise_if_stop_requested()
        for artifact_path, text in texts.items():
            run.log_text(text, artifact_path)
        raise_if_stop_requested()
        run.log_figures(figures)
        raise_if_stop_requested()
    except BaseException as e:
        store.client.set_terminated(run_id, "KILLED" if isinstance(e, KeyboardInterrupt | StopRequested) else "FAILED")
        raise
    store.client.set_terminated(run_id, "FINISHED")
    for child in child_run_ids:
        store.client.set_tag(child, "mlflow.parentRunId", run_id)
    return run_id
