"""Faults cost the user nothing that already finished: failed jobs are marked, killed sweeps resume."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from helpers.project import PROJECT_ROOT, job_runs, project_env, run_python, store_runs, tiny_sweep

# Training that never stops by itself (no plateau can show in a million steps): long enough to be killed.
LONG_TRAINING = ["encoder.steps=1000000", "encoder.plateau_patience=1000000", "trainer.val_check_interval=1000"]


def start_and_wait_until_training(args: list[str], root: Path, run_name: str) -> subprocess.Popen:
    """Start `python ARGS` and return once its run `run_name` has logged a training loss. It waits as long as
    the process lives: a busy machine may take minutes to get there."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        env=project_env(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600  # against a hang, not a speed limit
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            runs = store_runs(root)
            if "metrics.train/loss" in runs:  # once any run has logged a loss, every column is there
                training = (runs.status == "RUNNING") & (runs["tags.mlflow.runName"] == run_name)
                if runs.loc[training, "metrics.train/loss"].notna().any():
                    return proc
            time.sleep(0.2)
    except BaseException:
        proc.kill()  # never leave a training process behind
        raise
    ended = proc.poll() is not None
    proc.kill()
    pytest.fail(f"{run_name} was never seen training: the process {'ended first' if ended else 'hung'}")


@pytest.mark.slow
def test_failing_job_is_marked_failed_oversized_ones_are_skipped_and_the_sweep_goes_on(
    project, tmp_path, tiny_llama, words_file
):
    # More neighbours than training words fails inside its run (where the rows are first seen); dim 40 is no
    # reduction of the 32-d tiny model: no run at all.
    sweep = ["encoder.dim=4,40", "encoder.loss=neighbours", "encoder.neighbours_k=100,3"]
    proc = run_python(tiny_sweep(tiny_llama, words_file, tmp_path / "sweep", *sweep), tmp_path)
    assert proc.returncode == 1
    runs = store_runs(tmp_path)
    jobs = job_runs(runs).set_index("params.encoder.neighbours_k")
    assert list(job_runs(runs)["tags.mlflow.runName"]) == ["cosine+neighbours-d0004", "cosine+neighbours-d0004"]
    assert (
        jobs.loc["100", "status"] == "FAILED"
        and "encoder.neighbours_k=100 is not below" in jobs.loc["100", "tags.error"]
    )
    assert jobs.loc["3", "status"] == "FINISHED"
    summary = runs[runs["tags.mlflow.runName"].str.startswith("sweep-")].iloc[0]
    assert summary["tags.failed_runs"] == "cosine+neighbours-d0004"
    skipped = "encoder.dim=40 skipped: not below the 32-d input"
    assert summary["tags.skipped_sizes"].count(skipped) == 2
    assert "FAILED cosine+neighbours-d0004" in proc.stdout
    assert sum(line.startswith(skipped) for line in proc.stdout.splitlines()) == 2  # the summary's own lines
    assert "1 job(s) of sweep" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_full_disk_is_one_line_per_job_and_nothing_is_selected(project, tmp_path, tiny_llama, words_file):
    """A disk that fills up mid-sweep: a file written (ENOSPC), the MLflow store written (SQLite's "database or disk
    is full", through SQLAlchemy), and Hydra's log file on a full disk (/dev/full) under both."""
    fills = "encoder._target_=helpers.full_disk.FillsTheDisk,helpers.full_disk.FillsTheStore"
    log_file = "hydra.job_logging.handlers.file.filename=/dev/full"
    args = tiny_sweep(tiny_llama, words_file, tmp_path / "sweep", "encoder.dim=4", fills, log_file)
    helpers = os.pathsep.join([str(PROJECT_ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    proc = run_python(args, tmp_path, PYTHONPATH=helpers, SIMREDUCE_TEST_DISK_FULL="1")
    assert proc.returncode == 1
    console = proc.stdout + proc.stderr
    assert "Traceback" not in console and "Logging error" not in console
    full = [line.split(" - ", 1)[-1] for line in console.splitlines() if "no space left on the disk" in line]
    store = f"the MLflow store sqlite:///{tmp_path}/mlruns/mlflow.db (SQLite: database or disk is full)"
    assert full == [
        "FAILED cosine-d0004: no space left on the disk holding a folder simreduce writes to (the MLflow store's, "
        ".cache/, the output dir) (ENOSPC): free space there, then run the same command again.",
        f"FAILED cosine-d0004: no space left on the disk holding {store}: free space there, then run the same "
        "command again.",
    ]
    assert f"2 job(s) of sweep {tmp_path.name}_sweep stopped on a full disk, so nothing was selected" in console
    assert console.count("the log file /dev/full stops here: its disk is full") == 2  # once a job, not a record
    runs = store_runs(tmp_path)
    assert list(runs.status) == ["FAILED", "FAILED"]  # the store could still be written: both are marked
    assert all(error.startswith("DiskFull: no space left on the disk") for error in runs["tags.error"])
    assert mlflow.MlflowClient().search_registered_models() == []
    # Space freed, the same command again: the full disk's notes of the first launch do not stop selection.
    resumed = run_python([*args[:-2], args[-1]], tmp_path, PYTHONPATH=helpers)  # the log file back on a disk
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "summary run sweep-" in resumed.stdout and "full disk" not in resumed.stdout + resumed.stderr


@pytest.mark.slow
def test_sigterm_ends_the_run_killed(project, tmp_path, tiny_llama, words_file):
    args = tiny_sweep(tiny_llama, words_file, tmp_path / "sweep", "encoder.dim=4", *LONG_TRAINING)
    proc = start_and_wait_until_training(args, tmp_path, "cosine-d0004")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=300)  # against a hang
    assert proc.returncode != 0
    run = store_runs(tmp_path).iloc[0]
    assert run.status == "KILLED"
    assert run["tags.error"] == "StopRequested: stopped by SIGTERM"


@pytest.mark.slow
def test_killed_sweep_resumes_without_redoing_finished_sizes(project, tmp_path, tiny_llama, words_file):
    # Every call runs the same config per size (so a resumed job matches its killed one): a few hundred
    # steps, seconds of training, time enough to be killed once the first losses are logged.
    def sweep(dims: str) -> list[str]:
        overrides = ["encoder.steps=200", "encoder.plateau_patience=1000000"]
        return tiny_sweep(tiny_llama, words_file, tmp_path / "sweep", f"encoder.dim={dims}", *overrides)

    killed = start_and_wait_until_training(sweep("4,8"), tmp_path, "cosine-d0008")  # once size 4 has finished
    killed.kill()  # SIGKILL: no handler runs, the run is left RUNNING
    killed.wait(timeout=30)
    assert list(job_runs(store_runs(tmp_path)).status) == ["FINISHED", "RUNNING"]  # no sweep summary: it never ended

    resumed = run_python(sweep("4,8"), tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    jobs = job_runs(store_runs(tmp_path))
    by_name = jobs.groupby("tags.mlflow.runName").status.apply(sorted).to_dict()
    assert by_name == {"cosine-d0004": ["FINISHED"], "cosine-d0008": ["FAILED", "FINISHED"]}
    stale = jobs[jobs.status == "FAILED"].iloc[0]
    assert "ended without closing its run" in stale["tags.error"]
    assert "cosine-d0004: skipped" in resumed.stdout
