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


# What gloo raised on rank 0 when rank 1 was killed (SIGKILL) in the middle of an all_reduce, torch 2.13.
GLOO_RESET = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:31148: Connection "
    "reset by peer. This is typically caused by a remote worker hanging or bugs in the application. Check the logs of "
    "the remote worker before reporting an error. GLHF! \U0001f3d6\ufe0f"
)
NCCL_LOST = "NCCL error in: ProcessGroupNCCL.cpp:1970, remote process exited or there was a network error, NCCL 2.21.5"


class GroupStore:
    """The group's store as `failures_shared` uses it: what a rank that failed wrote there, if one did."""

    def __init__(self, written: str | None = None):
        self.written = written

    def check(self, keys: list[str]) -> bool:
        return self.written is not None

    def get(self, key: str) -> bytes:
        return self.written.encode()

    def compare_set(self, key: str, expected: str, value: str) -> None:
        self.written = self.written or value


@pytest.mark.parametrize(
    ("error", "found"),
    [
        (RuntimeError(GLOO_RESET), "Read error [127.0.0.1]:31148: Connection reset by peer"),
        (
            RuntimeError("[../gloo/transport/tcp/pair.cc:598] Connection closed by peer [10.0.0.2]:4021"),
            "Connection closed by peer",
        ),
        (
            torch.distributed.DistBackendError(NCCL_LOST),
            "NCCL error in: ProcessGroupNCCL.cpp:1970, remote process exited",
        ),
        (
            torch.distributed.DistBackendError("NCCL communicator was aborted on rank 0.\nmore"),
            "NCCL communicator was aborted on rank 0.",
        ),
        (RuntimeError("rank 1 failed on purpose"), None),
        (ValueError("a bug"), None),
    ],
)
def test_a_collective_broken_by_a_lost_peer_is_told_from_other_errors(error, found):
    assert distributed.lost_peer(error) == found


def test_a_rank_that_died_is_named_by_the_rank_that_survived(monkeypatch):
    """A killed rank writes nothing: rank 0 of two names rank 1 and where to look, rank 1 names rank 0 and
    writes nothing itself (it did not fail on its own), and among more ranks it is "another rank"."""
    monkeypatch.delenv("TORCHELASTIC_ERROR_FILE", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    told = {}
    for rank, size in [(0, 2), (1, 2), (0, 4)]:
        store = GroupStore()
        monkeypatch.setattr(distributed._Group, "store", store)
        monkeypatch.setattr(distributed, "world", lambda rank=rank, size=size: distributed.World(rank, rank, size))
        with pytest.raises(distributed.RankFailed) as failed, distributed.failures_shared():
            raise RuntimeError(GLOO_RESET)
        assert store.written is None
        told[rank, size] = str(failed.value)
    assert told[0, 2] == (
        "rank 1 stopped during the job, so this rank's collective failed (Read error [127.0.0.1]:31148: Connection "
        "reset by peer): see its output and the launcher's summary."
    )
    assert told[1, 2].startswith("rank 0 stopped during the job") and told[0, 4].startswith("another rank stopped")


def test_where_a_dead_ranks_log_is_follows_the_launcher(monkeypatch):
    me = distributed.World(0, 0, 2)
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", "/tmp/torchelastic_x/run_1/attempt_0/0/error.json")
    assert "with torchrun --redirects, /tmp/torchelastic_x/run_1/attempt_0/<its local rank>/stderr.log" in (
        distributed.stopped_rank_message("Connection reset by peer", me)
    )
    monkeypatch.delenv("TORCHELASTIC_ERROR_FILE")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert "the output of SLURM job 4242's tasks (`sacct -j 4242`" in distributed.stopped_rank_message("x", me)


def test_a_rank_that_failed_on_its_own_is_named_with_its_error(monkeypatch):
    monkeypatch.setattr(distributed._Group, "store", GroupStore("rank 1: RuntimeError: rank 1 failed on purpose"))
    monkeypatch.setattr(distributed, "world", lambda: distributed.World(0, 0, 2))
    with pytest.raises(distributed.RankFailed, match="^rank 1: RuntimeError: rank 1 failed on purpose$"):
        with distributed.failures_shared():
            raise RuntimeError(GLOO_RESET)


@pytest.mark.slow
def test_two_processes_train_the_same_weights_and_log_one_run_as_one_process(tmp_path, empty_store, monkeypatch):
    path = tmp_path / "vectors.npy"
    np.save(path, low_rank_vectors(300, 32, rank=8).numpy())
    # The neighbour objective holds both terms: the pairs over the whole batch, and each row's nearest rows, which
    # must be searched for in the batch of both ranks (a rank's share alone would train other weights).
    args = ["data=vectors", f"data.path={path}", "encoder.dim=8", "encoder.optimizer=adam", "encoder.loss=neighbours"]
    args += TRAIN
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


@pytest.mark.slow
def test_a_rank_killed_outright_is_named_by_rank_zero_in_one_line(project, tmp_path):
    path = tmp_path / "vectors.npy"
    np.save(path, low_rank_vectors(300, 32, rank=8).numpy())
    args = ["data=vectors", f"data.path={path}", "encoder.dim=8", "encoder._target_=helpers.failing.KilledOnRankOne"]
    failed = torchrun([*args, *TRAIN], tmp_path)
    assert failed.returncode != 0
    runs = store_runs(tmp_path, "simreduce-vectors")
    assert list(runs.status) == ["FAILED"]
    error = runs["tags.error"][0]
    assert error.startswith("RankFailed: rank 1 stopped during the job, so this rank's collective failed (")
    assert "by peer" in error and "GLHF" not in error
    told = [line for line in failed.stderr.splitlines() if line.startswith("simreduce: error: ")]
    assert told == [f"simreduce: error: {error.removeprefix('RankFailed: ')}"]
    # The one traceback is torchrun's own, of the child that failed: rank 0's Hydra traceback is gone.
    assert failed.stderr.count("Traceback") == 1 and "ChildFailedError" in failed.stderr
