from pathlib import Path

import mlflow
import pytest
from helpers.project import (
    CHARTS,
    CHILD_CHARTS,
    artifact_paths,
    compose_config,
    store_runs,
    tiny_overrides,
)
from mlflow.models import Model

from simreduce.experiment import job
from simreduce.experiment.job import run_job
from simreduce.experiment.tracking.registry import SPEC_KEY
from simreduce.reducers.base import apply_net
from simreduce.reducers.precision import ROTATED

STATS = ["diff_mean", "diff_var", "diff_std", "rmse", "mae", "max_abs", "p01", "p99"]


def test_in_process_run_logs_metrics_charts_and_model(project, tiny_llama, words_file, monkeypatch):
    # The default: float32, int8, int4, pq2, pq1.
    default = f"eval.precisions=[{','.join(compose_config([]).eval.precisions)}]"
    overrides = [*tiny_overrides(tiny_llama, words_file), "encoder.dim=8", "tracking.log_model=true", default]
    maps_applied = []
    monkeypatch.setattr(job, "apply_net", lambda net, vectors: maps_applied.append(net) or apply_net(net, vectors))
    score = run_job(compose_config(overrides))
    assert len(maps_applied) == 1  # every stored form's candidate shares its map's output
    runs = store_runs(project)
    forms = ["int8", "int4", "pq2", "pq1"]
    assert list(runs["tags.mlflow.runName"]) == ["cosine-d0008", *(f"cosine-d0008-{form}" for form in forms)]
    assert list(runs["metrics.bytes_per_vector"]) == [32, 8, 4, 2, 1] and (runs["tags.queries"] == "float").all()
    run, int8 = runs.iloc[0], runs.iloc[1]
    assert run.status == "FINISHED"
    assert run["tags.mlflow.runName"] == "cosine-d0008"
    assert run["tags.encoder"] == "cosine" and run["tags.embedder"] == "tiny"
    assert run["params.encoder.dim"] == "8"
    for pair_set in ("fit", "heldout"):
        for stat in STATS:
            assert f"metrics.{pair_set}/{stat}" in run
    assert score == pytest.approx(run["metrics.heldout/rmse"])
    assert run["metrics.fit/rmse"] ** 2 == pytest.approx(
        run["metrics.fit/diff_mean"] ** 2 + run["metrics.fit/diff_var"], rel=1e-4
    )
    assert run["metrics.compression_ratio"] == 32 / 8
    assert CHARTS | {"diffs/fit.npy", "config.yaml"} <= artifact_paths(run.run_id)
    history = mlflow.MlflowClient().get_metric_history(run.run_id, "train/loss")
    assert len(history) >= 2
    logged = mlflow.search_logged_models(experiment_ids=[run.experiment_id], output_format="list")
    assert sorted(m.source_run_id for m in logged) == sorted(runs.run_id)  # a model per candidate
    precision_of = dict(zip(runs.run_id, runs["tags.precision"], strict=True))
    for model in logged:
        model_files = {p.name for p in Path(model.artifact_location).rglob("*") if p.is_file()}
        assert "weights.safetensors" in model_files  # the tensors compress rebuilds the map from
        # torch.export for MLflow; a rotated code is simreduce's code model instead (`tracking/code_model.py`)
        assert ("model.pt2" in model_files) == (precision_of[model.source_run_id] not in ROTATED)
        assert not {name for name in model_files if name.endswith((".pth", ".pt", ".pkl"))}

    # The int8 candidate: a child of the training run, scored as stored, with its own charts and model.
    assert int8["tags.mlflow.parentRunId"] == run.run_id and int8.status == "FINISHED"
    assert (run["tags.precision"], int8["tags.precision"]) == ("float32", "int8")
    assert int8["params.encoder.dim"] == "8" and int8["tags.config_hash"] == run["tags.config_hash"]
    assert (run["metrics.bytes_per_vector"], int8["metrics.bytes_per_vector"]) == (32, 8)
    assert int8["metrics.compression_ratio"] == 32 * 4 / 8
    assert int8["metrics.heldout/rmse"] != run["metrics.heldout/rmse"]  # what is stored, not the float map
    assert int8["metrics.heldout/rmse"] == pytest.approx(run["metrics.heldout/rmse"], rel=0.2)
    assert CHILD_CHARTS | {"diffs/fit.npy", "config.yaml"} <= artifact_paths(int8.run_id)
    assert not (CHARTS - CHILD_CHARTS) & artifact_paths(int8.run_id)  # one chart a child: the cost of many forms
    int8_model = next(m for m in logged if m.source_run_id == int8.run_id)
    assert Model.load(int8_model.artifact_location).metadata[SPEC_KEY]["precision"] == "int8"


# The README's promise: a seeded run repeats its metrics to this relative tolerance, not bit for bit (float32
# kernels round differently with memory alignment and thread timing, and between CPUs).
SEEDED_RTOL = 1e-6


def test_same_seed_gives_same_metrics_within_the_stated_tolerance(project, tiny_llama, words_file):
    cfg = compose_config([*tiny_overrides(tiny_llama, words_file), "encoder.dim=4", "encoder.init=random"])
    first, second = run_job(cfg), run_job(cfg)  # the first embeds, the second reads the cache
    assert second == pytest.approx(first, rel=SEEDED_RTOL)
    other = run_job(
        compose_config([*tiny_overrides(tiny_llama, words_file), "encoder.dim=4", "encoder.init=random", "seed=1"])
    )
    assert other != pytest.approx(first, rel=1000 * SEEDED_RTOL)


def test_training_lowers_the_loss_from_random_init(project, tiny_llama, words_file):
    cfg = compose_config(
        [
            *tiny_overrides(tiny_llama, words_file),
            "encoder.dim=4",
            "encoder.init=random",
            "encoder.lr=0.01",
            "encoder.steps=200",
        ]
    )
    run_job(cfg)
    history = mlflow.MlflowClient().get_metric_history(store_runs(project).run_id[0], "train/loss")
    losses = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert losses[-1] < 0.75 * losses[0]
