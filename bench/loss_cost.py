"""The two exact ways to the (prefix) cosine losses, timed forward and backward on one batch: [N, N] similarity
matrices against float64 Gram products, for one size and for five nested prefixes, with the one
`prefix_cosine_losses` picks. Its cost model (`gram_is_cheaper`) should pick the faster side in every row."""

import torch
from common import anisotropic_vectors, print_table, seconds

from simreduce.reducers.losses import gram_is_cheaper, gram_prefix_losses, pairwise_prefix_losses


def step_ms(losses, x: torch.Tensor, weight: torch.Tensor, dims: list[int], repeats: int) -> float:
    def step() -> None:
        weight.grad = None
        losses(x, x @ weight.T, dims).sum().backward()

    step()  # warm-up
    return 1e3 * min(seconds(step) for _ in range(repeats))


def run(sizes: list[int], width: int, dims: list[int], repeats: int) -> None:
    rows = []
    for n in sizes:
        x = anisotropic_vectors(n, width)
        weight = (torch.randn(dims[-1], width) / width**0.5).requires_grad_()
        for case in ([dims[-1]], dims):
            pairwise = step_ms(pairwise_prefix_losses, x, weight, case, repeats)
            gram = step_ms(gram_prefix_losses, x, weight, case, repeats)
            picked = "gram" if gram_is_cheaper(n, width, case) else "pairwise"
            faster = "gram" if gram < pairwise else "pairwise"
            rows.append([n, width, ",".join(map(str, case)), f"{pairwise:.1f}", f"{gram:.1f}", picked, faster])
    print_table(
        "Cosine losses of one batch, forward + backward (ms, best of tries)",
        ["rows N", "width D", "prefixes", "pairwise [N,N]", "gram float64", "picked", "faster"],
        rows,
        note="The picked side is the one training uses; 'faster' is what this machine measured.",
    )
