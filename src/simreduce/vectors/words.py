"""The word list: the most frequent English words, or a user's file with one word a line."""

import logging
from pathlib import Path

from simreduce.runtime.errors import SimreduceError
from simreduce.vectors.input_files import check_is_file, text_lines

log = logging.getLogger(__name__)


def top_english_words(n_words: int) -> list[str]:
    """The `n_words` most frequent English words. wordfreq's list also holds symbols and emoji (about 1 in
    500 beyond the top 2000: '°', '©', '😂', '͡'); they are skipped, since a model can tokenize them to
    nothing."""
    from wordfreq import top_n_list

    if n_words < 2:
        raise SimreduceError(f"data.n_words={n_words} is too small: pairwise similarities need at least 2 words.")
    words = [w for w in top_n_list("en", 2 * n_words) if any(c.isalnum() for c in w)]
    return words[:n_words]


def read_words_file(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file; anything else (a folder, a binary file, another encoding) is refused."""
    if str(path) == "":
        raise SimreduceError(
            "data.words_file is empty: pass a text file (one word a line), or leave it out for the most frequent "
            "English words."
        )
    path = Path(path).expanduser()
    check_is_file(path, "words file ", "pass data.words_file=<a text file, one word a line>.")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SimreduceError(
            f"words file {str(path)!r} is not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}): "
            "save it as UTF-8, one word a line."
        ) from None
    if "\x00" in text:
        raise SimreduceError(f"words file {str(path)!r} holds NUL bytes, so it is not a text file: pass a word list.")
    return text_lines(text)


def clean_words(words: list[str], source: str, min_words: int = 2) -> list[str]:
    """Strip whitespace, drop empty lines and repeats (keeping first occurrences), and say so; fewer than
    `min_words` left (2 to train on, 1 to compress) is refused."""
    stripped = [w.strip() for w in words]
    kept = list(dict.fromkeys(w for w in stripped if w))
    n_blank = sum(1 for w in stripped if not w)
    n_repeats = len(stripped) - n_blank - len(kept)
    if n_blank:
        log.warning("%s: dropped %d empty line(s)", source, n_blank)
    if n_repeats:
        log.warning("%s: dropped %d repeated word(s)", source, n_repeats)
    if len(kept) < min_words:
        need = "at least 2 are needed to compare similarities" if min_words > 1 else "there is nothing to reduce"
        raise SimreduceError(f"{source} holds {len(kept)} distinct word(s): {need}.")
    return kept


def load_words(n_words: int, words_file: str | None = None, min_words: int = 2) -> list[str]:
    """`words_file` when given (all its words, at least `min_words`), else the `n_words` most frequent English
    words."""
    if words_file is not None:
        return clean_words(read_words_file(words_file), str(words_file), min_words)
    return clean_words(top_english_words(n_words), source="wordfreq")
