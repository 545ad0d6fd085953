"""Apply a logged reducer to new data: a `.npy` array of vectors, or a words file embedded the way the
reducer's own run embedded its words."""

from pathlib import Path

import numpy as np
from hydra.utils import instantiate

from simreduce import tracking
from simreduce.cache import VectorCache, cached_word_vectors
from simreduce.errors import SimreduceError
from simreduce.paths import default_cache_dir
from simreduce.words import clean_words, read_words_file


def embed_words_file(path: Path, run_id: str) -> np.ndarray:
    """[N, D] vectors of the file's words (blank lines and repeats dropped), with run `run_id`'s embedder."""
    cfg = tracking.run_config(run_id)
    words = clean_words(read_words_file(path), source=str(path))
    cache = VectorCache(cfg.data.cache_dir or default_cache_dir())
    return cached_word_vectors(instantiate(cfg.embedder), words, cache).numpy()


def read_vectors(path: Path) -> np.ndarray:
    try:
        vectors = np.load(path)
    except (OSError, ValueError) as e:
        raise SimreduceError(f"input {str(path)!r} is not a readable .npy array ({e}).") from e
    if not np.issubdtype(vectors.dtype, np.number):
        raise SimreduceError(f"input {str(path)!r} holds {vectors.dtype} values, not numbers.")
    return vectors


def compress_file(uri: str, model_uri: str, input_path: Path, output_path: Path) -> np.ndarray:
    """Reduce `input_path` (`.npy` [N, D], or a text file of words) with `model_uri`, write `output_path`
    ([N, dim] float32 `.npy`), and return the reduced vectors."""
    if not input_path.is_file():
        raise SimreduceError(f"input file {str(input_path)!r} does not exist: pass a .npy array or a words file.")
    reducer = tracking.load_reducer(uri, model_uri)
    if input_path.suffix == ".npy":
        vectors = read_vectors(input_path)
    else:
        vectors = embed_words_file(input_path, reducer.run_id)
    if vectors.ndim != 2 or vectors.shape[1] != reducer.in_dim:
        raise SimreduceError(
            f"input {str(input_path)!r} has shape {list(vectors.shape)} but {model_uri} takes [N, {reducer.in_dim}] "
            "vectors: embed them with the model the reducer was trained on."
        )
    reduced = reducer.reduce(vectors).astype(np.float32)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(output_path, reduced)
    return reduced
