"""A source's vectors -> seeded train/val split -> batches for Lightning."""

import hashlib
import json
import logging
from collections.abc import Callable, Iterator

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from simreduce.runtime.checks import is_positive_int
from simreduce.runtime.distributed import share
from simreduce.runtime.errors import SimreduceError
from simreduce.vectors.rows import MIN_DIRECTIONS, distinct_directions
from simreduce.vectors.sources import VectorSource

log = logging.getLogger(__name__)


class BatchStream(IterableDataset):
    """An endless stream of batches of the rows `rows` of `vectors` [N, D]: all of them as one batch when they
    fit in `batch_size`, else seeded shuffled mini-batches, epoch after epoch. Training is bounded by steps, so
    Lightning never restarts a loader.

    Mini-batches are gathered from `vectors` by index, so the stream holds no copy of the training rows and
    its memory beyond `vectors` is one batch [batch_size, D]. The full batch is gathered once, on `device`,
    so an accelerator receives it once rather than every step.

    Over several processes (`trainer=ddp`), rank `rank` of `world_size` yields its contiguous share of each batch
    of the same seeded order: the shares in rank order are the batch one process would see, which the encoder's
    loss gathers back (`TrainedReducer.global_batch`).
    """

    def __init__(
        self,
        vectors: torch.Tensor,
        rows: torch.Tensor,
        batch_size: int,
        seed: int,
        device: torch.device | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.vectors = vectors
        self.rows = rows
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        n = len(self.rows)
        if self.batch_size >= n:
            batch = self.vectors[share(self.rows, self.rank, self.world_size)].to(self.device)
            while True:
                yield batch
        generator = torch.Generator().manual_seed(self.seed)
        while True:
            order = self.rows[torch.randperm(n, generator=generator)]
            # A last batch of one row has no pairs; it joins the next epoch instead.
            for start in range(0, n - 1, self.batch_size):
                yield self.vectors[share(order[start : start + self.batch_size], self.rank, self.world_size)]


class RowBatches(Dataset):
    """The rows `rows` of `vectors` [N, D] in order, as consecutive batches [<= batch_size, D], each gathered
    when it is asked for; a last batch of one row (no pairs) is left out. Rank `rank` of `world_size` gets its
    share of each batch, as from `BatchStream`."""

    def __init__(self, vectors: torch.Tensor, rows: torch.Tensor, batch_size: int, rank: int = 0, world_size: int = 1):
        self.vectors = vectors
        self.rows = rows
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        full, rest = divmod(len(self.rows), self.batch_size)
        return full + (rest >= 2)

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < len(self):
            raise IndexError(i)
        batch = self.rows[i * self.batch_size : (i + 1) * self.batch_size]
        return self.vectors[share(batch, self.rank, self.world_size)]


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded permutation of [0, n) cut into (train, val) index tensors, each kept sorted."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = round(n * val_fraction)
    if n - n_val < 2:
        raise SimreduceError(
            f"data.val_fraction={val_fraction} leaves {n - n_val} training row(s) of {n}: lower it or add rows."
        )
    return order[n_val:].sort().values, order[:n_val].sort().values


def sample_rows(rows: torch.Tensor, max_rows: int, seed: int) -> torch.Tensor:
    """`rows` when there are at most `max_rows` of them, else a seeded sample of `max_rows`, kept sorted."""
    if len(rows) <= max_rows:
        return rows
    picked = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:max_rows]
    return rows[picked].sort().values


class VectorDataModule(pl.LightningDataModule):
    """A source's vectors, split into train/val by a seeded permutation and served as batches.

    `source` builds the source from the settings that are not the split's (`source_settings`): its class
    (`WordSource`, `TextSource`, `VectorFileSource`), so that each setting is named once, in the YAML of
    `conf/data/` and in the source. `prepare_data` builds the source's cache if it is missing; `setup` loads and
    splits. The vectors are loaded once per process and kept: a large cache is read and hashed once, whoever calls
    these hooks. `name` names the data in the experiment and the registered model (`simreduce-words-minilm`).
    """

    def __init__(
        self,
        source: Callable[..., VectorSource],
        name: str,
        val_fraction: float = 0.2,
        batch_size: int = 1024,
        seed: int = 0,
        max_fit_rows: int = 100_000,
        **source_settings,
    ):
        super().__init__()
        if not 0 <= seed < 2**32:  # numpy's and Lightning's range
            raise SimreduceError(f"seed={seed} is outside [0, 2**32): use e.g. seed=0.")
        if batch_size < 2:
            raise SimreduceError(f"data.batch_size={batch_size} is below 2: a batch needs pairs.")
        if not is_positive_int(max_fit_rows) or max_fit_rows < 2:
            raise SimreduceError(f"data.max_fit_rows={max_fit_rows!r} must be an integer of at least 2, e.g. 100000.")
        if not 0 <= val_fraction < 1:
            raise SimreduceError(
                f"data.val_fraction={val_fraction} is outside [0, 1): use e.g. 0.2, or 0 for no split."
            )
        source = source(**source_settings)
        self.source = source
        self.name = name
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.seed = seed
        self.max_fit_rows = max_fit_rows
        self.ids: list[str] | None = None
        self.vectors: torch.Tensor | None = None
        self.train_idx: torch.Tensor | None = None
        self.val_idx: torch.Tensor | None = None
        self.fit_idx: torch.Tensor | None = None
        self.full_batch = False  # training batches: every fit row as one (a full-batch optimiser's) or mini-batches

    def prepare_data(self) -> None:
        if self.vectors is None:
            loaded = self.source.load()
            self.ids, self.vectors = loaded.ids, loaded.vectors

    def setup(self, stage: str | None = None) -> None:
        if self.train_idx is not None:
            return
        self.prepare_data()
        self.train_idx, self.val_idx = split_indices(len(self.ids), self.val_fraction, self.seed)
        self.fit_idx = sample_rows(self.train_idx, self.max_fit_rows, self.seed)
        self._check_directions()
        log.debug(
            "%d vectors x %d dims: %d train, %d val", len(self.ids), self.dim, len(self.train_idx), len(self.val_idx)
        )

    def _check_directions(self) -> None:
        """Refuse training rows with fewer than MIN_DIRECTIONS directions (copies of one vector, one text said 50
        times): their cosines are all alike, so every metric is NaN or perfect by ties. The rows a fit sees are
        counted (every training row up to `max_fit_rows`), and the count stops at MIN_DIRECTIONS."""
        found = distinct_directions(self.vectors, self.fit_idx)
        if found < MIN_DIRECTIONS:
            sampled = f" (a sample of {len(self.train_idx):,})" if len(self.fit_idx) < len(self.train_idx) else ""
            raise SimreduceError(
                f"the {len(self.fit_idx):,} training rows{sampled} of {self.source.kind} {self.name!r} hold only "
                f"{found} distinct row(s) after L2 normalisation: their cosine similarities are all alike, with "
                f"nothing to keep; give rows of at least {MIN_DIRECTIONS} different directions (copies of one "
                "vector or text are one)."
            )

    def identity(self) -> str:
        """A hash of what makes two runs' scores comparable: the same vectors (source key and ids), split the
        same way. Batch size and training settings are left out: they change the model, not the data."""
        found = {"source": self.source.cache_key(), "ids": self.ids, "val": self.val_fraction, "seed": self.seed}
        return hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @property
    def train_vectors(self) -> torch.Tensor:
        """A gathered copy of the training rows [N_train, D]: take it once per use, not per access."""
        return self.vectors[self.train_idx]

    @property
    def fit_vectors(self) -> torch.Tensor:
        """A gathered copy of the rows a closed-form fit, the encoder's start and the reference figures see: every
        training row up to `max_fit_rows`, a seeded sample above (1M x 768 training rows would copy 3 GB)."""
        return self.vectors[self.fit_idx]

    def train_dataloader(self) -> DataLoader:
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        rows, size = (self.fit_idx, len(self.fit_idx)) if self.full_batch else (self.train_idx, self.batch_size)
        stream = BatchStream(self.vectors, rows, size, self.seed, device, *self._rank())
        return DataLoader(stream, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(RowBatches(self.vectors, self.val_idx, self.batch_size, *self._rank()), batch_size=None)

    def _rank(self) -> tuple[int, int]:
        """(rank, world size) of the Trainer's processes, whose shares of each batch the loaders serve."""
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
