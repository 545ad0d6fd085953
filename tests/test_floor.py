import pytest
import torch
from helpers.project import compose_config, tiny_overrides
from helpers.reducers import build, fit_full_batch, low_rank_vectors

from simreduce.cli import main
from simreduce.experiment.config import ROOT_ENV
from simreduce.experiment.floor import FLOOR_RTOL, cosine_floor, floor_table
from simreduce.reducers.losses import cosine_similarity_loss

DIM = 4


@pytest.fixture(scope="module")
def vectors() -> torch.Tensor:
    """[40, 48]: no more words than input dims, so a linear map can place them anywhere, as free coordinates can."""
    return low_rank_vectors(n=40, d=48)


def reducer_loss(name: str, x: torch.Tensor, train: bool = False) -> float:
    """Cosine loss of the default `encoder=name` on x [N, D], after its fit loop when `train`."""
    reducer = build(name, x, dim=DIM)
    if train:
        fit_full_batch(reducer, x, max_steps=reducer.hparams.steps)
    with torch.no_grad():
        return cosine_similarity_loss(x, reducer.net(x)).item()


def test_floor_lies_below_every_reducer(vectors):
    floor = cosine_floor(vectors, DIM)
    classical = {name: reducer_loss(name, vectors) for name in ("pca", "svd", "random")}
    assert floor < 0.99 * min(classical.values()), (floor, classical)
    # Both are optimisers that stop a hair short of their optimum: the floor is a floor to within its own tolerance.
    assert floor <= reducer_loss("cosine", vectors, train=True) * (1 + FLOOR_RTOL)


def test_floor_is_not_beaten_from_random_starts(vectors):
    """L-BFGS from the svd coordinates finds the best basin: free coordinates started at random do no better."""
    floor = cosine_floor(vectors, DIM)
    x = vectors.double()
    for seed in range(3):
        y = torch.randn(len(x), DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        y.requires_grad_(True)
        optimizer = torch.optim.LBFGS([y], max_iter=1000, line_search_fn="strong_wolfe")

        def closure(y=y, optimizer=optimizer):
            optimizer.zero_grad()
            loss = cosine_similarity_loss(x, y)
            loss.backward()
            return loss

        optimizer.step(closure)
        assert cosine_similarity_loss(x, y).item() >= floor * (1 - FLOOR_RTOL)


def test_default_cosine_encoder_ends_within_two_percent_of_the_floor(vectors):
    assert reducer_loss("cosine", vectors, train=True) <= 1.02 * cosine_floor(vectors, DIM)


def test_floor_table_uses_the_configured_training_words_and_falls_with_dim(project, tiny_llama, words_file):
    floors = floor_table(compose_config(tiny_overrides(tiny_llama, words_file)), dims=[2, 4, 8])
    assert list(floors) == [2, 4, 8]
    assert floors[2] > floors[4] > floors[8] > 0


def test_simreduce_floor_prints_one_row_per_dim(tmp_path, monkeypatch, capsys, tiny_llama, words_file):
    monkeypatch.delenv(ROOT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    main(["floor", "--dims", "2,4", *tiny_overrides(tiny_llama, words_file), f"data.cache_dir={tmp_path}"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split("|")[1].strip() for row in rows] == ["2", "4"]
