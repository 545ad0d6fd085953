import pytest
import torch

from simreduce.reducers.losses import (
    cosine_similarity_loss,
    gram_is_cheaper,
    gram_prefix_losses,
    pairwise_cosine,
    pairwise_prefix_losses,
    prefix_cosine_losses,
)

BOTH_WAYS = pytest.mark.parametrize("losses", [pairwise_prefix_losses, gram_prefix_losses])


def test_identity_map_has_zero_loss():
    x = torch.randn(20, 8)
    assert cosine_similarity_loss(x, x).item() < 1e-10


def test_scaling_rows_keeps_loss_zero():
    x = torch.randn(10, 5)
    assert cosine_similarity_loss(x, x * (torch.rand(10, 1) + 0.1)).item() < 1e-10


@BOTH_WAYS
def test_matches_hand_computed_three_vectors(losses):
    original = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    reduced = torch.tensor([[1.0], [1.0], [-1.0]])
    # Original pairs (0,1),(0,2),(1,2): 0, 1/sqrt2, 1/sqrt2. Reduced: 1, -1, -1.
    s = 2**-0.5
    expected = ((0 - 1) ** 2 + (s + 1) ** 2 + (s + 1) ** 2) / 3
    assert torch.isclose(losses(original, reduced, [1])[0], torch.tensor(expected))
    assert torch.isclose(cosine_similarity_loss(original, reduced), torch.tensor(expected))


@BOTH_WAYS
def test_a_batch_of_one_vector_is_refused(losses):
    with pytest.raises(ValueError, match="a batch of 1 vector"):
        losses(torch.randn(1, 6), torch.randn(1, 2), [2])


@BOTH_WAYS
def test_zero_row_gives_no_nan(losses):
    original = torch.randn(4, 6)
    reduced = torch.randn(4, 2)
    reduced[1] = 0
    loss = losses(original, reduced, [2])
    assert torch.isfinite(loss).all()
    loss_grad = torch.zeros(4, 2, requires_grad=True)
    losses(original, loss_grad, [2]).sum().backward()
    assert torch.isfinite(loss_grad.grad).all()


def test_pairwise_cosine_diagonal_is_one():
    s = pairwise_cosine(torch.randn(7, 3))
    assert torch.allclose(s.diagonal(), torch.ones(7), atol=1e-6)
    assert torch.allclose(s, s.T)


def test_prefix_losses_are_each_prefix_own_cosine_loss():
    g = torch.Generator().manual_seed(0)
    original, reduced = torch.randn(20, 12, generator=g), torch.randn(20, 8, generator=g)
    reduced[3, :2] = 0  # a row whose first prefix is zero: cosine 0, as `pairwise_cosine` gives it
    expected = torch.stack([cosine_similarity_loss(original, reduced[:, :d]) for d in (2, 5, 8)])
    torch.testing.assert_close(prefix_cosine_losses(original, reduced, [2, 5, 8]), expected)


def test_the_two_ways_agree_on_losses_and_gradients_down_to_a_millionth_of_the_similarities():
    """The Gram way subtracts terms ~N^2 * mean(S^2) to get a loss that can be a millionth of that: in float64 it
    still matches the pairwise one on a near-perfect reduction, zero rows included."""
    g = torch.Generator().manual_seed(0)
    original = (torch.randn(40, 10, generator=g) + 1) @ torch.randn(10, 12, generator=g)  # rank 10
    original[5] = 0
    axes = torch.linalg.svd(original.double(), full_matrices=False).Vh[:10].T
    reduced = original.double() @ axes + 1e-2 * torch.randn(40, 10, generator=g).double()  # near-isometric
    reduced[5] = 0
    reduced.requires_grad_()
    found = {}
    for way in (pairwise_prefix_losses, gram_prefix_losses):
        reduced.grad = None
        losses = way(original.double(), reduced, [3, 6, 10])
        losses.sum().backward()
        found[way] = losses.detach(), reduced.grad.clone()
    (pairwise, pairwise_grad), (gram, gram_grad) = found.values()
    assert pairwise[-1] < 1e-6 * pairwise_cosine(original).square().mean()  # the last prefix's loss is tiny
    torch.testing.assert_close(gram, pairwise, rtol=1e-6, atol=0)
    torch.testing.assert_close(gram_grad, pairwise_grad, rtol=1e-6, atol=1e-12)


def test_large_batches_take_the_gram_way_small_ones_and_apples_gpu_the_pairwise_way(monkeypatch):
    assert not gram_is_cheaper(256, 384, [256])
    assert gram_is_cheaper(4096, 384, [256])
    assert not gram_is_cheaper(1024, 2048, [16, 32, 64, 128, 256])  # a wide input makes its products dearer
    called = []
    for way in ("gram_prefix_losses", "pairwise_prefix_losses"):
        monkeypatch.setattr(
            f"simreduce.reducers.losses.{way}", lambda *args, way=way: called.append((way, len(args[0])))
        )

    class OnMps(torch.Tensor):  # Apple's GPU, which has no float64
        device = torch.device("mps")

    x = torch.randn(4096, 384)
    prefix_cosine_losses(x, x[:, :8], [4, 8])
    prefix_cosine_losses(x[:8], x[:8, :4], [4])
    prefix_cosine_losses(x.as_subclass(OnMps), x[:, :8].as_subclass(OnMps), [4, 8])
    assert called == [("gram_prefix_losses", 4096), ("pairwise_prefix_losses", 8), ("pairwise_prefix_losses", 4096)]
