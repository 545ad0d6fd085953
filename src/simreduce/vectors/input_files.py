"""Input files checked before anything reads them, in one line that names the file and the way out: a file
that is there (not a folder), with an extension a reader supports. `setting` names an input setting in such a
line as both entry points spell it."""

from collections.abc import Sequence
from pathlib import Path

from simreduce.runtime.errors import SimreduceError

FLAGS = {"path": "--input"}  # compress's flag for a data setting, where it is not `--<name>`


def setting(name: str, value: object) -> str:
    """`data.column='text' (--column)`: a data setting and its value, with the `simreduce compress` flag that
    sets the same thing, for the errors that training and compress share."""
    flag = FLAGS.get(name, f"--{name.replace('_', '-')}")
    return f"data.{name}={value!r} ({flag})"


def check_is_file(path: Path, label: str, way_out: str) -> None:
    """`path` is a regular file, or `<label><path> is a directory|is not a regular file|does not exist:
    <way_out>` (a device such as /dev/zero or a pipe never ends, so it is not read)."""
    if not path.is_file():
        if path.is_dir():
            found = "is a directory"
        elif path.exists():
            found = "is not a regular file (a device, a pipe or a socket)"
        else:
            found = "does not exist"
        raise SimreduceError(f"{label}{str(path)!r} {found}: {way_out}")


def text_lines(text: str) -> list[str]:
    """A text file's lines, split at its line ends (`\n`, `\r\n`) only: `str.splitlines` also splits at form
    feeds, U+2028 and others inside a line, which would make N lines in give more rows out."""
    lines = text.split("\n")
    if lines[-1] == "":  # the newline that ends the last line starts no line
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def check_suffix(path: Path, suffixes: Sequence[str], hint: str = "") -> None:
    """`path`'s extension is one of `suffixes` (any case), or one line listing them (and `hint`)."""
    if path.suffix.lower() not in suffixes:
        raise SimreduceError(
            f"{setting('path', str(path))} has the unsupported extension {path.suffix!r}: "
            f"use one of {', '.join(suffixes)}{hint}."
        )
