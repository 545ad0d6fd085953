"""The nested (Matryoshka) cosine encoder: its objective, its prefixes as candidates and served maps, and a
nested sweep read back from MLflow and compressed at a prefix."""

import math

import mlflow
import numpy as np
import pytest
import torch
from helpers.project import CHILD_CHARTS, artifact_paths, run_python, store_uri, tiny_sweep, use_store
from helpers.tiny_model import HIDDEN

from simreduce.cli import main
from simreduce.experiment.tracking import TrackingStore
from simreduce.experiment.tracking.registry import LoggedReducer, load_reducer
from simreduce.experiment.tracking.runs import job_run
from simreduce.reducers.base import apply_net
from simreduce.reducers.losses import cosine_similarity_loss, pairwise_cosine
from simreduce.reducers.nested import NestedCosineEncoder
from simreduce.reducers.precision import StoredPrecision
from simreduce.reducers.weights import layer_spec, rebuild, save_weights
from simreduce.runtime.errors import SimreduceError


def seeded_vectors(in_dim: int = 16) -> torch.Tensor:
    """[40, in_dim] rows with a decaying spectrum and a shared offset, after seeding torch with 0."""
    torch.manual_seed(0)
    return torch.randn(40, in_dim) * torch.linspace(2, 0.2, in_dim) + 0.5


def trained(dims=(2, 4, 8), in_dim=16, steps=5) -> tuple[NestedCosineEncoder, torch.Tensor]:
    import lightning.pytorch as pl

    from simreduce.vectors.data import BatchStream

    vectors = seeded_vectors(in_dim)
    encoder = NestedCosineEncoder(in_dim, list(dims), steps=steps).fit(vectors)
    loader = torch.utils.data.DataLoader(BatchStream(vectors, torch.arange(40), 64, seed=0), batch_size=None)
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_progress_bar=False, enable_checkpointing=False)
    trainer.fit(encoder, train_dataloaders=loader)
    return encoder, vectors


def test_the_objective_is_the_weighted_sum_of_each_prefix_loss_on_a_hand_checked_example():
    encoder = NestedCosineEncoder(in_dim=4, dims=[1, 2])
    with torch.no_grad():
        encoder.net[0].weight.copy_(torch.eye(2, 4))  # the prefixes keep the first one and two coordinates
    encoder.term_weights = torch.tensor([0.25, 0.75])
    x = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]])
    # Original cosines of the pairs (1,2), (1,3), (2,3): 0, 1/sqrt2, 1/sqrt2. Prefix 1 gives [1], [0], [1]: a zero
    # row has cosine 0, so 0, 1, 0. Prefix 2 keeps every cosine.
    prefix_1 = (0 + (1 / math.sqrt(2) - 1) ** 2 + 0.5) / 3
    torch.testing.assert_close(encoder.loss_terms(x), torch.tensor([prefix_1, 0.0]))
    torch.testing.assert_close(encoder.loss(x), torch.tensor(0.25 * prefix_1))


def test_each_prefix_is_weighted_by_its_loss_at_the_start_so_the_start_scores_one():
    vectors = torch.randn(30, 16) * torch.linspace(2, 0.2, 16)
    encoder = NestedCosineEncoder(16, [2, 4, 8]).fit(vectors)
    with torch.no_grad():
        starts = torch.stack([cosine_similarity_loss(vectors, encoder(vectors)[:, :d]) for d in (2, 4, 8)])
        torch.testing.assert_close(encoder.term_weights, 1 / (3 * starts))
        torch.testing.assert_close(encoder.loss(vectors), torch.tensor(1.0))


def test_training_logs_every_prefix_loss_and_lowers_the_objective():
    encoder, vectors = trained(steps=15)
    assert {f"train/loss_d{d:04d}" for d in (2, 4, 8)} <= set(encoder.trainer.logged_metrics)
    with torch.no_grad():
        assert encoder.loss(vectors) < 0.99


def test_the_prefixes_of_the_trained_map_are_exactly_the_candidates_and_the_served_maps(tmp_path):
    encoder, vectors = trained()
    full = encoder.transform(vectors)
    candidates = encoder.candidates(["float32", "int8"])
    assert [(c.dim, c.precision) for c in candidates][:2] == [(8, "float32"), (8, "int8")]  # the job's run first
    assert sorted((c.dim, c.precision) for c in candidates) == [(d, p) for d in (2, 4, 8) for p in ("float32", "int8")]
    for candidate in candidates:  # the same weights; a narrower matmul may round the last bit differently
        assert torch.equal(candidate.net[-1].weight, encoder.net[-1].weight[: candidate.dim])
        torch.testing.assert_close(apply_net(candidate.net, vectors), full[:, : candidate.dim], rtol=1e-6, atol=1e-6)
        assert candidate.prefix_dims == tuple(d for d in (2, 4, 8) if d <= candidate.dim)

    # Logged whole with its int8 constants, then cut to a prefix by compress: the prefix's own map and calibration.
    whole = candidates[1]
    stored = StoredPrecision.calibrated("int8", full)
    save_weights(whole.net, tmp_path / "w.safetensors", stored)
    net, rebuilt_stored = rebuild(layer_spec(whole.net, "int8", whole.prefix_dims), tmp_path / "w.safetensors", "m")
    served = LoggedReducer(net, rebuilt_stored, 16, 8, "run", whole.prefix_dims).prefix(4, "m")
    assert served.dim == 4 and served.prefix_dims == (2, 4)
    four = next(c for c in candidates if c.dim == 4)
    expected = StoredPrecision.calibrated("int8", apply_net(four.net, vectors))
    assert np.array_equal(served.stored.starts, expected.starts) and np.array_equal(served.stored.steps, expected.steps)
    assert np.array_equal(served.reduce(vectors.numpy()), expected.encode(apply_net(four.net, vectors).numpy()))


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_the_served_nested_model_takes_a_prefix_size_as_its_dim_param(project, monkeypatch, precision):
    """MLflow serves a nested map as a pyfunc from code (no pickle): `params={"dim": 4}` returns what
    `compress --dim 4` writes, no param the whole map, and a size that is no prefix is refused naming them."""
    encoder, vectors = trained()
    whole = next(c for c in encoder.candidates([precision]) if c.dim == 8)
    stored = StoredPrecision.calibrated(precision, encoder.transform(vectors))
    store = TrackingStore.create(store_uri(project))
    with job_run(store, store.experiment_id("served"), "nested-d0008", {}) as run:
        run.log_model(whole.net, stored, vectors[:8], whole.prefix_dims)
    uri = f"runs:/{run.run_id}/model"
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    served = mlflow.pyfunc.load_model(uri)
    compressed = load_reducer(store, uri)
    x = vectors.numpy()
    assert np.array_equal(served.predict(x), compressed.reduce(x))
    cut = served.predict(x, params={"dim": 4})
    assert cut.dtype == stored.dtype and np.array_equal(cut, compressed.prefix(4, uri).reduce(x))
    (param,) = mlflow.models.get_model_info(uri).signature.params.params
    assert (param.name, param.default) == ("dim", 8)
    with pytest.raises(SimreduceError, match=r"params dim=3 is not a prefix of model 'the served model': pick one "):
        served.predict(x, params={"dim": 3})


def test_lbfgs_turns_a_rotation_of_the_outputs_that_keeps_the_whole_map_and_folds_it_into_the_map():
    vectors = seeded_vectors()
    encoder = NestedCosineEncoder(16, [2, 4, 8]).fit(vectors)
    assert encoder.optimizer_name == "lbfgs"
    assert any(p is encoder.output_rotation for p in encoder.parameters())  # L-BFGS moves it
    with torch.no_grad():
        encoder.output_rotation.normal_()
        rotated, plain = encoder(vectors), encoder.net(vectors)
    torch.testing.assert_close(pairwise_cosine(rotated), pairwise_cosine(plain), atol=1e-5, rtol=0)
    assert not torch.allclose(pairwise_cosine(rotated[:, :2]), pairwise_cosine(plain[:, :2]), atol=1e-2)
    encoder.on_fit_end()
    assert encoder.output_rotation is None
    assert [name for name, _ in encoder.named_parameters()] == ["net.0.weight"]
    torch.testing.assert_close(encoder.net(vectors), rotated, atol=1e-5, rtol=1e-5)
    mini_batches = NestedCosineEncoder(16, [2, 4, 8], batch_size=10, optimizer="adam").fit(vectors)
    assert mini_batches.optimizer_name == "adam" and mini_batches.output_rotation is None


@pytest.mark.parametrize(("lr", "peak"), [(None, 5e-4), (5e-5, 5e-5)])
def test_adam_peaks_at_adam_lr_unless_lr_is_set_and_lbfgs_keeps_its_step_scale(lr, peak):
    from simreduce.reducers.cosine import CosineEncoder

    vectors = torch.randn(30, 16) * torch.linspace(2, 0.2, 16)
    encoder = NestedCosineEncoder(16, [2, 4, 8], lr=lr, batch_size=10, optimizer="adam").fit(vectors)
    assert encoder.optimizer_name == "adam"
    assert encoder.configure_optimizers()["optimizer"].param_groups[0]["max_lr"] == peak
    # A per-size encoder keeps cosine's 1e-4.
    single = CosineEncoder(16, 8, batch_size=10, optimizer="adam").fit(vectors)
    assert single.configure_optimizers()["optimizer"].param_groups[0]["max_lr"] == 1e-4
    full_batch = NestedCosineEncoder(16, [2, 4, 8], lr=lr).fit(vectors)
    assert full_batch.configure_optimizers().param_groups[0]["lr"] == (lr or 1.0)


@pytest.mark.parametrize("adam_lr", [0, -1e-4, None, "fast"])
def test_a_bad_adam_lr_is_refused_in_one_line(adam_lr):
    with pytest.raises(SimreduceError, match=r"encoder.adam_lr=.* must be a positive number\.$"):
        NestedCosineEncoder(16, [2, 8], adam_lr=adam_lr)


@pytest.mark.parametrize(
    ("dims", "named"),
    [
        ([], "encoder.dims=[] must be a list of positive integer sizes"),
        ([8, 4], "must be ascending without repeats"),
        ([4, 4, 8], "must be ascending without repeats"),
        ([0, 8], "must be a list of positive integer sizes"),
        ([4, 16], "reaches 16, not below the input width 16"),
        ("8", "must be a list of positive integer sizes"),
        (list(range(1, 18)), "encoder.dims lists 17 sizes, more than 16"),
    ],
)
def test_bad_prefix_sizes_are_refused_in_one_line_naming_them(dims, named):
    with pytest.raises(SimreduceError, match=named.replace("[", r"\[").replace("]", r"\]")) as refused:
        NestedCosineEncoder(16, dims)
    assert "\n" not in str(refused.value)


def test_sixteen_prefixes_are_accepted():
    assert NestedCosineEncoder(64, list(range(1, 17))).dims == list(range(1, 17))


def test_a_width_other_than_the_largest_prefix_is_refused():
    with pytest.raises(SimreduceError, match=r"encoder.dim=4 is not the largest of encoder.dims=\[2, 8\]"):
        NestedCosineEncoder(16, [2, 8], dim=4)


def test_compress_dim_names_the_prefixes_or_says_the_model_is_not_nested():
    net = torch.nn.Sequential(torch.nn.Linear(16, 8, bias=False))
    nested = LoggedReducer(net, StoredPrecision("float32"), 16, 8, "run", (2, 4, 8))
    with pytest.raises(SimreduceError, match=r"--dim 3 is not a prefix of model 'm': pick one of 2, 4, 8\."):
        nested.prefix(3, "m")
    with pytest.raises(SimreduceError, match=r"--dim 4: model 'm' is not nested .* train one with encoder=nested"):
        LoggedReducer(net, StoredPrecision("float32"), 16, 8, "run").prefix(4, "m")


@pytest.mark.slow
def test_a_nested_sweep_logs_one_child_run_per_prefix_and_compress_cuts_the_model(
    project, tmp_path, capsys, tiny_llama, words_file
):
    overrides = ["encoder=nested", "encoder.dims=[2,4,8]", "tracking.log_model=true"]
    sweep = run_python(tiny_sweep(tiny_llama, words_file, tmp_path / "multirun", *overrides), tmp_path)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert "nested-d0008: fit/rmse=" in sweep.stdout and "d0002 score=" in sweep.stdout
    assert (
        "rank winner" in sweep.stdout and "try a larger size, e.g. a last prefix of encoder.dims of 16" in sweep.stdout
    )

    use_store(tmp_path)
    runs = mlflow.search_runs(experiment_names=["simreduce-tiny"]).set_index("tags.mlflow.runName")
    parent = runs.loc["nested-d0008"]
    assert parent.status == "FINISHED" and parent["params.encoder.dim"] == "8"
    assert parent[[f"metrics.train/loss_d{d:04d}" for d in (2, 4, 8)]].notna().all()
    for dim in (2, 4):
        child = runs.loc[f"nested-d{dim:04d}"]
        assert child["tags.mlflow.parentRunId"] == parent.run_id and child.status == "FINISHED"
        assert child["params.encoder.dim"] == str(dim) and child["metrics.bytes_per_vector"] == 4 * dim
        assert child["metrics.compression_ratio"] == HIDDEN / dim
        assert {p for p in artifact_paths(child.run_id) if p.startswith("plots/")} == CHILD_CHARTS
        assert child[["metrics.fit/rmse", "metrics.heldout/recall_at_10", "metrics.bound_ey"]].notna().all()
    ranking = mlflow.artifacts.load_text(
        f"runs:/{runs.loc[[n for n in runs.index if n.startswith('sweep-')][0]].run_id}/selection/ranking.csv"
    )
    assert all(f"nested-d{d:04d}" in ranking for d in (2, 4, 8))

    vectors = np.random.default_rng(0).normal(size=(7, HIDDEN)).astype(np.float32)
    np.save(tmp_path / "x.npy", vectors)
    args = ["--input", str(tmp_path / "x.npy"), "--tracking-uri", store_uri(tmp_path)]
    main(
        [
            "compress",
            "--model",
            f"runs:/{parent.run_id}/model",
            "--dim",
            "4",
            *args,
            "--output",
            str(tmp_path / "cut.npy"),
        ]
    )
    main(
        [
            "compress",
            "--model",
            f"runs:/{runs.loc['nested-d0004'].run_id}/model",
            *args,
            "--output",
            str(tmp_path / "own.npy"),
        ]
    )
    main(["compress", "--model", f"runs:/{parent.run_id}/model", *args, "--output", str(tmp_path / "whole.npy")])
    cut, own, whole = (np.load(tmp_path / f"{name}.npy") for name in ("cut", "own", "whole"))
    assert cut.shape == (7, 4) and np.array_equal(cut, own)
    np.testing.assert_allclose(cut, whole[:, :4], rtol=1e-5, atol=1e-6)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "compress",
                "--model",
                f"runs:/{parent.run_id}/model",
                "--dim",
                "3",
                *args,
                "--output",
                str(tmp_path / "z.npy"),
            ]
        )
    assert exit_info.value.code == 2 and "pick one of 2, 4, 8" in capsys.readouterr().err
    assert not (tmp_path / "z.npy").exists()
