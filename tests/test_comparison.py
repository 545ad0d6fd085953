import mlflow
import numpy as np
import pytest
import torch
from helpers.project import (
    CHARTS,
    artifact_paths,
    compose_config,
    job_runs,
    run_python,
    store_runs,
    store_uri,
    tiny_overrides,
)
from sklearn.decomposition import PCA

from simreduce.experiment.config import load_data
from simreduce.experiment.job import run_job
from simreduce.experiment.tracking import TrackingStore
from simreduce.experiment.tracking.registry import load_reducer

REDUCERS = ["cosine", "autoencoder", "pca", "svd", "random"]
DIMS = [4]


def shared_overrides(model, words) -> list[str]:
    """The tiny setup without `encoder.*` keys: a sweep over `encoder=` must not set one reducer's options."""
    return [o for o in tiny_overrides(model, words) if not o.startswith("encoder.")]


def final_metric_keys(run) -> set[str]:
    """The metrics logged once at the end of a run; only trained reducers have a fit loop's curves and epoch."""
    loop_metrics = ("metrics.train/", "metrics.val/", "metrics.epoch")
    logged = run.dropna()
    return {key for key in logged.index if key.startswith("metrics.") and not key.startswith(loop_metrics)}


@pytest.mark.slow
def test_comparison_sweep_lands_one_run_per_reducer_and_dim_with_the_same_metrics(
    project, tmp_path, tiny_llama, words_file
):
    args = ["train.py", "-m", f"encoder={','.join(REDUCERS)}", f"encoder.dim={','.join(map(str, DIMS))}"]
    proc = run_python(
        [*args, *shared_overrides(tiny_llama, words_file), f"hydra.sweep.dir={tmp_path / 'multirun'}"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = job_runs(store_runs(tmp_path)).set_index("tags.mlflow.runName")
    assert sorted(runs.index) == sorted(f"{r}-d{d:04d}" for r in REDUCERS for d in DIMS)
    assert (runs.status == "FINISHED").all() and runs["tags.sweep_id"].nunique() == 1
    assert [runs.loc[f"{r}-d0004", "tags.encoder"] for r in REDUCERS] == REDUCERS
    keys = {name: final_metric_keys(run) for name, run in runs.iterrows()}
    assert {"metrics.fit/rmse", "metrics.heldout/rmse", "metrics.train_seconds"} <= keys["pca-d0004"]
    assert all(k == keys["pca-d0004"] for k in keys.values()), keys
    for run_id in runs.run_id:
        assert CHARTS | {"diffs/fit.npy"} <= artifact_paths(run_id)
    # The encoder starts at the svd baseline and only moves downhill.
    for dim in DIMS:
        assert runs.loc[f"cosine-d{dim:04d}", "metrics.fit/rmse"] < runs.loc[f"svd-d{dim:04d}", "metrics.fit/rmse"]


def test_baseline_is_logged_as_a_model_that_serves_its_transform(project, tiny_llama, words_file):
    overrides = [*shared_overrides(tiny_llama, words_file), "encoder=pca", "encoder.dim=4", "tracking.log_model=true"]
    cfg = compose_config(overrides)
    assert cfg.tracking.log_model
    run_job(cfg)
    run = store_runs(project).iloc[0]
    assert run["tags.mlflow.runName"] == "pca-d0004"
    models = mlflow.search_logged_models(experiment_ids=[run.experiment_id], output_format="list")
    (logged,) = [m for m in models if m.source_run_id == run.run_id]  # the float32 candidate's (int8's is a child's)
    datamodule = load_data(cfg.data)
    expected = PCA(4).fit(datamodule.train_vectors.double().numpy()).transform(datamodule.vectors.double().numpy())
    with pytest.MonkeyPatch.context() as patch:  # compress rebuilds the map from its tensors: no loader runs
        for loader in (torch.export, mlflow.pyfunc, mlflow.pytorch):
            patch.setattr(loader, "load" if loader is torch.export else "load_model", never_called)
        reducer = load_reducer(TrackingStore(store_uri(project)), logged.model_uri)
        compressed = reducer.reduce(datamodule.vectors.numpy())
    np.testing.assert_allclose(compressed, expected, atol=1e-4)
    with torch.no_grad():
        served = mlflow.pytorch.load_model(logged.model_uri)(datamodule.vectors).numpy()  # MLflow's own way
    np.testing.assert_allclose(served, expected, atol=1e-4)


def never_called(*args, **kwargs):
    raise AssertionError("a model loader was called")
