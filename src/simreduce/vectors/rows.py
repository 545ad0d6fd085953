"""Checks every source makes of its rows, whatever the file format: enough rows for pairs, ids unique, more
than two directions to train on; and how ids are named in an error message."""

from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from simreduce.runtime.errors import SimreduceError
from simreduce.vectors.input_files import setting


def shown(ids: list[str], n: int = 5, width: int = 40) -> str:
    """At most `n` ids for an error message, each cut to `width` characters: a 50 KB line stays short."""
    cut = [name if len(name) <= width else f"{name[:width]}... ({len(name)} chars)" for name in ids[:n]]
    more = f" and {len(ids) - n} more" if len(ids) > n else ""
    return f"{cut}{more}"


def check_enough_rows(n_rows: int, path: Path, what: str = "vector", least: int = 2) -> None:
    """At least `least` rows: 2 to train on (pairs), 1 to compress."""
    if n_rows < least:
        why = "there are no pairs to keep" if least > 1 else "there is nothing to reduce"
        raise SimreduceError(f"{str(path)!r} holds {n_rows} {what}(s): {why}.")


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


MIN_DIRECTIONS = 3  # fewer: every pair's cosine is 1 (or one other value), so there is no order of them to keep
SAME_DIRECTION = 1 - 1e-5  # cosine above which two float32 rows count as one direction (rounding, not content)


def distinct_directions(vectors: torch.Tensor, rows: torch.Tensor, enough: int = MIN_DIRECTIONS) -> int:
    """How many distinct directions (rows equal after L2 normalisation) the rows `rows` of [N, D] `vectors` hold,
    counted up to `enough`: reading stops there, so data that differs costs one block of rows, and at most
    `enough` matrix products [block, D] x [D, enough] a block otherwise."""
    seen: list[torch.Tensor] = []
    for start in range(0, len(rows), 8192):
        unit = F.normalize(vectors[rows[start : start + 8192]].float(), dim=1)
        while len(seen) < enough:
            new = (
                (unit @ torch.stack(seen).T).amax(dim=1) < SAME_DIRECTION if seen else torch.ones(len(unit), dtype=bool)
            )
            if not new.any():
                break
            seen.append(unit[new.nonzero()[0, 0]])
        if len(seen) >= enough:
            break
    return len(seen)
