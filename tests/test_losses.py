import torch

from simreduce.losses import cosine_similarity_loss, pairwise_cosine, prefix_cosine_losses


def test_identity_map_has_zero_loss():
    x = torch.randn(20, 8)
    assert cosine_similarity_loss(x, x).item() < 1e-10


def test_scaling_rows_keeps_loss_zero():
    x = torch.randn(10, 5)
    assert cosine_similarity_loss(x, x * (torch.rand(10, 1) + 0.1)).item() < 1e-10


def test_matches_hand_computed_three_vectors():
    original = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    reduced = torch.tensor([[1.0], [1.0], [-1.0]])
    # Original pairs (0,1),(0,2),(1,2): 0, 1/sqrt2, 1/sqrt2. Reduced: 1, -1, -1.
    s = 2**-0.5
    expected = ((0 - 1) ** 2 + (s + 1) ** 2 + (s + 1) ** 2) / 3
    assert torch.isclose(cosine_similarity_loss(original, reduced), torch.tensor(expected))


def test_zero_row_gives_no_nan():
    original = torch.randn(4, 6)
    reduced = torch.randn(4, 2)
    reduced[1] = 0
    loss = cosine_similarity_loss(original, reduced)
    assert torch.isfinite(loss)
    loss_grad = torch.zeros(4, 2, requires_grad=True)
    cosine_similarity_loss(original, loss_grad).backward()
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
