"""Checks every source makes of its rows, whatever the file format: enough rows for pairs, ids unique; and how
ids are named in an error message."""

from collections import Counter
from pathlib import Path

from simreduce.runtime.errors import SimreduceError
from simreduce.vectors.input_files import setting


def shown(ids: list[str], n: int = 5, width: int = 40) -> str:
    """At most `n` ids for an error message, each cut to `width` characters: a 50 KB line stays short."""
    cut = [name if len(name) <= width else f"{name[:width]}... ({len(name)} chars)" for name in ids[:n]]
    more = f" and {len(ids) - n} more" if len(ids) > n else ""
    return f"{cut}{more}"


def check_enough_rows(n_rows: int, path: Path, what: str = "vector") -> None:
    if n_rows < 2:
        raise SimreduceError(f"{str(path)!r} holds {n_rows} {what}(s): there are no pairs to keep.")


def check_unique_ids(ids: list[str], path: Path, id_column: str | None) -> None:
    if repeated := [i for i, n in Counter(ids).items() if n > 1]:
        raise SimreduceError(
            f"{setting('id_column', id_column)} of {str(path)!r} repeats the ids {shown(repeated)}: "
            "ids must name one row each."
        )


def id_strings(values: list, path: Path, id_column: str, first_row: int = 0) -> list[str]:
    """An id column's values (rows `first_row`, ... of the file) as strings; a missing one (null, or empty) is refused,
    since `str(None)` would name a row "None"."""
    if missing := [str(first_row + i) for i, value in enumerate(values) if value is None or value == ""]:
        raise SimreduceError(
            f"{setting('id_column', id_column)} of {str(path)!r} is empty (null) at row(s) {shown(missing)}: give "
            "every row an id, or leave the id column out to name rows by their numbers."
        )
    return [str(value) for value in values]
