"""The neighbour-aware objective (`encoder.loss=neighbours`), the full batch the encoder trains on by default, and
the guard that keeps the start when training ends below it."""

import math

import pytest
import torch
from helpers.project import compose_config
from helpers.reducers import D, build, fit_full_batch, low_rank_vectors
from hydra.utils import instantiate
from test_scale import CountingSource

from simreduce.experiment.settings import job_name
from simreduce.reducers import losses
from simreduce.reducers.cosine import CosineEncoder
from simreduce.reducers.guard import KeepBetterMap, kept_neighbours
from simreduce.reducers.losses import (
    Neighbours,
    batch_neighbours,
    neighbour_prefix_losses,
    pairwise_cosine,
    prefix_cosine_losses,
)
from simreduce.reducers.nearest import row_neighbours
from simreduce.reducers.nested import NestedCosineEncoder
from simreduce.runtime.errors import SimreduceError
from simreduce.vectors.data import VectorDataModule


def test_matches_hand_computed_three_vectors():
    original = torch.tensor([[1.0, 0.0], [2.0, 1.0], [0.0, 1.0]])
    reduced = torch.tensor([[1.0], [1.0], [-1.0]])
    # Nearest other by cosine: 0 -> 1 (2/sqrt5), 1 -> 0 (2/sqrt5), 2 -> 1 (1/sqrt5). Reduced cosines: 1, 1, -1.
    neighbours = batch_neighbours(original, k=1)
    assert neighbours.rows.flatten().tolist() == [1, 0, 1]
    expected = (2 * (1 - 2 / math.sqrt(5)) ** 2 + (1 + 1 / math.sqrt(5)) ** 2) / 3
    assert neighbour_prefix_losses(reduced, neighbours, [1]).item() == pytest.approx(expected, rel=1e-6)


def test_listwise_matches_a_hand_computed_kl_of_one_row():
    reduced = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, -1.0]])  # row 0's cosines to rows 1 and 2: both 1/sqrt2
    neighbours = Neighbours(torch.tensor([[1, 2], [0, 2], [0, 1]]), torch.tensor([[0.8, 0.4], [0.5, 0.5], [0.5, 0.5]]))
    wanted = [math.exp(4) / (math.exp(4) + math.exp(2)), math.exp(2) / (math.exp(4) + math.exp(2))]
    row_zero = sum(p * math.log(p / 0.5) for p in wanted)  # rows 1 and 2: both sides even (cos 1/sqrt2, 0 -> not)
    row_one_found = torch.softmax(torch.tensor([1 / math.sqrt(2), 0.0]) / 0.2, dim=0)
    row_one = sum(0.5 * math.log(0.5 / q) for q in row_one_found.tolist())
    expected = (row_zero + 2 * row_one) / 3
    loss = losses.neighbour_prefix_losses(reduced, neighbours, [2], temperature=0.2)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_the_gradient_is_finite_with_duplicate_rows_ties_and_a_zero_output():
    original = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [2.0, 0.0, 0.0]])
    reduced = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.5, 0.5], [1.0, 0.0]], requires_grad=True)
    for neighbours in (batch_neighbours(original, 2, reduced.detach()), row_neighbours(original, 2, reduced.detach())):
        for temperature in (None, 0.05):
            loss = neighbour_prefix_losses(reduced, neighbours, [1, 2], temperature).sum()
            (gradient,) = torch.autograd.grad(loss, reduced)
            assert torch.isfinite(loss) and torch.isfinite(gradient).all()


def test_blocked_neighbours_of_a_full_batch_are_the_batch_ones():
    x = torch.randn(300, 16)
    blocked, direct = row_neighbours(x, 5, x[:, :4]), batch_neighbours(x, 5, x[:, :4])
    assert torch.equal(blocked.rows, direct.rows)
    torch.testing.assert_close(blocked.similarities, direct.similarities)


def test_each_prefix_has_its_own_neighbour_loss_and_chunks_change_nothing(monkeypatch):
    original, reduced = torch.randn(50, 12), torch.randn(50, 8, requires_grad=True)
    neighbours = batch_neighbours(original, 4)
    together = neighbour_prefix_losses(reduced, neighbours, [2, 5, 8])
    for d, loss in zip([2, 5, 8], together, strict=True):
        alone = pairwise_cosine(reduced[:, :d].detach()).gather(1, neighbours.rows)
        assert loss.item() == pytest.approx((neighbours.similarities - alone).square().mean().item(), rel=1e-5)
    (whole,) = torch.autograd.grad(together.sum(), reduced)
    monkeypatch.setattr(losses, "NEIGHBOUR_CHUNK_ROWS", 7)
    chunked = neighbour_prefix_losses(reduced, neighbours, [2, 5, 8])
    torch.testing.assert_close(chunked, together)
    torch.testing.assert_close(torch.autograd.grad(chunked.sum(), reduced)[0], whole)


@pytest.mark.parametrize(("name", "loss"), [("cosine", "neighbours"), ("nested", "neighbours"), ("nested", "listwise")])
def test_a_neighbour_objective_is_each_width_pairs_loss_plus_its_weighted_neighbour_loss(name, loss):
    x = low_rank_vectors()
    sizes = "encoder.dims=[2,5]" if name == "nested" else "encoder.dim=5"
    settings = [sizes, f"encoder.loss={loss}", "encoder.neighbours_k=3", "encoder.neighbours_weight=2.5"]
    encoder = instantiate(compose_config([f"encoder={name}", *settings]).encoder, in_dim=D).fit(x)
    assert encoder.full_batch and len(encoder.fixed_neighbours.rows) == len(x)
    with torch.no_grad():
        reduced = encoder(x)
        pairs = prefix_cosine_losses(x, reduced, encoder.dims)
        temperature = 0.05 if loss == "listwise" else None
        kept = neighbour_prefix_losses(reduced, batch_neighbours(x, 3, reduced), encoder.dims, temperature)
        torch.testing.assert_close(encoder.loss_terms(x), pairs + 2.5 * kept)
    before = encoder.loss(x).item()
    encoder.guard_rows = None  # the guard may keep the start of so few rows (its own tests are below)
    fit_full_batch(encoder, x, max_steps=10)
    with torch.no_grad():
        assert encoder.loss(x).item() < before


def test_a_mini_batch_finds_its_own_neighbours():
    x = low_rank_vectors()
    encoder = build("cosine", x, "encoder.optimizer=adam", "encoder.loss=neighbours", "encoder.neighbours_k=3")
    assert not encoder.full_batch and encoder.fixed_neighbours is None
    batch = x[:12]
    with torch.no_grad():
        reduced = encoder(batch)
    assert torch.equal(encoder.batch_neighbours(batch, reduced).rows, batch_neighbours(batch, 3, reduced).rows)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"loss": "topk"}, "encoder.loss='topk' is not one of"),
        ({"neighbours_k": 0}, "encoder.neighbours_k=0 must be a positive integer"),
        ({"neighbours_weight": -1.0}, "encoder.neighbours_weight=-1.0 must be a number of at least 0"),
        ({"temperature": 0}, "encoder.temperature=0 must be a positive number"),
    ],
)
def test_bad_objective_settings_are_refused_in_one_line(setting, message):
    with pytest.raises(SimreduceError, match=message):
        CosineEncoder(in_dim=D, dim=4, **setting)


def test_more_neighbours_than_training_rows_is_refused_when_the_rows_are_seen():
    with pytest.raises(SimreduceError, match="encoder.neighbours_k=40 is not below the 40 training rows"):
        CosineEncoder(in_dim=D, dim=4, loss="neighbours", neighbours_k=40).fit(low_rank_vectors())


def test_auto_trains_lbfgs_on_every_fit_row_as_one_batch_and_adam_on_mini_batches():
    x = low_rank_vectors()
    assert build("cosine", x, "data.batch_size=16").optimizer_name == "lbfgs"
    assert build("cosine", x, "data.batch_size=16").full_batch
    assert not build("cosine", x, "data.batch_size=16", "encoder.optimizer=adam").full_batch
    module = VectorDataModule(CountingSource, name="in-memory", batch_size=4, max_fit_rows=10)
    module.setup("fit")
    module.full_batch = True
    (stream,) = [module.train_dataloader().dataset]
    assert torch.equal(next(iter(stream)), module.fit_vectors)


def test_the_start_is_kept_when_training_ends_below_it_and_a_better_end_is_kept():
    x = low_rank_vectors(n=60)
    encoder = build("cosine", x, "encoder.dim=3")
    start = encoder(x).detach()
    guard = KeepBetterMap(encoder.guard_rows)
    guard.on_fit_start(None, encoder)
    with torch.no_grad():
        encoder.net[0].weight = torch.randn(3, D)
    guard.on_fit_end(None, encoder)
    torch.testing.assert_close(encoder(x), start)

    worse = build("cosine", x, "encoder.dim=3", "encoder.init=random")
    guard = KeepBetterMap(worse.guard_rows)
    guard.on_fit_start(None, worse)
    with torch.no_grad():
        worse.net[0].weight = encoder.net[0].weight
    guard.on_fit_end(None, worse)
    torch.testing.assert_close(worse(x), start, atol=1e-4, rtol=1e-4)  # through the whitening's pinv


def test_the_guard_scores_every_prefix_of_a_nested_encoder():
    x = low_rank_vectors(n=60)
    encoder = NestedCosineEncoder(D, [2, 4]).fit(x)
    truth = batch_neighbours(x, 10).rows
    with torch.no_grad():
        out = encoder(x)
    prefixes = [(truth[:, :, None] == batch_neighbours(out[:, :d], 10).rows[:, None, :]).any(2) for d in (2, 4)]
    assert kept_neighbours(encoder, x, truth, encoder.dims) == pytest.approx(
        torch.stack(prefixes).float().mean().item()
    )


@pytest.mark.parametrize("encoder", ["cosine", "nested"])
def test_a_sweep_over_losses_names_each_objective_in_its_runs(encoder):
    """`encoder.loss=pairs,neighbours`: the job's run, its candidates' runs, tags and table rows carry the objective
    when it is not the study's pair loss, so the two are told apart."""
    x = low_rank_vectors()
    for loss, kind in (("pairs", encoder), ("neighbours", f"{encoder}+neighbours")):
        overrides = [f"encoder={encoder}", "encoder.dim=8", f"encoder.loss={loss}"]
        if encoder == "nested":
            overrides.append("encoder.dims=[4,8]")
        assert job_name(compose_config(overrides)) == f"{kind}-d0008"
        built = build(encoder, x, f"encoder.loss={loss}", *overrides[3:], dim=8)
        assert {candidate.run_name for candidate in built.candidates(["float32", "int8"])} >= {
            f"{kind}-d0008",
            f"{kind}-d0008-int8",
        }
