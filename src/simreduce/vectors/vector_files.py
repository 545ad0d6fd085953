"""Files of vectors: `.npy`, `.npz`, `.safetensors`, `.parquet` and `.fvecs`, opened without a copy of the file.

`.npy`, `.safetensors` and `.fvecs` are memory-mapped: the vectors stay the page cache's, and a gather of a
mini-batch reads only its rows. A parquet column is read row group by row group (`iter_vector_chunks`); to
train on one, `open_vector_file` writes it once into a `.npy` in the cache folder and maps that. An `.npz`
member is read whole (numpy cannot map one). Nothing is ever unpickled: `allow_pickle=False` everywhere.
"""

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simreduce.runtime.errors import SimreduceError
from simreduce.vectors.array_files import read_array
from simreduce.vectors.input_files import check_is_file, check_suffix
from simreduce.vectors.parquet_vectors import ParquetVectors
from simreduce.vectors.rows import shown

log = logging.getLogger(__name__)

VECTOR_SUFFIXES = (".npy", ".npz", ".safetensors", ".parquet", ".fvecs")
CHUNK_ROWS = 65_536  # rows per chunk when a file is scanned or streamed: 200 MB of 768-d float32


@dataclass(frozen=True)
class VectorTable:
    """`vectors` [N, D] (memory-mapped where the format allows) and their `ids` (None: named by row number)."""

    vectors: np.ndarray
    ids: list[str] | None


@dataclass(frozen=True)
class VectorFileSpec:
    """Where the vectors are in a file: `key` names an `.npz`/`.safetensors` member, `column` a parquet
    column of fixed-length lists, `id_column` the parquet column naming the rows."""

    path: Path
    key: str | None = None
    column: str | None = None
    id_column: str | None = None

    def fingerprint(self) -> dict[str, str]:
        """The file (resolved path, size, modification time) and where in it: hashing gigabytes per job would
        cost more than the job, and a file rewritten in place changes its size or time."""
        stat = self.path.stat()
        return {
            "path": str(self.path.resolve()),
            "size": str(stat.st_size),
            "mtime_ns": str(stat.st_mtime_ns),
            "key": self.key or "",
            "column": self.column or "",
            "id_column": self.id_column or "",
        }


def check_vector_path(path: Path) -> None:
    """An existing file with a supported extension, or one line saying what to pass."""
    check_is_file(path, "data.path=", f"pass a file of vectors ({', '.join(VECTOR_SUFFIXES)}).")
    check_suffix(path, VECTOR_SUFFIXES)


def open_vector_file(spec: VectorFileSpec, convert_dir: Path) -> VectorTable:
    """The file's [N, D] float32 vectors for random access; a parquet column is first written into a `.npy` in
    `convert_dir`, once per file version."""
    check_vector_path(spec.path)
    if spec.path.suffix.lower() == ".parquet":
        parquet = ParquetVectors(spec.path, spec.column, spec.id_column)
        what = {k: v for k, v in spec.fingerprint().items() if k != "id_column"}  # the ids are read apart
        name = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]
        converted = Path(convert_dir).expanduser() / f"{name}.npy"
        return VectorTable(parquet.mapped(converted, CHUNK_ROWS), parquet.ids())
    return VectorTable(_mapped(spec).astype(np.float32, copy=False), None)


def iter_vector_chunks(spec: VectorFileSpec) -> Iterator[tuple[np.ndarray, list[str] | None]]:
    """The file's vectors as consecutive float32 chunks of at most `CHUNK_ROWS` rows, with their ids (None:
    none in the file): memory bounded by a chunk, whatever the file's size."""
    check_vector_path(spec.path)
    if spec.path.suffix.lower() == ".parquet":
        yield from ParquetVectors(spec.path, spec.column, spec.id_column).chunks(CHUNK_ROWS)
        return
    vectors = _mapped(spec)
    for start in range(0, len(vectors), CHUNK_ROWS):
        yield vectors[start : start + CHUNK_ROWS].astype(np.float32, copy=False), None


def _mapped(spec: VectorFileSpec) -> np.ndarray:
    """The array as stored (mapped where the format allows), its shape and dtype checked: [N >= 2, D] real
    numbers; a dtype other than float32 is named in a warning, as it is cast."""
    array, path = read_array(spec.path, spec.key), spec.path
    if array.ndim != 2:
        raise SimreduceError(
            f"{str(path)!r} holds a {array.ndim}-D array of shape {list(array.shape)}, not [N, D] rows of vectors: "
            "save one vector a row."
        )
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise SimreduceError(f"{str(path)!r} holds {array.dtype} values, not real numbers: save float32 vectors.")
    if array.dtype != np.float32:
        log.warning("%s holds %s vectors: they are cast to float32", path, array.dtype)
    return array


def bad_rows(vectors: np.ndarray) -> np.ndarray:
    """Indices of rows with NaN or inf, or all zero (they have no cosine similarity), scanned chunk by chunk so a
    mapped file is never copied whole."""
    found = [
        start + np.flatnonzero(~np.isfinite(chunk).all(axis=1) | ~chunk.any(axis=1))
        for start in range(0, len(vectors), CHUNK_ROWS)
        for chunk in [np.asarray(vectors[start : start + CHUNK_ROWS])]
    ]
    return np.concatenate(found) if found else np.empty(0, dtype=np.int64)


def bad_rows_message(where: str, n_bad: int, first_named: list[str], fix: str) -> str:
    return f"{where} has {n_bad} vector(s) that are NaN/inf or all zero, first {shown(first_named)}: {fix}."
