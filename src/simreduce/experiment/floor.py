"""The lowest cosine loss any `dim`-dimensional embedding of the training words can reach.

Eckart–Young (the best rank-`dim` approximation of the cosine matrix) ignores that every reduced vector is
normalised, so it sits below what any reducer can reach. The true floor optimises one free row per word,
which is what `cosine_similarity_loss` sees of any reducer's output; a reducer's final training loss
(= fit/rmse² with full-batch training) divided by it says how much is left on the table.

`simreduce floor [--dims 16,32,...] [hydra overrides]` prints it for the configured words.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from simreduce.experiment.config import CONFIG_DIR
from simreduce.reducers.base import check_dim, check_rank, check_size
from simreduce.reducers.closed_form import cosine_svd_axes
from simreduce.reducers.losses import cosine_similarity_loss

# How far "below the floor" a reducer may appear: the floor is an optimum found in float64, a reducer's loss is
# evaluated in float32, whose rounding alone moves it by about 1e-7 (relative) either way.
FLOOR_RTOL = 1e-6


def cosine_floor(vectors: torch.Tensor, dim: int, max_iter: int = 1000) -> float:
    """[N, D] vectors -> min over Y [N, dim] of cosine_similarity_loss(vectors, Y).

    L-BFGS in float64 from the `svd` baseline's coordinates, which already sit near the optimum, so the search
    starts in the right basin.
    """
    x = vectors.double()
    start = F.normalize(x, dim=1) @ torch.from_numpy(cosine_svd_axes(x, dim)).T
    y = start.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [y], max_iter=max_iter, tolerance_grad=1e-12, tolerance_change=1e-16, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = cosine_similarity_loss(x, y)
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return cosine_similarity_loss(x, y).item()


def floor_table(cfg: DictConfig, dims: Sequence[int] | None = None) -> dict[int, float]:
    """The floor of the configured training words (same words, split and seed as `simreduce train`) per dim
    (default: `floor.dims`)."""
    from simreduce.experiment.config import load_data  # Lightning: only once the config is valid

    setting = "--dims" if dims else "floor.dims"
    dims = list(dims or cfg.floor.dims)
    for dim in dims:
        check_size(dim, setting)
    train_vectors = load_data(cfg.data).train_vectors
    for dim in dims:  # all checked before the first, slow, optimisation
        check_dim(dim, train_vectors.shape[1])
        check_rank(dim, len(train_vectors), "the floor's SVD start")
    return {dim: cosine_floor(train_vectors, dim) for dim in dims}


def floor_report(overrides: Sequence[str], dims: Sequence[int] | None = None) -> list[str]:
    """The floor of `simreduce train`'s config with Hydra `overrides`, as markdown table lines, one per dim."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    rows = [f"| {dim} | {loss:.4e} | {loss**0.5:.5f} |" for dim, loss in floor_table(cfg, dims).items()]
    return ["| dim | floor loss | floor rmse |", "| ---: | ---: | ---: |", *rows]
