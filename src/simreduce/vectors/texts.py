"""Corpora of texts: `.txt` (one text a line), `.jsonl`, `.csv` and `.parquet` (a named column), read and
checked before any model is loaded."""

from dataclasses import dataclass
from pathlib import Path

from simreduce.runtime.errors import SimreduceError
from simreduce.vectors.input_files import check_is_file, check_suffix, setting, text_lines
from simreduce.vectors.rows import check_enough_rows, check_unique_ids, id_strings, shown
from simreduce.vectors.vector_files import VECTOR_SUFFIXES

TEXT_SUFFIXES = (".txt", ".jsonl", ".csv", ".parquet")


@dataclass(frozen=True)
class Corpus:
    """The texts, in file order, and the ids naming them (the id column's values, else row numbers)."""

    texts: list[str]
    ids: list[str]


def read_corpus(path: Path, column: str | None = None, id_column: str | None = None, min_rows: int = 2) -> Corpus:
    """The file's texts and ids; an empty text, a missing column, a repeated id or fewer than `min_rows` texts (2
    to train on, 1 to compress) is one line naming it."""
    check_is_file(path, "data.path=", f"pass a file of texts ({', '.join(TEXT_SUFFIXES)}).")
    vectors = path.suffix.lower() in VECTOR_SUFFIXES
    check_suffix(path, TEXT_SUFFIXES, " (a file of vectors is read by data=vectors)" if vectors else "")
    if path.suffix.lower() == ".txt":
        texts, ids = _read_lines(path), None
    else:
        texts, ids = _read_table_columns(path, column, id_column)
    corpus = Corpus(texts, ids if ids is not None else [str(i) for i in range(len(texts))])
    _check(corpus, path, id_column, min_rows)
    return corpus


def _read_lines(path: Path) -> list[str]:
    try:
        return text_lines(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise SimreduceError(f"{setting('path', str(path))} is not UTF-8 text ({e.reason} at byte {e.start}).") from e


def _read_table_columns(path: Path, column: str | None, id_column: str | None) -> tuple[list[str], list[str] | None]:
    """`column` (and `id_column`) of a jsonl, csv or parquet file, through pyarrow."""
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet

    readers = {".jsonl": pyarrow.json.read_json, ".csv": pyarrow.csv.read_csv, ".parquet": pyarrow.parquet.read_table}
    try:
        table = readers[path.suffix.lower()](path)
    except Exception as e:  # pyarrow's ArrowInvalid: the file is not what its extension says
        first_line = str(e).strip().splitlines()[0]
        raise SimreduceError(f"{setting('path', str(path))} cannot be read as {path.suffix} ({first_line}).") from e
    for option, name in (("column", column), ("id_column", id_column)):
        if (name is not None or option == "column") and name not in table.column_names:
            raise SimreduceError(
                f"{setting(option, name)} is not a column of {str(path)!r}: it has {table.column_names}."
            )
    texts = table.column(column).to_pylist()
    if bad := [i for i, t in enumerate(texts) if not isinstance(t, str)]:
        raise SimreduceError(
            f"{setting('column', column)} of {str(path)!r} holds {type(texts[bad[0]]).__name__} at row {bad[0]}, "
            "not text: name the column of texts."
        )
    ids = id_strings(table.column(id_column).to_pylist(), path, id_column) if id_column else None
    return texts, ids


def _check(corpus: Corpus, path: Path, id_column: str | None, min_rows: int) -> None:
    if empty := [i for i, t in enumerate(corpus.texts) if not t.strip()]:
        raise SimreduceError(
            f"{setting('path', str(path))} has {len(empty)} empty text(s), at rows "
            f"{shown([corpus.ids[i] for i in empty])}: remove them."
        )
    check_enough_rows(len(corpus.texts), path, "text", min_rows)
    check_unique_ids(corpus.ids, path, id_column)
