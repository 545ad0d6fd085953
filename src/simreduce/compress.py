"""Apply a logged reducer to new data: a file of vectors (the formats of `data=vectors`), or words or texts
embedded the way the reducer's own run embedded its data; written as `.npy`, or `.parquet` with the ids.

A file of vectors streams through in chunks, twice: once to check every row (nothing is written when one is
bad), once to reduce and write; memory is bounded by a chunk, not by the file. The paths are checked before
MLflow is imported, and the output is written atomically: a failed or killed compress leaves the input and
any earlier output as they were.
"""

from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from simreduce.experiment.config import config_group
from simreduce.reducers.faiss_index import add_codes, faiss_index
from simreduce.reducers.product_quantizer import import_faiss
from simreduce.runtime.atomic import atomic_path
from simreduce.runtime.errors import DiskFull, SimreduceError, full_disk
from simreduce.vectors.input_files import check_is_file
from simreduce.vectors.vector_files import (
    CHUNK_ROWS,
    VECTOR_SUFFIXES,
    VectorFileSpec,
    bad_rows,
    bad_rows_message,
    iter_vector_chunks,
)

OUTPUT_SUFFIXES = (".npy", ".parquet")
Chunks = Callable[[], Iterator[tuple[np.ndarray, list[str] | None]]]  # a fresh pass over (vectors, ids) chunks


@dataclass(frozen=True)
class Written:
    n_rows: int
    dim: int
    n_dropped: int
    precision: str


def check_paths(input_path: Path, output_path: Path) -> None:
    check_is_file(input_path, "--input ", "pass a file of vectors, words or texts.")
    if output_path.is_dir():
        raise SimreduceError(
            f"--output {str(output_path)!r} is a directory: pass a file path in it, e.g. "
            f"{str(output_path / 'reduced.npy')!r}."
        )
    if output_path.suffix not in OUTPUT_SUFFIXES:
        raise SimreduceError(
            f"--output {str(output_path)!r} is not a .npy or .parquet file path: pass e.g. reduced.npy."
        )
    if output_path.resolve() == input_path.resolve():
        raise SimreduceError(f"--output {str(output_path)!r} is the input: write the reduced vectors elsewhere.")


def compress_file(
    store_uri: str,
    model_uri: str,
    spec: VectorFileSpec,
    output_path: Path,
    drop_bad_rows: bool = False,
    dim: int | None = None,
    faiss_path: Path | None = None,
) -> Written:
    """Reduce the vectors of `spec` (or its words or texts, embedded) with `model_uri` (cut to its prefix `dim`
    when given: a nested model's) into `output_path` (`.npy`, or `.parquet` with columns `id` and `embedding`),
    as the model stores them: [N, dim] float32, float16 or int8 codes, or [N, ceil(dim * b / 8)] uint8 (packed
    sign bits, b-bit or product codes; their rotation and levels or centroids are in the model's weights file);
    and with `faiss_path`, a faiss index holding them that searches by raw query vectors (`faiss_index`)."""
    check_paths(spec.path, output_path)
    if faiss_path is not None:
        check_index_path(faiss_path, output_path)
    from simreduce.experiment.tracking import TrackingStore
    from simreduce.experiment.tracking.registry import load_reducer

    # A model folder needs no store (unless its words or texts are to be embedded with its run's config).
    store = TrackingStore(store_uri) if Path(model_uri).is_dir() else TrackingStore.open(store_uri)
    reducer = load_reducer(store, model_uri)
    if dim is not None:
        reducer = reducer.prefix(dim, model_uri)
    index = None if faiss_path is None else faiss_index(reducer.net, reducer.stored, reducer.dim, model_uri)
    chunks = vector_chunks(spec) if holds_vectors(spec) else embedded_chunks(store, reducer.run_id, spec)
    n_rows, bad, named = check_rows(chunks, spec.path, reducer.in_dim, model_uri)
    if len(bad) and not drop_bad_rows:
        where = f"--input {str(spec.path)!r}"
        raise SimreduceError(bad_rows_message(where, len(bad), named, "fix them, or pass --drop-bad-rows"))
    output_path.parent.mkdir(parents=True, exist_ok=True)
    reduced = reduced_chunks(chunks, reducer, bad, n_rows)
    if index is not None:  # the index takes each chunk as it is written: the output is never read back
        reduced = indexed(reduced, index, reducer.stored.name)
    # closing: a failed write ends the progress bar before its message, not after it
    with disk_full_named(f"--output {str(output_path)!r}"), closing(reduced), atomic_path(output_path) as tmp:
        write = write_parquet if output_path.suffix == ".parquet" else write_npy
        write(tmp, reduced, n_rows - len(bad), reducer.width, reducer.stored.dtype)
    if index is not None:
        faiss_path.parent.mkdir(parents=True, exist_ok=True)
        with disk_full_named(f"--faiss-index {str(faiss_path)!r}"), atomic_path(faiss_path) as tmp:
            import_faiss().write_index(index, str(tmp))
    return Written(n_rows - len(bad), reducer.dim, len(bad), reducer.stored.name)


def check_index_path(faiss_path: Path, output_path: Path) -> None:
    if faiss_path.is_dir() or faiss_path.suffix not in (".faiss", ".index"):
        raise SimreduceError(
            f"--faiss-index {str(faiss_path)!r} is not a .faiss or .index file path: pass e.g. corpus.faiss."
        )
    if faiss_path.resolve() == output_path.resolve():
        raise SimreduceError(f"--faiss-index {str(faiss_path)!r} is the --output: name the index another file.")


@contextmanager
def disk_full_named(where: str) -> Iterator[None]:
    """A full disk while writing `where` (`--output '...'`) raised as one `DiskFull` line naming it."""
    try:
        yield
    except OSError as e:
        if (full := full_disk(e)) is None:
            raise
        raise DiskFull(where, full.reason) from e


def indexed(
    chunks: Iterator[tuple[np.ndarray, list[str]]], index, precision: str
) -> Iterator[tuple[np.ndarray, list[str]]]:
    """`chunks` as they are, each one's stored rows added to the faiss `index` on the way (row i is id i)."""
    with closing(chunks):
        for stored, ids in chunks:
            add_codes(index, stored, precision)
            yield stored, ids


def holds_vectors(spec: VectorFileSpec) -> bool:
    """Whether the input is vectors: a vector file, but a parquet file only when its column holds lists (a
    column of strings is texts)."""
    if spec.path.suffix.lower() != ".parquet":
        return spec.path.suffix.lower() in VECTOR_SUFFIXES
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(spec.path)
    return spec.column not in schema.names or not pa.types.is_string(schema.field(spec.column).type)


def vector_chunks(spec: VectorFileSpec) -> Chunks:
    return lambda: iter_vector_chunks(spec)


def embedded_chunks(store, run_id: str | None, spec: VectorFileSpec) -> Chunks:
    """The input's words or texts embedded with the embedder config of the reducer's run, as its source did.
    The sources (and transformers behind them) are imported here: a file of vectors never needs them."""
    from hydra.utils import instantiate

    from simreduce.experiment.tracking.registry import run_config
    from simreduce.vectors.sources import TextSource, WordSource

    if run_id is None:
        raise SimreduceError("this model has no MLflow run to take its embedder from: pass a file of vectors.")
    source_kind = store.run_tags(run_id)["source"]
    if source_kind == "vectors":
        raise SimreduceError(
            f"--input {str(spec.path)!r} is not a file of vectors ({', '.join(VECTOR_SUFFIXES)}), and this reducer "
            "was trained on vectors from a file, with no embedder: pass vectors."
        )
    cfg = run_config(store, run_id)
    embedder, cache_dir = instantiate(cfg.embedder), config_group("paths").cache_dir
    if source_kind == "texts":  # min_rows=1: pairs matter to training; one text or word compresses
        path, max_length = str(spec.path), cfg.data.max_length
        source = TextSource(embedder, path, cache_dir, spec.column, spec.id_column, max_length, min_rows=1)
    else:
        source = WordSource(embedder, cache_dir, words_file=str(spec.path), min_rows=1)
    loaded = source.load()
    vectors, ids = loaded.vectors.numpy(), loaded.ids
    return lambda: ((vectors[i : i + CHUNK_ROWS], ids[i : i + CHUNK_ROWS]) for i in range(0, len(ids), CHUNK_ROWS))


def check_rows(chunks: Chunks, path: Path, in_dim: int, model_uri: str) -> tuple[int, np.ndarray, list[str]]:
    """One pass over the input: its row count, its bad rows and the names of the first five; a width other
    than the reducer's is refused."""
    n_rows, bad, named = 0, [], []
    for vectors, ids in chunks():
        if vectors.shape[1] != in_dim:
            raise SimreduceError(
                f"--input {str(path)!r} holds {vectors.shape[1]}-d vectors but {model_uri} takes {in_dim}-d ones: "
                "embed them with the model the reducer was trained on."
            )
        local = bad_rows(vectors)
        named += [ids[i] if ids is not None else str(n_rows + i) for i in local[: 5 - len(named)]]
        bad.append(n_rows + local)
        n_rows += len(vectors)
    return n_rows, np.concatenate(bad) if bad else np.empty(0, dtype=np.int64), named


def reduced_chunks(chunks: Chunks, reducer, bad: np.ndarray, n_rows: int) -> Iterator[tuple[np.ndarray, list[str]]]:
    """The reduced chunks, as stored, without the bad rows, with their ids (row numbers when the input has
    none), and a progress bar."""
    start = 0
    with tqdm(total=n_rows, desc="compressing", unit="vec") as progress:
        for vectors, ids in chunks():
            rows = np.arange(start, start + len(vectors))
            keep = ~np.isin(rows, bad)
            names = ids if ids is not None else [str(r) for r in rows]
            yield reducer.reduce(vectors[keep]), [n for n, k in zip(names, keep, strict=True) if k]
            start += len(vectors)
            progress.update(len(vectors))


def write_npy(
    path: Path, chunks: Iterator[tuple[np.ndarray, list[str]]], n_rows: int, width: int, dtype: np.dtype
) -> None:
    """The `.npy` header, then the chunks in order: written, not memory-mapped, so a full disk raises ENOSPC (a
    mapped file's pages that find no space kill the process with SIGBUS, leaving its temporary file behind)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (n_rows, width)}
    with open(path, "wb") as out:
        np.lib.format.write_array_header_1_0(out, header)
        for reduced, _ in chunks:
            out.write(np.ascontiguousarray(reduced, dtype=dtype).tobytes())


def write_parquet(
    path: Path, chunks: Iterator[tuple[np.ndarray, list[str]]], n_rows: int, width: int, dtype: np.dtype
) -> None:
    """Columns `id` (string) and `embedding` (fixed-size list of `width` values of `dtype`: the stored
    vector, for binary its packed bytes), a row group per chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.from_numpy_dtype(dtype), width))])
    with pq.ParquetWriter(path, schema) as writer:
        for reduced, ids in chunks:
            embedding = pa.FixedSizeListArray.from_arrays(pa.array(reduced.reshape(-1)), width)
            writer.write_table(pa.table({"id": ids, "embedding": embedding}, schema=schema))
