import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.reducers import DIM, D, N, build, fit_full_batch, low_rank_vectors
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.random_projection import GaussianRandomProjection
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader

from simreduce.reducers.autoencoder import Autoencoder
from simreduce.reducers.base import apply_net
from simreduce.reducers.cosine import CosineEncoder
from simreduce.reducers.losses import cosine_similarity_loss, pairwise_cosine
from simreduce.runtime.errors import SimreduceError
from simreduce.vectors.data import BatchStream

REDUCERS = ["cosine", "autoencoder", "pca", "svd", "random"]
CLOSED_FORM = ["pca", "svd", "random"]


@pytest.mark.parametrize("name", REDUCERS)
def test_every_reducer_maps_to_dim_through_its_net(name):
    x = low_rank_vectors()
    reducer = build(name, x)
    assert reducer.kind == name
    assert reducer.dim == DIM
    y = reducer.transform(x)
    assert y.shape == (N, DIM)
    with torch.no_grad():
        assert torch.equal(reducer.net(x), y)
    assert reducer.trains == (name in ("cosine", "autoencoder"))
    (candidate,) = reducer.candidates()
    assert (candidate.run_name, candidate.precision) == (f"{name}-d{DIM:04d}", "float32")
    assert torch.equal(apply_net(candidate.net, x), y)


@pytest.mark.parametrize("name", CLOSED_FORM)
def test_closed_form_reducers_are_one_linear_map(name):
    reducer = build(name, low_rank_vectors())
    (linear,) = reducer.net
    assert isinstance(linear, nn.Linear)
    assert linear.weight.dtype == torch.float32


@pytest.mark.parametrize("name", REDUCERS)
def test_same_seed_same_map(name):
    x = low_rank_vectors()
    first, second = build(name, x), build(name, x)
    for a, b in zip(first.net.state_dict().values(), second.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["random", "autoencoder"])
def test_another_seed_another_map(name):
    x = low_rank_vectors()
    with torch.no_grad():
        assert not torch.allclose(build(name, x).transform(x), build(name, x, "seed=1").transform(x))


def test_pca_matches_scikit_learn_transform_including_centring():
    x = low_rank_vectors()
    expected = PCA(DIM).fit(x.double().numpy()).transform(x.double().numpy())
    with torch.no_grad():
        got = build("pca", x).transform(x).double().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_svd_matches_scikit_learn_on_normalised_vectors_and_keeps_cosines_on_raw_ones():
    x = low_rank_vectors()
    unit = F.normalize(x.double(), dim=1).numpy()
    expected = TruncatedSVD(DIM, algorithm="arpack", random_state=0).fit(unit).transform(unit)
    reducer = build("svd", x)
    with torch.no_grad():
        np.testing.assert_allclose(reducer.transform(torch.from_numpy(unit).float()).numpy(), expected, atol=1e-5)
        # Raw rows come out rescaled, which no cosine similarity sees.
        torch.testing.assert_close(
            pairwise_cosine(reducer.transform(x)).double(),
            pairwise_cosine(torch.from_numpy(expected)),
            atol=1e-5,
            rtol=0,
        )


def test_random_projection_matches_scikit_learn_transform():
    x = low_rank_vectors()
    expected = GaussianRandomProjection(DIM, random_state=0).fit(x.numpy()).transform(x.double().numpy())
    with torch.no_grad():
        np.testing.assert_allclose(build("random", x).transform(x).numpy(), expected, atol=1e-4)


def test_cosine_encoder_starts_at_the_svd_baseline():
    x = low_rank_vectors()
    with torch.no_grad():
        start = cosine_similarity_loss(x, build("cosine", x)(x))
        svd = cosine_similarity_loss(x, build("svd", x).transform(x))
    assert start.item() == pytest.approx(svd.item(), rel=1e-4)


@pytest.mark.parametrize("name", ["pca", "svd"])
def test_dim_at_or_above_the_training_words_is_a_clear_error(name):
    with pytest.raises(SimreduceError, match="not below the 8 training words"):
        build(name, low_rank_vectors(n=8), "encoder.dim=8")


def test_cosine_encoder_at_a_degenerate_dim_starts_at_random():
    """The study's sweep reaches dims above its training words (1024 of 2048-d for 410 words): no SVD start."""
    torch.manual_seed(0)
    encoder = build("cosine", low_rank_vectors(n=8), "encoder.dim=8")
    weight = encoder.net[0].weight.detach()
    assert weight.shape == (8, D) and torch.linalg.matrix_rank(weight) == 8


def test_autoencoder_reconstruction_loss_falls():
    x = low_rank_vectors(n=64)
    torch.manual_seed(0)
    autoencoder = Autoencoder(in_dim=D, dim=3)
    with torch.no_grad():
        before = autoencoder.loss(x).item()
    fit_full_batch(autoencoder, x, max_steps=300)
    with torch.no_grad():
        after = autoencoder.loss(x).item()
        assert autoencoder.net(x).shape == (64, 3)
    assert after < 0.3 * before


def test_cosine_encoder_trains_in_whitened_coordinates_and_ends_as_a_plain_linear_map():
    x = low_rank_vectors()
    encoder = build("cosine", x)
    assert parametrize.is_parametrized(encoder.net[0], "weight")
    with torch.no_grad():
        before = encoder.loss(x).item()
    fit_full_batch(encoder, x, max_steps=50)
    assert not parametrize.is_parametrized(encoder.net[0])
    assert isinstance(encoder.net[0].weight, nn.Parameter) and encoder.net[0].weight.shape == (DIM, D)
    with torch.no_grad():
        assert encoder.loss(x).item() < before


def test_rows_of_fewer_directions_than_dim_train_from_their_perfect_start_to_no_nan():
    """3 directions x 100 copies at dim 4: the SVD start keeps them exactly, so its loss is float32 rounding (1e-13),
    which the optimiser's loss was divided by: every step's loss was NaN."""
    x = torch.randn(3, D, generator=torch.Generator().manual_seed(0)).repeat(100, 1)
    encoder = build("cosine", x, dim=4)
    fit_full_batch(encoder, x, max_steps=20)
    with torch.no_grad():
        assert encoder.loss(x).item() < 1e-10 and torch.isfinite(encoder.net(x)).all()


@pytest.mark.parametrize(("optimizer", "picked"), [("auto", "lbfgs"), ("lbfgs", "lbfgs"), ("adam", "adam")])
def test_optimizer_auto_is_lbfgs_on_one_batch_whatever_the_batch_size_and_adam_takes_mini_batches(optimizer, picked):
    encoder = build("cosine", low_rank_vectors(), "data.batch_size=16", f"encoder.optimizer={optimizer}")
    assert encoder.hparams.batch_size == 16
    assert encoder.optimizer_name == picked and encoder.full_batch == (picked == "lbfgs")
    optimizer = encoder.configure_optimizers()
    assert isinstance(optimizer["optimizer"] if picked == "adam" else optimizer, OPTIMIZER_CLASSES[picked])


OPTIMIZER_CLASSES = {"lbfgs": torch.optim.LBFGS, "adam": torch.optim.Adam}


def test_an_unknown_optimizer_is_a_clear_error():
    with pytest.raises(SimreduceError, match="encoder.optimizer='sgd' is not one of"):
        CosineEncoder(in_dim=D, dim=DIM, optimizer="sgd")


def test_adam_on_shuffled_mini_batches_lowers_the_loss_of_all_pairs_over_its_schedule():
    x = low_rank_vectors(n=200)
    encoder = build(
        "cosine",
        x,
        "data.batch_size=32",
        "encoder.steps=150",
        "encoder.lr=1e-2",
        "encoder.init=random",
        "encoder.optimizer=adam",
    )
    with torch.no_grad():
        before = encoder.loss(x).item()
    trainer = pl.Trainer(
        max_steps=150, logger=False, enable_progress_bar=False, enable_checkpointing=False, accelerator="cpu"
    )
    trainer.fit(encoder, DataLoader(BatchStream(x, torch.arange(len(x)), batch_size=32, seed=0), batch_size=None))
    assert trainer.global_step == 150
    learning_rate = trainer.optimizers[0].param_groups[0]["lr"]
    assert learning_rate < 1e-2 * 1e-3  # the one-cycle schedule has run its whole course
    with torch.no_grad():
        assert encoder.loss(x).item() < 0.5 * before


@pytest.mark.parametrize("steps", [1, 2, 3, 20, 40])
def test_adam_runs_its_whole_schedule_for_any_number_of_steps(steps):
    x = low_rank_vectors(n=60)
    encoder = build("cosine", x, "data.batch_size=16", f"encoder.steps={steps}", "encoder.optimizer=adam")
    trainer = pl.Trainer(
        max_steps=steps, logger=False, enable_progress_bar=False, enable_checkpointing=False, accelerator="cpu"
    )
    trainer.fit(encoder, DataLoader(BatchStream(x, torch.arange(len(x)), batch_size=16, seed=0), batch_size=None))
    assert trainer.global_step == steps
