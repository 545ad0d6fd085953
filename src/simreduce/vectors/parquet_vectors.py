"""A parquet column of vectors (fixed-length number lists), read row group by row group so memory is bounded by a
chunk, and written once into a `.npy` for random access, since parquet cannot be mapped."""

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simreduce.runtime.atomic import atomic_path
from simreduce.runtime.errors import SimreduceError
from simreduce.vectors.input_files import setting
from simreduce.vectors.rows import check_enough_rows, id_strings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParquetVectors:
    """`column` (fixed-length number lists) of the parquet file at `path`, its rows named by `id_column` (None:
    by their number)."""

    path: Path
    column: str | None
    id_column: str | None = None

    def chunks(self, chunk_rows: int) -> Iterator[tuple[np.ndarray, list[str] | None]]:
        """The vectors as consecutive [at most `chunk_rows`, D] float32 chunks, with their ids (None: no id
        column)."""
        columns = [self.column] + ([self.id_column] if self.id_column else [])
        first_row, width = 0, None
        for batch in self._open().iter_batches(batch_size=chunk_rows, columns=columns):
            vectors = _list_column(batch.column(self.column), self.path, self.column, first_row, width)
            width = vectors.shape[1]
            column = batch.column(self.id_column).to_pylist() if self.id_column else None
            ids = None if column is None else id_strings(column, self.path, self.id_column, first_row)
            first_row += len(vectors)
            yield vectors, ids

    def ids(self) -> list[str] | None:
        """The id column's values as strings (None: no id column)."""
        if self.id_column is None:
            return None
        return id_strings(self._open().read(columns=[self.id_column]).column(0).to_pylist(), self.path, self.id_column)

    def mapped(self, converted: Path, chunk_rows: int) -> np.ndarray:
        """The [N, D] float32 vectors mapped from the `.npy` at `converted`, written chunk by chunk, atomically,
        when it is not there yet (the caller names it after the file's version)."""
        if not converted.exists():
            n_rows = self._open().metadata.num_rows
            chunks = self.chunks(chunk_rows)
            first, _ = next(chunks, (np.empty((0, 0), np.float32), None))
            check_enough_rows(n_rows, self.path)
            converted.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(converted) as tmp:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n_rows, first.shape[1]))
                out[: len(first)] = first
                row = len(first)
                for vectors, _ in chunks:
                    out[row : row + len(vectors)] = vectors
                    row += len(vectors)
                out.flush()
                del out
            log.info("wrote %s's column %r as %s, to map it", self.path, self.column, converted)
        return np.load(converted, mmap_mode="c")

    def _open(self):
        """The opened file, its `column` and (when given) `id_column` checked to be there."""
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(self.path)
        except Exception as e:  # pyarrow raises its own ArrowInvalid for a file that is not parquet
            raise SimreduceError(f"{str(self.path)!r} is not a readable parquet file ({e}).") from e
        columns = parquet.schema_arrow.names
        for option, name in (("column", self.column), ("id_column", self.id_column)):
            if (name is not None or option == "column") and name not in columns:
                raise SimreduceError(
                    f"{setting(option, name)} is not a column of {str(self.path)!r}: it has {columns}."
                )
        return parquet


def _list_column(column, path: Path, name: str, first_row: int, width: int | None) -> np.ndarray:
    """A pyarrow column of equal-length number lists -> [rows, width] float32; a null, a ragged row or
    a column of scalars is named."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column.type, pa.ExtensionType):  # e.g. a fixed-shape tensor column
        column = column.storage
    list_types = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    if not any(is_list(column.type) for is_list in list_types):
        raise SimreduceError(
            f"{setting('column', name)} of {str(path)!r} holds {column.type}, not lists of numbers: "
            "name the column that holds the vectors."
        )
    if column.null_count:
        row = first_row + pc.index(column.is_null(), True).as_py()
        raise SimreduceError(f"{str(path)!r}: row {row} of column {name!r} is null: drop or fill it.")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    width = width if width is not None else (int(lengths[0]) if len(lengths) else 0)
    if len(ragged := np.flatnonzero(lengths != width)):
        row = first_row + int(ragged[0])
        raise SimreduceError(
            f"{str(path)!r}: row {row} of column {name!r} has {lengths[ragged[0]]} values, "
            f"not {width} as row 0: every vector must have the same length."
        )
    values = column.flatten()
    if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
        raise SimreduceError(f"column {name!r} of {str(path)!r} holds lists of {values.type}, not numbers.")
    return values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, width)
