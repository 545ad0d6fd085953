"""Input files checked before anything reads them, in one line that names the file and the way out: a file
that is there (not a folder), with an extension a reader supports."""

from collections.abc import Sequence
from pathlib import Path

from simreduce.errors import SimreduceError


def check_is_file(path: Path, label: str, way_out: str) -> None:
    """`path` is a file, or `<label><path> is a directory|does not exist: <way_out>`."""
    if not path.is_file():
        found = "is a directory" if path.is_dir() else "does not exist"
        raise SimreduceError(f"{label}{str(path)!r} {found}: {way_out}")


def check_suffix(path: Path, suffixes: Sequence[str], hint: str = "") -> None:
    """`path`'s extension is one of `suffixes` (any case), or one line listing them (and `hint`)."""
    if path.suffix.lower() not in suffixes:
        raise SimreduceError(
            f"data.path={str(path)!r} has the unsupported extension {path.suffix!r}: "
            f"use one of {', '.join(suffixes)}{hint}."
        )
