"""Words -> cached vectors -> seeded train/val split -> batches for Lightning."""

import logging
from collections.abc import Iterator

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from simreduce.cache import VectorCache, cached_word_vectors
from simreduce.embedding import WordEmbedder
from simreduce.errors import SimreduceError
from simreduce.paths import default_cache_dir
from simreduce.words import load_words

log = logging.getLogger(__name__)


class BatchStream(IterableDataset):
    """An endless stream of batches of the rows `rows` of `vectors` [N, D]: all of them as one batch when they
    fit in `batch_size`, else seeded shuffled mini-batches, epoch after epoch. Training is bounded by steps, so
    Lightning never restarts a loader.

    Mini-batches are gathered from `vectors` by index, so the stream holds no copy of the training rows and
    its memory beyond `vectors` is one batch [batch_size, D]. The full batch is gathered once, on `device`,
    so an accelerator receives it once rather than every step.
    """

    def __init__(
        self, vectors: torch.Tensor, rows: torch.Tensor, batch_size: int, seed: int, device: torch.device | None = None
    ):
        self.vectors = vectors
        self.rows = rows
        self.batch_size = batch_size
        self.seed = seed
        self.device = device

    def __iter__(self) -> Iterator[torch.Tensor]:
        n = len(self.rows)
        if self.batch_size >= n:
            batch = self.vectors[self.rows].to(self.device)
            while True:
                yield batch
        generator = torch.Generator().manual_seed(self.seed)
        while True:
            order = self.rows[torch.randperm(n, generator=generator)]
            # A last batch of one row has no pairs; it joins the next epoch instead.
            for start in range(0, n - 1, self.batch_size):
                yield self.vectors[order[start : start + self.batch_size]]


class RowBatches(Dataset):
    """The rows `rows` of `vectors` [N, D] in order, as consecutive batches [<= batch_size, D], each gathered
    when it is asked for; a last batch of one row (no pairs) is left out."""

    def __init__(self, vectors: torch.Tensor, rows: torch.Tensor, batch_size: int):
        self.vectors = vectors
        self.rows = rows
        self.batch_size = batch_size

    def __len__(self) -> int:
        full, rest = divmod(len(self.rows), self.batch_size)
        return full + (rest >= 2)

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.vectors[self.rows[i * self.batch_size : (i + 1) * self.batch_size]]


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded permutation of [0, n) cut into (train, val) index tensors, each kept sorted."""
    if not 0 <= val_fraction < 1:
        raise SimreduceError(f"data.val_fraction={val_fraction} is outside [0, 1): use e.g. 0.2, or 0 for no split.")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = round(n * val_fraction)
    if n - n_val < 2:
        raise SimreduceError(
            f"data.val_fraction={val_fraction} leaves {n - n_val} training word(s) of {n}: lower it or add words."
        )
    return order[n_val:].sort().values, order[:n_val].sort().values


class WordVectorDataModule(pl.LightningDataModule):
    """Builds the vector cache in `prepare_data`, loads and splits it in `setup`."""

    def __init__(
        self,
        embedder: WordEmbedder,
        n_words: int = 512,
        words_file: str | None = None,
        val_fraction: float = 0.2,
        batch_size: int = 1024,
        cache_dir: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if batch_size < 2:
            raise SimreduceError(f"data.batch_size={batch_size} is below 2: a batch needs pairs.")
        self.embedder = embedder
        self.n_words = n_words
        self.words_file = words_file
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.cache = VectorCache(cache_dir or default_cache_dir())
        self.seed = seed
        self.words: list[str] | None = None
        self.vectors: torch.Tensor | None = None
        self.train_idx: torch.Tensor | None = None
        self.val_idx: torch.Tensor | None = None

    def _load(self) -> torch.Tensor:
        self.words = self.words or load_words(self.n_words, self.words_file)
        return cached_word_vectors(self.embedder, self.words, self.cache)

    def prepare_data(self) -> None:
        # The vectors are kept, so that neither `setup` nor `Trainer.fit` calling this hook again reads and
        # hashes a large cache file a second time; processes where Lightning skips this hook load in `setup`.
        if self.vectors is None:
            self.vectors = self._load()

    def setup(self, stage: str | None = None) -> None:
        if self.train_idx is not None:
            return
        if self.vectors is None:
            self.vectors = self._load()
        self.train_idx, self.val_idx = split_indices(len(self.words), self.val_fraction, self.seed)
        log.info(
            "%d words x %d dims: %d train, %d val",
            len(self.words),
            self.dim,
            len(self.train_idx),
            len(self.val_idx),
        )

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @property
    def train_vectors(self) -> torch.Tensor:
        return self.vectors[self.train_idx]

    def train_dataloader(self) -> DataLoader:
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        stream = BatchStream(self.vectors, self.train_idx, self.batch_size, self.seed, device)
        return DataLoader(stream, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(RowBatches(self.vectors, self.val_idx, self.batch_size), batch_size=None)
