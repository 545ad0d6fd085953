"""Words -> cached vectors -> seeded train/val split -> batches for Lightning."""

import logging
from collections.abc import Iterator

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from simreduce.cache import VectorCache, cached_word_vectors
from simreduce.embedding import WordEmbedder
from simreduce.errors import SimreduceError
from simreduce.paths import default_cache_dir
from simreduce.words import load_words

log = logging.getLogger(__name__)


class BatchStream(IterableDataset):
    """An endless stream of batches of rows: the whole matrix when it fits in one batch, else shuffled
    mini-batches, epoch after epoch. Training is bounded by steps, so Lightning never restarts a loader."""

    def __init__(self, vectors: torch.Tensor, batch_size: int, seed: int):
        self.vectors = vectors
        self.batch_size = batch_size
        self.seed = seed

    def __iter__(self) -> Iterator[torch.Tensor]:
        n = self.vectors.shape[0]
        if self.batch_size >= n:
            while True:
                yield self.vectors
        generator = torch.Generator().manual_seed(self.seed)
        while True:
            order = torch.randperm(n, generator=generator)
            # A last batch of one row has no pairs; it joins the next epoch instead.
            for start in range(0, n - 1, self.batch_size):
                yield self.vectors[order[start : start + self.batch_size]]


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

    def _load(self) -> torch.Tensor:
        self.words = self.words or load_words(self.n_words, self.words_file)
        return cached_word_vectors(self.embedder, self.words, self.cache)

    def prepare_data(self) -> None:
        self._load()

    def setup(self, stage: str | None = None) -> None:
        if self.vectors is not None:
            return
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

    @property
    def val_vectors(self) -> torch.Tensor:
        return self.vectors[self.val_idx]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(BatchStream(self.train_vectors, self.batch_size, self.seed), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        batches = [b for b in self.val_vectors.split(self.batch_size) if len(b) >= 2]
        return DataLoader(batches, batch_size=None)
