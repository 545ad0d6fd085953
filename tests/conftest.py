"""Shared fixtures: a tiny random Llama and its words file, built once per session, and a private project root."""

from pathlib import Path

import pytest
from helpers.project import seed_store, store_uri
from helpers.tiny_model import WORDS, build_tiny_llama

from simreduce.tracking import TrackingStore


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
