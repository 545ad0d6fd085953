"""Faults cost the user nothing that already finished: failed jobs are marked, killed sweeps resume."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from conftest import PROJECT_ROOT, tiny_overrides

# Training that only ends when the learning-rate schedule says it has converged: long enough to be killed.
LONG_TRAINING = ["encoder.steps=1000000", "trainer.val_check_interval=1000"]


def store_runs(root: Path):
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    if mlflow.get_experiment_by_name("simreduce-tiny") is None:
        return None
    return mlflow.search_runs(experiment_names=["simreduce-tiny"], order_by=["attributes.start_time ASC"])


def sweep_command(root: Path, model: Path, words: Path, dims: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "train.py",
        "-m",
        f"encoder.dim={dims}",
        *tiny_overrides(model, words),
        f"hydra.sweep.dir={root / 'multirun' / 'the-sweep'}",
        *extra,
    ]


def start_and_wait_until_running(cmd: list[str], root: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        cmd,
        cwd=PROJECT_ROOT,
        env={**os.environ, "SIMREDUCE_ROOT": str(root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = store_runs(root)
        if runs is not None and (runs.status == "RUNNING").any() and "metrics.train/loss" in runs:
            return proc
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the job never started training")


def test_failing_job_is_marked_failed_and_the_sweep_goes_on(tmp_path, tiny_llama, words_file):
    proc = subprocess.run(
        sweep_command(tmp_path, tiny_llama, words_file, "40,4"),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SIMREDUCE_ROOT": str(tmp_path)},
    )
    assert proc.returncode == 1
    runs = store_runs(tmp_path).set_index("tags.mlflow.runName")
    assert runs.loc["cosine-d0040", "status"] == "FAILED"
    assert "not below the input width 32" in runs.loc["cosine-d0040", "tags.error"]
    assert runs.loc["cosine-d0004", "status"] == "FINISHED"
    summary = runs.loc[[n for n in runs.index if n.startswith("sweep-")][0]]
    assert summary["tags.failed_runs"] == "cosine-d0040"
    assert "FAILED cosine-d0040" in proc.stdout
    assert "1 job(s) of sweep" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_sigterm_ends_the_run_killed(tmp_path, tiny_llama, words_file):
    proc = start_and_wait_until_running(sweep_command(tmp_path, tiny_llama, words_file, "4", *LONG_TRAINING), tmp_path)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    run = store_runs(tmp_path).iloc[0]
    assert run.status == "KILLED"
    assert run["tags.error"] == "StopRequested: stopped by SIGTERM"


@pytest.mark.slow
def test_killed_sweep_resumes_without_redoing_finished_sizes(tmp_path, tiny_llama, words_file):
    env = {**os.environ, "SIMREDUCE_ROOT": str(tmp_path)}
    finished = subprocess.run(
        sweep_command(tmp_path, tiny_llama, words_file, "4", *LONG_TRAINING),
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert finished.returncode == 0
    killed = start_and_wait_until_running(
        sweep_command(tmp_path, tiny_llama, words_file, "8", *LONG_TRAINING), tmp_path
    )
    killed.kill()  # SIGKILL: no handler runs, the run is left RUNNING
    killed.wait(timeout=30)
    assert sorted(store_runs(tmp_path).status) == ["FINISHED", "FINISHED", "RUNNING"]  # with the sweep summary

    resumed = subprocess.run(
        sweep_command(tmp_path, tiny_llama, words_file, "4,8", *LONG_TRAINING),
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    runs = store_runs(tmp_path)
    jobs = runs[~runs["tags.mlflow.runName"].str.startswith("sweep-")]
    by_name = jobs.groupby("tags.mlflow.runName").status.apply(sorted).to_dict()
    assert by_name == {"cosine-d0004": ["FINISHED"], "cosine-d0008": ["FAILED", "FINISHED"]}
    stale = jobs[jobs.status == "FAILED"].iloc[0]
    assert "ended without closing its run" in stale["tags.error"]
    assert "cosine-d0004: skipped" in resumed.stdout
