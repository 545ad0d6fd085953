"""Two jobs at once (Hydra's joblib launcher) on a fresh vector cache: no race. (The MLflow store is made
before any job starts, by the sweep's start callback, so the jobs share an existing one.)"""

import pytest
from helpers.project import job_runs, run_python, store_runs, tiny_sweep


@pytest.mark.slow
def test_two_job_joblib_sweep_embeds_once_and_finishes_both_runs(project, tmp_path, tiny_llama, words_file):
    sweep_dir = tmp_path / "multirun"
    proc = run_python(
        tiny_sweep(
            tiny_llama, words_file, sweep_dir, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "encoder.dim=4,8"
        ),
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    runs = job_runs(store_runs(tmp_path))
    assert sorted(runs["tags.mlflow.runName"]) == ["cosine-d0004", "cosine-d0008"]
    assert list(runs.status) == ["FINISHED", "FINISHED"]
    assert runs["tags.sweep_id"].nunique() == 1
    job_logs = [(sweep_dir / str(job) / "train.log").read_text() for job in (0, 1)]
    assert sum(log.count("cached ") for log in job_logs) == 1, job_logs
    assert len(list((tmp_path / ".cache" / "vectors").glob("*.safetensors"))) == 1
