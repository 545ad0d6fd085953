"""The nested (Matryoshka) cosine encoder: one map whose first d outputs are a good d-dim reduction for every
d in `dims` (Kusupati et al., 2022; sentence-transformers' `MatryoshkaLoss` and `truncate_dim`)."""

from collections.abc import Sequence

import torch
from torch import nn

from simreduce.reducers.base import Candidate, prefix_map
from simreduce.reducers.cosine import DEFAULT_LR, CosineEncoder
from simreduce.runtime.checks import is_positive_int
from simreduce.runtime.errors import SimreduceError

# How much faster L-BFGS moves along the output rotation than along the map's own coordinates (`cayley_rotation`):
# too small and the prefixes' compromise stays lost among the steeper directions, too large and the rotation
# becomes the steep direction itself, so L-BFGS again takes more steps to the plateau.
ROTATION_SCALE = 100.0


def cayley_rotation(generator: torch.Tensor, scale: float = ROTATION_SCALE) -> torch.Tensor:
    """[n, n] -> the orthogonal (I + A)^-1 (I - A) of the skew-symmetric A = scale (U - U^T), U the strict upper
    triangle of `generator`: the identity at zero, and cheaper than the matrix exponential (one solve)."""
    upper = generator.triu(1)
    skew = scale * (upper - upper.T)
    eye = torch.eye(len(generator), dtype=generator.dtype, device=generator.device)
    return torch.linalg.solve(eye + skew, eye - skew)


# Each prefix is a loss term every training step and a candidate run per stored form: 64 prefixes trained at
# 5.6 s a step and made 128 runs. 16 is a doubling ladder from 1 to 32768, more than any width needs.
MAX_PREFIXES = 16


def check_prefix_count(dims: object) -> None:
    """Refuse more than MAX_PREFIXES sizes in `encoder.dims` in one line naming the count and its cost; anything
    that is not a list is left to `check_dims`."""
    if isinstance(dims, Sequence) and not isinstance(dims, str) and len(dims) > MAX_PREFIXES:
        raise SimreduceError(
            f"encoder.dims lists {len(dims)} sizes, more than {MAX_PREFIXES}: each is a loss term every training "
            f"step and a candidate run per stored form (eval.precisions); keep at most {MAX_PREFIXES}, e.g. a "
            "doubling ladder [16, 32, 64, 128, 256]."
        )


def check_dims(dims: object, in_dim: int) -> list[int]:
    """`encoder.dims` as a list of sizes, refused in one line unless they are at most MAX_PREFIXES distinct
    positive integers, ascending, each below the input width `in_dim`."""
    example = "e.g. [16, 32, 64, 128, 256]"
    check_prefix_count(dims)
    if isinstance(dims, str | int) or not dims or not all(is_positive_int(d) for d in dims):
        raise SimreduceError(f"encoder.dims={dims!r} must be a list of positive integer sizes, {example}.")
    dims = list(dims)
    if dims != sorted(set(dims)):
        raise SimreduceError(f"encoder.dims={dims} must be ascending without repeats, {example}.")
    if dims[-1] >= in_dim:
        raise SimreduceError(
            f"encoder.dims={dims} reaches {dims[-1]}, not below the input width {in_dim}: nothing would be "
            "compressed; keep every size below it."
        )
    return dims


class NestedCosineEncoder(CosineEncoder):
    """A `CosineEncoder` to `max(dims)` outputs trained on the weighted sum of each prefix's cosine-similarity
    loss; every prefix is a candidate (`nested-d0064`).

    Each prefix's loss is weighted by 1 / (its loss at the start x the number of prefixes), so the objective
    is the mean of the losses relative to where they started: equal raw weights would let the small prefixes,
    whose losses are far larger, decide everything. The SVD start's prefixes are already the PCA of every
    size, so the start is nested and training only refines it.

    L-BFGS (full batch) also moves a rotation of the outputs (`output_rotation`, folded into the map when
    training ends). The whole map's loss does not change under it, but every smaller prefix's does: it is the
    direction the prefixes compromise along, and in the map's own coordinates it is lost among much steeper ones
    (the largest prefix's loss starts orders of magnitude below the smallest's), so L-BFGS creeps along it.
    Scaled by `ROTATION_SCALE` the rotation is as steep as the rest: L-BFGS reaches the plateau in far fewer
    steps, and lower. Adam scales each coordinate's steps itself and would turn the rotation that much faster,
    so it trains without one.

    Adam (mini-batches) peaks at `adam_lr` when `lr` is null, 5x `cosine`'s 1e-4: each row's step is a
    compromise between the prefixes it belongs to, and at `cosine`'s rate the one-cycle schedule ends before that
    compromise is reached; at `adam_lr` its config's `steps` reach it. L-BFGS's step scale stays 1.0.
    """

    kind = "nested"

    def __init__(self, in_dim: int, dims: Sequence[int], dim: int | None = None, adam_lr: float = 5e-4, **settings):
        dims = check_dims(dims, in_dim)
        if dim is not None and dim != dims[-1]:
            raise SimreduceError(
                f"encoder.dim={dim} is not the largest of encoder.dims={dims}: a nested encoder's width is its "
                "largest prefix; set encoder.dims instead."
            )
        if not (isinstance(adam_lr, int | float) and adam_lr > 0):
            raise SimreduceError(f"encoder.adam_lr={adam_lr!r} must be a positive number.")
        super().__init__(in_dim, dims[-1], **settings)
        self.dims = dims
        self.default_lr = {**DEFAULT_LR, "adam": adam_lr}
        self.register_buffer("term_weights", torch.full((len(dims),), 1 / len(dims)), persistent=False)
        self.register_parameter("output_rotation", None)  # while L-BFGS trains: see the class docstring

    def fit(self, train_vectors: torch.Tensor) -> "NestedCosineEncoder":
        super().fit(train_vectors)
        if self.optimizer_name == "lbfgs":
            self.output_rotation = nn.Parameter(torch.zeros(self.dim, self.dim))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.output_rotation is None:
            return self.net(x)
        return self.net(x) @ cayley_rotation(self.output_rotation).T

    def on_fit_end(self) -> None:
        """The rotation folded into the last layer (it has no bias): the logged map is `net` alone."""
        super().on_fit_end()
        if self.output_rotation is not None:
            with torch.no_grad():
                last = self.net[-1]
                last.weight.copy_(cayley_rotation(self.output_rotation) @ last.weight)
            self.output_rotation = None

    def term_names(self) -> list[str]:
        return [f"loss_d{d:04d}" for d in self.dims]

    def calibrate_loss(self, sample: torch.Tensor) -> None:
        start = self.loss_terms(sample)
        self.term_weights = torch.where(start > 0, 1 / (len(start) * start), 1 / len(start)).to(start)
        super().calibrate_loss(sample, (start @ self.term_weights).item())  # one pass over the batch, not two

    def candidates(self, precisions: Sequence[str] = ("float32",)) -> list[Candidate]:
        """Every prefix at every precision, the whole map at float32 first (the training run's own candidate);
        one map per prefix, shared by its precisions, and the whole map is `net` itself."""
        largest_first = sorted(self.dims, key=lambda d: d != self.dim)
        maps = {d: self.net if d == self.dim else prefix_map(self.net, d) for d in largest_first}
        return [
            Candidate(self.kind, d, maps[d], precision, tuple(p for p in self.dims if p <= d))
            for d in largest_first
            for precision in precisions
        ]
