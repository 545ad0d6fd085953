"""`trainer=ddp`: one job over two processes (torchrun, gloo on the CPU) does what one process does: the same cache
of embedded texts, the same trained weights and metrics in one MLflow run, written by rank 0 alone; a rank that
fails ends the run FAILED and the job non-zero."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.project import PROJECT_ROOT, compose_config, project_env, seed_store, store_runs
from helpers.reducers import low_rank_vectors
from safetensors.torch import load_file
from test_texts import TEXTS

from simreduce.experiment.job import run_job
from simreduce.runtime import distributed

# 240 training rows in batches of 45: five full batches and one of 15 a step, each shared 23/22 (8/7) by two ranks.
TRAIN = [
    "trainer.accelerator=cpu",
    "encoder.steps=40",
    "data.batch_size=45",
    "trainer.val_check_interval=20",
    "trainer.log_every_n_steps=10",
    "eval.precisions=[float32]",
]


def torchrun(args: list[str], root: Path, processes: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node=PROCESSES train.py ARGS` with `root` as the project root; test helpers importable."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    python_path = os.pathsep.join([str(PROJECT_ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [*command, "train.py", "trainer=ddp", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=project_env(root, PYTHONPATH=python_path, OMP_NUM_THREADS="1"),
    )


def one_process(args: list[str], root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same job in this process, with `root` as the project root: what the two processes must match."""
    with monkeypatch.context() as patch:
        patch.setenv("SIMREDUCE_ROOT", str(root))
        run_job(compose_config(args))


def logged_weights(root: Path) -> dict[str, torch.Tensor]:
    (path,) = (root / "mlruns" / "artifacts").rglob("weights.safetensors")
    return load_file(path)


def test_a_rows_share_is_contiguous_and_the_shares_are_the_rows():
    rows = torch.arange(15)
    shares = [distributed.share(rows, rank, 2) for rank in range(2)]
    assert [len(s) for s in shares] == [8, 7]
    assert torch.equal(torch.cat(shares), rows)
    assert [len(distributed.share(range(1), rank, 2)) for rank in range(2)] == [1, 0]


@pytest.mark.slow
def test_two_processes_train_the_same_weights_and_log_one_run_as_one_process(tmp_path, empty_store, monkeypatch):
    path = tmp_path / "vectors.npy"
    np.save(path, low_rank_vectors(300, 32, rank=8).numpy())
    args = ["data=vectors", f"data.path={path}", "encoder.dim=8", "encoder.optimizer=adam", *TRAIN]
    one_process(args, seed_store(tmp_path / "one", empty_store), monkeypatch)
    two = torchrun(args, seed_store(tmp_path / "two", empty_store))
    assert two.returncode == 0, two.stderr[-3000:]

    expected, found = logged_weights(tmp_path / "one"), logged_weights(tmp_path / "two")
    assert expected.keys() == found.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(found[name], tensor, rtol=0, atol=1e-5)
    one_runs, two_runs = (
        store_runs(tmp_path / "one", "simreduce-vectors"),
        store_runs(tmp_path / "two", "simreduce-vectors"),
    )
    assert len(two_runs) == 1 and two_runs.status[0] == "FINISHED"
    assert two_runs["params.optimizer_used"][0] == "adam"
    metrics = [c for c in one_runs if c.startswith("metrics.") and c != "metrics.train_seconds"]
    np.testing.assert_allclose(
        two_runs[metrics].to_numpy(float), one_runs[metrics].to_numpy(float), rtol=1e-4, atol=1e-6
    )


@pytest.mark.slow
def test_two_processes_embed_texts_into_the_cache_one_process_makes(tmp_path, tiny_llama, empty_store, monkeypatch):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"{text} Take {i}.\n" for i in range(5) for text in TEXTS))  # 30: shares of 15
    args = [
        "data=texts",
        f"data.path={corpus}",
        f"embedder.name_or_path={tiny_llama}",
        "embedder.name=tiny",
        "embedder.batch_size=4",
        "encoder.dim=4",
        *TRAIN,
    ]
    one_process(args, seed_store(tmp_path / "one", empty_store), monkeypatch)
    two = torchrun(args, seed_store(tmp_path / "two", empty_store))
    assert two.returncode == 0, two.stderr[-3000:]

    (expected_file,) = (tmp_path / "one" / ".cache" / "vectors").glob("*.safetensors")
    (found_file,) = (tmp_path / "two" / ".cache" / "vectors").glob("*.safetensors")
    assert found_file.name == expected_file.name  # the same key: either cache serves the other
    torch.testing.assert_close(load_file(found_file)["vectors"], load_file(expected_file)["vectors"], rtol=0, atol=1e-6)
    runs = store_runs(tmp_path / "two", "simreduce-corpus-tiny")
    assert list(runs.status) == ["FINISHED"] and runs["params.optimizer_used"][0] == "lbfgs"
    expected_rmse = store_runs(tmp_path / "one", "simreduce-corpus-tiny")["metrics.fit/rmse"][0]
    assert runs["metrics.fit/rmse"][0] == pytest.approx(expected_rmse, rel=1e-3)


@pytest.mark.slow
def test_a_rank_that_fails_ends_the_run_failed_and_every_process_non_zero(project, tmp_path):
    path = tmp_path / "vectors.npy"
    np.save(path, low_rank_vectors(300, 32, rank=8).numpy())
    failed = torchrun(
        [
            "data=vectors",
            f"data.path={path}",
            "encoder.dim=8",
            "encoder._target_=helpers.failing.FailsOnRankOne",
            *TRAIN,
        ],
        tmp_path,
    )
    assert failed.returncode != 0
    runs = store_runs(tmp_path, "simreduce-vectors")
    assert list(runs.status) == ["FAILED"]
    assert runs["tags.error"][0].startswith("RankFailed: rank 1: RuntimeError: rank 1 failed on purpose")
    for rank in (0, 1):  # torchrun's summary lists every rank that did not end well
        assert f"rank      : {rank} (local_rank: {rank})" in failed.stderr
