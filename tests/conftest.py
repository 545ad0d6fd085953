"""Shared fixtures: a tiny random Llama and its words file, built once per session, and a private project root."""

import os

# One thread per process, set before torch loads here and inherited by every process a test starts: the suite
# runs a worker per core, and torch's OpenMP threads crawl when they outnumber the cores (each small op waits at
# a barrier for a thread that is not running; measured, a 16-d training took 14.8 s on 2 threads with the other
# core busy, 0.8 s on 1).
os.environ["OMP_NUM_THREADS"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from helpers.project import seed_store, store_uri  # noqa: E402
from helpers.tiny_model import WORDS, build_tiny_llama  # noqa: E402

from simreduce.experiment.tracking import TrackingStore  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def words_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("words") / "words.txt"
    path.write_text("\n".join(WORDS) + "\n")
    return path


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow store with its schema made, once: creating one costs seconds, copying it milliseconds."""
    root = tmp_path_factory.mktemp("empty-store")
    TrackingStore.create(store_uri(root)).all_experiment_ids()
    return root / "mlruns" / "mlflow.db"


@pytest.fixture
def project(tmp_path, monkeypatch, empty_store) -> Path:
    """A private project root: its own (empty) MLflow store and vector cache."""
    monkeypatch.setenv("SIMREDUCE_ROOT", str(tmp_path))
    return seed_store(tmp_path, empty_store)
