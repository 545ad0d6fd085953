"""Sources: where a job's vectors come from. Each turns its configuration into ids and [N, D] float32 vectors,
with a cache key that names everything that makes them; the data module and `compress` read vectors only
through one.

Words (the most frequent English words, or a file of them) or a corpus of texts, embedded by a model; a file of
vectors, used as given. A new kind is a new class with the same members and a config in `conf/data/`.
"""

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from simreduce.runtime.errors import SimreduceError
from simreduce.vectors.cache import VectorCache
from simreduce.vectors.embedding import Embedder
from simreduce.vectors.rows import check_enough_rows, check_unique_ids
from simreduce.vectors.sharded_embedding import cached_vectors
from simreduce.vectors.texts import Corpus, read_corpus
from simreduce.vectors.vector_files import VectorFileSpec, VectorTable, bad_rows, bad_rows_message, open_vector_file
from simreduce.vectors.words import load_words

log = logging.getLogger(__name__)


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
    English words; vectors cached in `cache_dir` under the embedder's key and the word list. `min_rows`: 2 to train
    on (pairs), 1 for compress."""

    kind = "words"

    def __init__(
        self,
        embedder: Embedder,
        cache_dir: str | Path,
        n_words: int = 512,
        words_file: str | None = None,
        min_rows: int = 2,
    ):
        self.embedder = embedder
        self.cache = VectorCache(cache_dir)
        self.n_words = n_words
        self.words_file = words_file
        self.min_rows = min_rows
        self._words: list[str] | None = None

    def ids(self) -> list[str]:
        if self._words is None:
            self._words = load_words(self.n_words, self.words_file, self.min_rows)
        return self._words

    def cache_key(self) -> dict[str, str]:
        return self.embedder.cache_key()

    def load(self) -> Vectors:
        words = self.ids()
        return Vectors(
            words, cached_vectors(self.cache, self.cache_key(), words, lambda rows: self.embedder.embed(words[rows]))
        )


class VectorFileSource:
    """`data=vectors`: a file of embeddings (`vector_files.VECTOR_SUFFIXES`), used as given, memory-mapped;
    rows named by `id_column` (parquet) or by their number. Rows that are NaN/inf or all zero are refused, or
    left out with a warning (`drop_bad_rows`: the kept rows are then a copy in memory)."""

    kind = "vectors"

    def __init__(
        self,
        path: str,
        cache_dir: str | Path,
        key: str | None = None,
        column: str | None = None,
        id_column: str | None = None,
        drop_bad_rows: bool = False,
    ):
        if path is None:
            raise SimreduceError("data=vectors needs data.path=<a file of vectors>, e.g. data.path=embeddings.npy.")
        self.spec = VectorFileSpec(Path(path).expanduser(), key, column, id_column)
        self.cache_dir = Path(cache_dir).expanduser()
        self.drop_bad_rows = drop_bad_rows
        self._ids: list[str] | None = None
        self._opened: VectorTable | None = None

    def ids(self) -> list[str]:
        if self._ids is None:
            table = self._table()
            ids = table.ids if table.ids is not None else [str(i) for i in range(len(table.vectors))]
            check_enough_rows(len(ids), self.spec.path)  # for training: compress takes a single vector too
            check_unique_ids(ids, self.spec.path, self.spec.id_column)
            self._ids = ids
        return self._ids

    def _table(self) -> VectorTable:
        """The file, opened once: a cast or a parquet conversion (and its warning) happens once."""
        if self._opened is None:
            self._opened = open_vector_file(self.spec, self.cache_dir)
        return self._opened

    def cache_key(self) -> dict[str, str]:
        return self.spec.fingerprint()

    def load(self) -> Vectors:
        ids, vectors = self.ids(), self._table().vectors
        bad = bad_rows(vectors)
        if len(bad):
            where, named = f"data.path={str(self.spec.path)!r}", [ids[i] for i in bad[:5]]
            if not self.drop_bad_rows:
                raise SimreduceError(
                    bad_rows_message(where, len(bad), named, "fix them, or pass data.drop_bad_rows=true")
                )
            log.warning(bad_rows_message(where, len(bad), named, "left out (data.drop_bad_rows=true)"))
            kept = np.setdiff1d(np.arange(len(ids)), bad)
            ids, vectors = [ids[i] for i in kept], vectors[kept]
            check_enough_rows(len(ids), self.spec.path)
        return Vectors(ids, torch.from_numpy(vectors))  # a copy-on-write mapping: a write never reaches the file


class TextSource:
    """`data=texts`: a corpus (`texts.TEXT_SUFFIXES`) embedded by a model, with the model's own
    sentence-transformers pooling when it has one; cached like words, under the texts' content hash. `min_rows`:
    2 to train on (pairs), 1 for compress."""

    kind = "texts"

    def __init__(
        self,
        embedder: Embedder,
        path: str,
        cache_dir: str | Path,
        column: str | None = None,
        id_column: str | None = None,
        max_length: int | None = None,
        min_rows: int = 2,
    ):
        if path is None:
            raise SimreduceError("data=texts needs data.path=<a file of texts>, e.g. data.path=corpus.txt.")
        self.embedder = embedder
        self.path = Path(path).expanduser()
        self.column = column
        self.id_column = id_column
        self.max_length = max_length
        self.min_rows = min_rows
        self.cache = VectorCache(cache_dir)
        self._corpus: Corpus | None = None
        self._key: dict[str, str] | None = None

    def corpus(self) -> Corpus:
        if self._corpus is None:
            self._corpus = read_corpus(self.path, self.column, self.id_column, self.min_rows)
        return self._corpus

    def ids(self) -> list[str]:
        return self.corpus().ids

    def cache_key(self) -> dict[str, str]:
        """Asked for by the cache and by the data's identity: the corpus is hashed once."""
        if self._key is None:
            texts_sha256 = hashlib.sha256(json.dumps(self.corpus().texts).encode()).hexdigest()
            pooling = self.embedder.text_pooling_key(self.max_length)
            self._key = {**self.embedder.cache_key(), **pooling, "texts": texts_sha256}
        return self._key

    def load(self) -> Vectors:
        corpus = self.corpus()
        vectors = cached_vectors(
            self.cache,
            self.cache_key(),
            corpus.ids,
            lambda rows: self.embedder.embed_texts(corpus.texts[rows], self.max_length),
        )
        return Vectors(corpus.ids, vectors)
