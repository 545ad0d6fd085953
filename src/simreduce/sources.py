"""Sources: where a job's vectors come from. Each turns its configuration into ids and [N, D] float32 vectors,
with a cache key that names everything that makes them; the data module and `compress` read vectors only
through one.

Today's source is words (the most frequent English words, or a file of them) embedded by a model. A new kind
(a file of vectors, a corpus of texts) is a new class with the same three members and a config in `conf/data/`.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from simreduce.cache import VectorCache
from simreduce.embedding import Embedder
from simreduce.words import load_words


@dataclass(frozen=True)
class Vectors:
    """`ids` [N] name the rows of `vectors` [N, D] float32 (for words, the words themselves)."""

    ids: list[str]
    vectors: torch.Tensor


class VectorSource(Protocol):
    kind: str  # names the source in registered model names (`simreduce-words-minilm`)

    def ids(self) -> list[str]:
        """The row ids, read and validated without loading a model: bad input fails here, in milliseconds."""

    def cache_key(self) -> dict[str, str]:
        """Everything that makes the vectors what they are, besides the ids."""

    def load(self) -> Vectors:
        """The ids and their vectors, built (and cached) on first use."""


class WordSource:
    """Words embedded by a model: `words_file` (one word a line) when given, else the `n_words` most frequent
    English words; vectors cached in `cache_dir` under the embedder's key and the word list."""

    kind = "words"

    def __init__(
        self, embedder: Embedder, cache_dir: str | Path, n_words: int = 512, words_file: str | None = None
    ):
        self.embedder = embedder
        self.cache = VectorCache(cache_dir)
        self.n_words = n_words
        self.words_file = words_file
        self._words: list[str] | None = None

    def ids(self) -> list[str]:
        if self._words is None:
            self._words = load_words(self.n_words, self.words_file)
        return self._words

    def cache_key(self) -> dict[str, str]:
        return self.embedder.cache_key()

    def load(self) -> Vectors:
        words = self.ids()
        return Vectors(words, self.cache.get_or_build(self.cache_key(), words, self.embedder.embed))
