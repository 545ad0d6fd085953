"""Apply a logged reducer to new data: a `.npy` array of vectors, or a words file embedded the way the
reducer's own run embedded its words.

The paths are checked before MLflow is imported (seconds), and the output is written atomically: a bad path
is told at once, and a failed or killed compress leaves the input and any earlier output as they were.
"""

from pathlib import Path

import numpy as np
from hydra.utils import instantiate

from simreduce.atomic import atomic_path
from simreduce.errors import SimreduceError
from simreduce.paths import default_paths
from simreduce.sources import WordSource


def check_paths(input_path: Path, output_path: Path) -> None:
    if not input_path.is_file():
        what = "is a directory" if input_path.is_dir() else "does not exist"
        raise SimreduceError(f"input {str(input_path)!r} {what}: pass a .npy array or a words file.")
    if output_path.suffix != ".npy" or output_path.is_dir():
        raise SimreduceError(f"--output {str(output_path)!r} is not a .npy file path: pass e.g. reduced.npy.")
    if output_path.resolve() == input_path.resolve():
        raise SimreduceError(f"--output {str(output_path)!r} is the input: write the reduced vectors elsewhere.")


def read_vectors(path: Path) -> np.ndarray:
    """A real-valued [N, D] array; `allow_pickle=False`, so a file holding objects is refused, never unpickled."""
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise SimreduceError(f"input {str(path)!r} is not a readable .npy array ({e}).") from e
    if not isinstance(vectors, np.ndarray) or not (
        np.issubdtype(vectors.dtype, np.floating) or np.issubdtype(vectors.dtype, np.integer)
    ):
        raise SimreduceError(f"input {str(path)!r} holds {getattr(vectors, 'dtype', 'no')} values, not real numbers.")
    return vectors


def bad_rows(vectors: np.ndarray) -> np.ndarray:
    """Indices of rows with NaN or inf, or all zero: they have no cosine similarity to keep."""
    return np.flatnonzero(~np.isfinite(vectors).all(axis=1) | ~vectors.any(axis=1))


def compress_file(
    store_uri: str, model_uri: str, input_path: Path, output_path: Path, drop_bad_rows: bool = False
) -> np.ndarray:
    """Reduce `input_path` (`.npy` [N, D], or a text file of words) with `model_uri`, write `output_path`
    ([N, dim] float32 `.npy`), and return the reduced vectors.

    Words are embedded by the embedder config of the reducer's own run, through this project's vector cache.
    """
    check_paths(input_path, output_path)
    from simreduce.tracking import TrackingStore
    from simreduce.tracking.registry import load_reducer

    # A model folder needs no store (unless its words are to be embedded with its run's config).
    store = TrackingStore(store_uri) if Path(model_uri).is_dir() else TrackingStore.open(store_uri)
    reducer = load_reducer(store, model_uri)
    vectors = read_vectors(input_path) if input_path.suffix == ".npy" else embed_words(store, reducer, input_path)
    if vectors.ndim != 2 or vectors.shape[1] != reducer.in_dim:
        raise SimreduceError(
            f"input {str(input_path)!r} has shape {list(vectors.shape)} but {model_uri} takes [N, {reducer.in_dim}] "
            "vectors: embed them with the model the reducer was trained on."
        )
    bad = bad_rows(vectors)
    if len(bad) and not drop_bad_rows:
        raise SimreduceError(
            f"input {str(input_path)!r} has {len(bad)} row(s) that are NaN/inf or all zero, first {bad[:5].tolist()}: "
            "fix them, or pass --drop-bad-rows to leave them out of the output."
        )
    reduced = reducer.reduce(np.delete(vectors, bad, axis=0)).astype(np.float32)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output_path) as tmp, tmp.open("wb") as f:
        np.save(f, reduced)
    return reduced


def embed_words(store, reducer, words_path: Path) -> np.ndarray:
    """The words of `words_path` embedded with the embedder config the reducer's run was trained with."""
    from simreduce.tracking.registry import run_config

    if reducer.run_id is None:
        raise SimreduceError("this model has no MLflow run to take its embedder from: pass vectors as a .npy array.")
    embedder = instantiate(run_config(store, reducer.run_id).embedder)
    return WordSource(embedder, default_paths().cache_dir, words_file=str(words_path)).load().vectors.numpy()
