"""The decoder-less cosine encoder (the study's method), trained in whitened coordinates from the SVD start."""

import logging
from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch.nn.utils import parametrize

from simreduce.reducers.base import build_mlp, check_dim, check_lr, method_kind, set_linear
from simreduce.reducers.guard import KeepBetterMap
from simreduce.reducers.losses import (
    Neighbours,
    batch_neighbours,
    check_objective,
    neighbour_prefix_losses,
    prefix_cosine_losses,
)
from simreduce.reducers.nearest import row_neighbours
from simreduce.reducers.spectrum import cosine_spectrum
from simreduce.reducers.training import StopOnPlateau, TrainedReducer
from simreduce.reducers.whitening import WhitenedInput, whitening_basis
from simreduce.runtime.errors import SimreduceError

log = logging.getLogger(__name__)

INITS = ("pca", "random")
OPTIMIZERS = ("auto", "lbfgs", "adam")
GUARD_ROWS = 2000  # training rows whose nearest neighbours `KeepBetterMap` counts
# lbfgs: the step scale its line search starts from; adam: the peak of its one-cycle schedule, in whitened
# coordinates (1e-3 already undoes the svd start's advantage on 2048-d vectors).
DEFAULT_LR = {"lbfgs": 1.0, "adam": 1e-4}
WARMUP_SHARE = 0.05  # of Adam's one-cycle schedule
ROUNDING_LOSS = 1e-10  # a mean squared cosine difference this small is float32 rounding (1e-5 a cosine)


def warmup_share(steps: int) -> float:
    """The share of `steps` Adam's one-cycle schedule warms up over: 5%, but at least two steps (a warm-up that
    ends after exactly one step divides by zero in `OneCycleLR`, e.g. at `encoder.steps=20`)."""
    warmup = max(2, round(WARMUP_SHARE * steps))
    return warmup / steps if warmup < steps else WARMUP_SHARE


class CosineEncoder(TrainedReducer):
    """The decoder-less encoder: `x -> net(x)`, trained so that cos_sim(net(x)) matches cos_sim(x).

    Trained on the first layer's whitened coordinates (`WhitenedInput`), from the `svd` baseline when
    `init=pca`, by one of two optimisers (`optimizer=auto` is lbfgs):
    - `lbfgs`: full-batch L-BFGS (one iteration per step, strong-Wolfe line search), stopped once the loss has
      fallen by less than `plateau_tolerance` (relative) over the last `plateau_patience` steps (`StopOnPlateau`),
      or after `steps`. Its one batch is every training row up to `data.max_fit_rows` (a seeded sample above, the
      rows `fit` sees; `full_batch` tells the data module): the Gram-form loss costs O(N D^2) a step, and on real
      sentences this ends as high as 1,000 Adam steps on mini-batches, in a twentieth of the time.
    - `adam`: Adam on shuffled mini-batches of `data.batch_size` (each batch's loss, so memory grows with the batch,
      not with N), with a one-cycle schedule (5% warm-up to `lr`, cosine decay) over exactly `steps` steps.
    The objective (`loss`): `pairs`, the mean squared error of every pair's cosine, or `neighbours`, that plus
    `neighbours_weight` times the same error over the pairs a search gets right or wrong: each row's `neighbours_k`
    nearest rows of the batch by original cosine, and its `neighbours_k` nearest by the output's (a full batch's
    found once, in blocks, the output's from the start).
    Training ends on the start's map when that keeps more of a slice of training rows' nearest neighbours than the
    trained one (`KeepBetterMap`): the loss is a proxy for search, and an end below the start is never kept.
    Over several processes (`trainer=ddp`) both are sharded alike: each rank encodes its share of the batch, the
    loss is the whole batch's on every rank (`global_batch`), so every rank holds the same gradient and takes the
    same step, L-BFGS's line search included.
    """

    kind = "cosine"
    default_lr = DEFAULT_LR  # `lr=null`'s value for each optimiser

    def __init__(
        self,
        in_dim: int,
        dim: int,
        hidden: Sequence[int] = (),
        init: str = "pca",
        optimizer: str = "auto",
        batch_size: int | None = None,
        lr: float | None = None,
        steps: int = 1000,
        plateau_patience: int = 10,
        plateau_tolerance: float = 1e-4,
        loss: str = "pairs",
        neighbours_k: int = 10,
        neighbours_weight: float = 1.0,
        temperature: float = 0.05,
    ):
        super().__init__()
        check_dim(dim, in_dim)
        check_lr(lr)
        if init not in INITS:
            raise SimreduceError(f"encoder.init={init!r} is not one of {INITS}.")
        if optimizer not in OPTIMIZERS:
            raise SimreduceError(f"encoder.optimizer={optimizer!r} is not one of {OPTIMIZERS}.")
        check_objective(loss, neighbours_k, neighbours_weight, temperature)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.kind = method_kind(type(self).kind, loss)
        self.dim = dim
        self.net = build_mlp(in_dim, list(hidden), dim)
        self.dims = [dim]  # the output widths the loss is taken at (a nested encoder: each prefix)
        self.optimizer_name = optimizer
        self.full_batch = False  # set by `fit`: train on one batch of every fit row (the data module serves it)
        self.fixed_neighbours: Neighbours | None = None  # a full batch's, found once by `fit`
        self.guard_rows: torch.Tensor | None = None  # [<= GUARD_ROWS, D] training rows `KeepBetterMap` scores
        self.loss_scale = 1.0
        # The objective weighs `loss_terms` (one term here; a nested encoder has one per prefix).
        self.register_buffer("term_weights", torch.ones(1), persistent=False)

    def fit(self, train_vectors: torch.Tensor) -> "CosineEncoder":
        """Pick the optimiser; start a single linear layer from the `svd` baseline (the PCA of the cosine
        geometry), so training only refines the best projection instead of searching from noise (an MLP keeps
        its random init); then move the first layer to whitened coordinates."""
        n_train = len(train_vectors)
        self.optimizer_name = self.pick_optimizer()
        self.full_batch = self.optimizer_name == "lbfgs"
        picked = torch.randperm(n_train, generator=torch.Generator().manual_seed(0))[:GUARD_ROWS]
        self.guard_rows = train_vectors[picked.sort().values]
        found = cosine_spectrum(train_vectors)
        first = self.net[0]
        if self.hparams.init == "pca" and not self.hparams.hidden:
            if self.dim < n_train:
                set_linear(first, found.axes[: self.dim].numpy())
            else:  # a degenerate size (the study's 1024 of 2048-d, say): the SVD has fewer components than dim
                log.info("dim %d is not below the %d training words: random init", self.dim, n_train)
        parametrize.register_parametrization(first, "weight", WhitenedInput(whitening_basis(found, n_train)))
        if self.hparams.loss != "pairs":
            if self.hparams.neighbours_k >= n_train:
                raise SimreduceError(
                    f"encoder.neighbours_k={self.hparams.neighbours_k} is not below the {n_train} training rows: each "
                    "row needs that many others; lower it or add rows."
                )
            if self.full_batch:  # the start's search: its wrong neighbours are the ones to move
                with torch.no_grad():
                    start = self(train_vectors)
                self.fixed_neighbours = row_neighbours(train_vectors, self.hparams.neighbours_k, start)
        with torch.no_grad():  # the first batch's loss sets the scale (a mini-batch's as well as any)
            self.calibrate_loss(train_vectors if self.full_batch else train_vectors[: self.hparams.batch_size])
        return self

    def calibrate_loss(self, sample: torch.Tensor, start: float | None = None) -> None:
        """Set `loss_scale`, the loss of `sample` at the start (`start`, when the caller has it), which the
        optimiser's loss is divided by. A perfect start (rows of fewer directions than `dim`, which the SVD start
        keeps exactly) has nothing to scale: its loss is float32 rounding; dividing by it would blow that up to NaN."""
        start = self.loss(sample).item() if start is None else start
        self.loss_scale = start if start > ROUNDING_LOSS else 1.0

    def pick_optimizer(self) -> str:
        """`optimizer`, with `auto` resolved: lbfgs on the full batch (see the class docstring)."""
        return "lbfgs" if self.hparams.optimizer == "auto" else self.hparams.optimizer

    def loss_terms(self, batch: torch.Tensor) -> torch.Tensor:
        """[T] the losses the objective weighs by `term_weights`: `batch_terms` of the whole batch (`global_batch`)."""
        return self.batch_terms(*self.global_batch(batch, self(batch)))

    def batch_terms(self, original: torch.Tensor, reduced: torch.Tensor) -> torch.Tensor:
        """[T] the terms for a whole batch, [N, D] and its [N, dim] output, one per width d in `dims` (here the whole
        output): the pair loss of the output's first d values, plus with another `loss` its neighbour term."""
        terms = prefix_cosine_losses(original, reduced, self.dims)
        if self.hparams.loss != "pairs":
            neighbours = self.batch_neighbours(original, reduced)
            temperature = self.hparams.temperature if self.hparams.loss == "listwise" else None
            kept = neighbour_prefix_losses(reduced, neighbours, self.dims, temperature)
            terms = terms + self.hparams.neighbours_weight * kept
        return terms

    def batch_neighbours(self, original: torch.Tensor, reduced: torch.Tensor) -> Neighbours:
        """The `Neighbours` of a batch, [N, D] and its [N, dim] output: the full batch's, found by `fit` from the
        start's output, while training on it (a batch of as many rows, in training mode); else this batch's own."""
        fixed = self.fixed_neighbours
        if fixed is not None and self.training and len(fixed.rows) == len(original):
            return fixed.to(original.device)
        return batch_neighbours(original, self.hparams.neighbours_k, reduced.detach())

    def term_names(self) -> list[str]:
        """The metric names of the terms, logged beside `loss` when there is more than one."""
        return ["loss"]

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        return self.loss_terms(batch) @ self.term_weights

    def log_losses(self, stage: str, terms: torch.Tensor, loss: torch.Tensor | float, rows: int | None = None) -> None:
        """`<stage>/loss` (on the progress bar) and, for several terms, each of them; an epoch's mean weighs each
        batch by `rows`, the whole batch's over several processes (as one process weighs it), not a rank's share."""
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=rows)
        if len(terms) > 1:
            self.log_dict({f"{stage}/{n}": t for n, t in zip(self.term_names(), terms, strict=True)}, batch_size=rows)

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        original, reduced = self.global_batch(batch, self(batch))
        terms = self.batch_terms(original, reduced)
        self.log_losses("val", terms, terms @ self.term_weights, len(original))

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.logger is not None:
            self.logger.log_hyperparams({"optimizer_used": self.optimizer_name})

    def configure_callbacks(self) -> list[pl.Callback]:
        guard = [KeepBetterMap(self.guard_rows)] if self.guard_rows is not None else []
        if self.optimizer_name == "lbfgs":
            return [StopOnPlateau(self.hparams.plateau_patience, self.hparams.plateau_tolerance), *guard]
        return guard

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        optimizer = self.optimizers()
        evaluated: list[torch.Tensor] = []  # the terms at each evaluation; L-BFGS's first is at the step's start

        def closure() -> torch.Tensor:
            # L-BFGS's curvature test (y.s > 1e-10) is absolute and the loss at large dims is tiny, so the
            # optimiser sees the loss relative to where training started (Adam does not mind the scale).
            optimizer.zero_grad()
            terms = self.loss_terms(batch)
            evaluated.append(terms.detach())
            scaled = terms @ self.term_weights / self.loss_scale
            self.manual_backward(scaled)
            return scaled

        loss = optimizer.step(closure=closure).item() * self.loss_scale
        self.log_losses("train", evaluated[0], loss)  # each step's: no mean over batches to weigh
        if self.optimizer_name == "adam":
            self.log("train/lr", optimizer.param_groups[0]["lr"])
            self.lr_schedulers().step()
        return torch.tensor(loss, dtype=torch.float64)  # the step's loss, for StopOnPlateau

    def on_fit_end(self) -> None:
        """Fold the whitening back into a plain linear layer: the logged model is one `nn.Linear` again."""
        super().on_fit_end()
        if parametrize.is_parametrized(self.net[0]):
            parametrize.remove_parametrizations(self.net[0], "weight")

    def configure_optimizers(self):
        lr = self.hparams.lr or self.default_lr[self.optimizer_name]
        if self.optimizer_name == "adam":
            optimizer = torch.optim.Adam(self.parameters(), lr=lr)
            schedule = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=lr, total_steps=self.hparams.steps, pct_start=warmup_share(self.hparams.steps)
            )
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
        # max_eval: by default it is 1.25 * max_iter, which would leave the line search a single evaluation.
        return torch.optim.LBFGS(
            self.parameters(),
            lr=lr,
            max_iter=1,
            max_eval=25,
            history_size=20,
            tolerance_grad=0,
            tolerance_change=0,
            line_search_fn="strong_wolfe",
        )
