"""Checks every source makes of its rows, whatever the file format: enough rows for pairs, ids unique."""

from collections import Counter
from pathlib import Path

from simreduce.runtime.errors import SimreduceError
from simreduce.vectors.input_files import setting
from simreduce.vectors.words import shown


def check_enough_rows(n_rows: int, path: Path, what: str = "vector") -> None:
    if n_rows < 2:
        raise SimreduceError(f"{str(path)!r} holds {n_rows} {what}(s): there are no pairs to keep.")


def check_unique_ids(ids: list[str], path: Path, id_column: str | None) -> None:
    if repeated := [i for i, n in Counter(ids).items() if n > 1]:
        raise SimreduceError(
            f"{setting('id_column', id_column)} of {str(path)!r} repeats the ids {shown(repeated)}: "
            "ids must name one row each."
        )
