"""Apply a logged reducer to new data: a `.npy` array of vectors, or a words file embedded the way the
reducer's own run embedded its words."""

from pathlib import Path

import numpy as np
from hydra.utils import instantiate

from simreduce.errors import SimreduceError
from simreduce.paths import default_paths
from simreduce.sources import WordSource
from simreduce.tracking import TrackingStore
from simreduce.tracking.registry import load_reducer, run_config


def read_vectors(path: Path) -> np.ndarray:
    try:
        vectors = np.load(path)
    except (OSError, ValueError) as e:
        raise SimreduceError(f"input {str(path)!r} is not a readable .npy array ({e}).") from e
    if not np.issubdtype(vectors.dtype, np.number):
        raise SimreduceError(f"input {str(path)!r} holds {vectors.dtype} values, not numbers.")
    return vectors


def compress_file(store: TrackingStore, model_uri: str, input_path: Path, output_path: Path) -> np.ndarray:
    """Reduce `input_path` (`.npy` [N, D], or a text file of words) with `model_uri`, write `output_path`
    ([N, dim] float32 `.npy`), and return the reduced vectors.

    Words are embedded by the embedder config of the reducer's own run, through this project's vector cache.
    """
    if not input_path.is_file():
        raise SimreduceError(f"input file {str(input_path)!r} does not exist: pass a .npy array or a words file.")
    reducer = load_reducer(store, model_uri)
    if input_path.suffix == ".npy":
        vectors = read_vectors(input_path)
    else:
        embedder = instantiate(run_config(store, reducer.run_id).embedder)
        vectors = WordSource(embedder, default_paths().cache_dir, words_file=str(input_path)).load().vectors.numpy()
    if vectors.ndim != 2 or vectors.shape[1] != reducer.in_dim:
        raise SimreduceError(
            f"input {str(input_path)!r} has shape {list(vectors.shape)} but {model_uri} takes [N, {reducer.in_dim}] "
            "vectors: embed them with the model the reducer was trained on."
        )
    reduced = reducer.reduce(vectors).astype(np.float32)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(output_path, reduced)
    return reduced
