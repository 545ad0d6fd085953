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

from simreduce.runtime.atomic import atomic_path
from simreduce.runtime.errors import SimreduceError
from simreduce.vectors.input_files import check_is_file, check_suffix, setting
from simreduce.vectors.rows import check_enough_rows, shown

log = logging.getLogger(__name__)

VECTOR_SUFFIXES = (".npy", ".npz", ".safetensors", ".parquet", ".fvecs")
CHUNK_ROWS = 65_536  # rows per chunk when a file is scanned or streamed: 200 MB of 768-d float32
SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1"}


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
        return VectorTable(_mapped_parquet(spec, convert_dir), _parquet_ids(spec))
    return VectorTable(_mapped(spec).astype(np.float32, copy=False), None)


def iter_vector_chunks(spec: VectorFileSpec) -> Iterator[tuple[np.ndarray, list[str] | None]]:
    """The file's vectors as consecutive float32 chunks of at most `CHUNK_ROWS` rows, with their ids (None:
    none in the file): memory bounded by a chunk, whatever the file's size."""
    check_vector_path(spec.path)
    if spec.path.suffix.lower() == ".parquet":
        yield from _parquet_chunks(spec)
        return
    vectors = _mapped(spec)
    for start in range(0, len(vectors), CHUNK_ROWS):
        yield vectors[start : start + CHUNK_ROWS].astype(np.float32, copy=False), None


def _mapped(spec: VectorFileSpec) -> np.ndarray:
    """The array as stored (mapped where the format allows), its shape and dtype checked: [N >= 2, D] real
    numbers; a dtype other than float32 is named in a warning, as it is cast."""
    readers = {".npy": _read_npy, ".npz": _read_npz, ".safetensors": _read_safetensors, ".fvecs": _read_fvecs}
    array, path = readers[spec.path.suffix.lower()](spec), spec.path
    if array.ndim != 2:
        raise SimreduceError(
            f"{str(path)!r} holds a {array.ndim}-D array of shape {list(array.shape)}, not [N, D] rows of vectors: "
            "save one vector a row."
        )
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise SimreduceError(f"{str(path)!r} holds {array.dtype} values, not real numbers: save float32 vectors.")
    if array.dtype != np.float32:
        log.warning("%s holds %s vectors: they are cast to float32", path, array.dtype)
    check_enough_rows(len(array), path)
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


def _read_npy(spec: VectorFileSpec) -> np.ndarray:
    try:
        array = np.load(spec.path, mmap_mode="c", allow_pickle=False)
    except ValueError as e:  # object arrays cannot be mapped, and are never unpickled
        raise SimreduceError(f"{str(spec.path)!r} is not a numeric .npy array ({e}): save float32 vectors.") from e
    except OSError as e:
        raise SimreduceError(f"{str(spec.path)!r} is not a readable .npy file ({e}).") from e
    if not isinstance(array, np.ndarray):
        raise SimreduceError(f"{str(spec.path)!r} is an .npz archive, not an .npy array: rename it to .npz.")
    return array


def _read_npz(spec: VectorFileSpec) -> np.ndarray:
    try:
        archive = np.load(spec.path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise SimreduceError(f"{str(spec.path)!r} is not a readable .npz archive ({e}).") from e
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise SimreduceError(f"{str(spec.path)!r} is an .npy array, not an .npz archive: rename it to .npy.")
    with archive:
        key = _pick_key(spec, list(archive.files))
        try:
            return archive[key]
        except ValueError as e:  # an object array, never unpickled
            raise SimreduceError(f"{str(spec.path)!r}: {key!r} is not a numeric array ({e}).") from e


def _read_safetensors(spec: VectorFileSpec) -> np.ndarray:
    """The tensor `key`, mapped at its offset (the format: an 8-byte header length, a JSON header, the data)."""
    try:
        with spec.path.open("rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_len))
    except (OSError, ValueError) as e:
        raise SimreduceError(f"{str(spec.path)!r} is not a readable .safetensors file ({e}).") from e
    key = _pick_key(spec, [k for k in header if k != "__metadata__"])
    entry = header[key]
    if entry["dtype"] == "BF16":  # numpy has no bfloat16: torch reads it and widens it
        from safetensors import safe_open

        with safe_open(str(spec.path), framework="pt") as f:
            return f.get_tensor(key).float().numpy()
    if entry["dtype"] not in SAFETENSORS_DTYPES:
        raise SimreduceError(f"{str(spec.path)!r}: tensor {key!r} holds {entry['dtype']} values, not real numbers.")
    start, _ = entry["data_offsets"]
    return np.memmap(
        spec.path,
        SAFETENSORS_DTYPES[entry["dtype"]],
        mode="c",
        offset=8 + header_len + start,
        shape=tuple(entry["shape"]),
    )


def _read_fvecs(spec: VectorFileSpec) -> np.ndarray:
    """The TEXMEX format: each row is its width as int32, then that many float32 values."""
    raw = np.memmap(spec.path, dtype="<i4", mode="c")
    width = int(raw[0]) if raw.size else 0
    if width <= 0 or raw.size % (width + 1):
        raise SimreduceError(f"{str(spec.path)!r} is not an .fvecs file: its size is not rows of [width, values].")
    rows = raw.reshape(-1, width + 1)
    if len(wrong := np.flatnonzero(rows[:, 0] != width)):
        raise SimreduceError(f"{str(spec.path)!r}: row {wrong[0]} is {rows[wrong[0], 0]} wide, not {width} as row 0.")
    return rows[:, 1:].view("<f4")


def _pick_key(spec: VectorFileSpec, keys: list[str]) -> str:
    """`spec.key`, or the only array in the file."""
    if spec.key is None and len(keys) == 1:
        return keys[0]
    if spec.key not in keys:
        given = "no data.key (--key)" if spec.key is None else setting("key", spec.key)
        raise SimreduceError(f"{str(spec.path)!r} holds the arrays {keys}, {given} names none of them: pass one.")
    return spec.key


def _parquet_file(spec: VectorFileSpec):
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(spec.path)
    except Exception as e:  # pyarrow raises its own ArrowInvalid for a file that is not parquet
        raise SimreduceError(f"{str(spec.path)!r} is not a readable parquet file ({e}).") from e
    columns = parquet.schema_arrow.names
    for option, name in (("column", spec.column), ("id_column", spec.id_column)):
        if (name is not None or option == "column") and name not in columns:
            raise SimreduceError(f"{setting(option, name)} is not a column of {str(spec.path)!r}: it has {columns}.")
    return parquet


def _parquet_chunks(spec: VectorFileSpec) -> Iterator[tuple[np.ndarray, list[str] | None]]:
    parquet = _parquet_file(spec)
    columns = [spec.column] + ([spec.id_column] if spec.id_column else [])
    first_row, width = 0, None
    for batch in parquet.iter_batches(batch_size=CHUNK_ROWS, columns=columns):
        vectors = _list_column(batch.column(spec.column), spec, first_row, width)
        width = vectors.shape[1]
        ids = [str(v) for v in batch.column(spec.id_column).to_pylist()] if spec.id_column else None
        first_row += len(vectors)
        yield vectors, ids


def _list_column(column, spec: VectorFileSpec, first_row: int, width: int | None) -> np.ndarray:
    """A pyarrow column of equal-length number lists -> [rows, width] float32; a null, a ragged row or
    a column of scalars is named."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column.type, pa.ExtensionType):  # e.g. a fixed-shape tensor column
        column = column.storage
    if (
        not pa.types.is_list(column.type)
        and not pa.types.is_large_list(column.type)
        and not (pa.types.is_fixed_size_list(column.type))
    ):
        raise SimreduceError(
            f"{setting('column', spec.column)} of {str(spec.path)!r} holds {column.type}, not lists of numbers: "
            "name the column that holds the vectors."
        )
    if column.null_count:
        row = first_row + pc.index(column.is_null(), True).as_py()
        raise SimreduceError(f"{str(spec.path)!r}: row {row} of column {spec.column!r} is null: drop or fill it.")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    width = width if width is not None else (int(lengths[0]) if len(lengths) else 0)
    if len(ragged := np.flatnonzero(lengths != width)):
        row = first_row + int(ragged[0])
        raise SimreduceError(
            f"{str(spec.path)!r}: row {row} of column {spec.column!r} has {lengths[ragged[0]]} values, "
            f"not {width} as row 0: every vector must have the same length."
        )
    values = column.flatten()
    if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
        raise SimreduceError(f"column {spec.column!r} of {str(spec.path)!r} holds lists of {values.type}, not numbers.")
    return values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, width)


def _parquet_ids(spec: VectorFileSpec) -> list[str] | None:
    if spec.id_column is None:
        return None
    return [str(v) for v in _parquet_file(spec).read(columns=[spec.id_column]).column(0).to_pylist()]


def _mapped_parquet(spec: VectorFileSpec, convert_dir: Path) -> np.ndarray:
    """The parquet column as a mapped `.npy` in `convert_dir`, written row group by row group the first time
    (and after the file changes), atomically."""
    what = {k: v for k, v in spec.fingerprint().items() if k != "id_column"}  # the ids are read apart
    name = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]
    converted = Path(convert_dir).expanduser() / f"{name}.npy"
    if not converted.exists():
        n_rows = _parquet_file(spec).metadata.num_rows
        chunks = _parquet_chunks(spec)
        first, _ = next(chunks, (np.empty((0, 0), np.float32), None))
        check_enough_rows(n_rows, spec.path)
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
        log.info("wrote %s's column %r as %s, to map it", spec.path, spec.column, converted)
    return np.load(converted, mmap_mode="c")
