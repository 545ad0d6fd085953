"""A corpus of real English prose of any size, from what this machine already has: the sentences of the docstrings
and comments of the installed Python packages and of /usr/share/doc, one a line, deduplicated, shuffled (seeded).
The recipe benchmarks (`neighbour_loss.py`, `quantization_aware.py`) need more real sentences than
`package_descriptions.txt`'s 20,000 (about 335,000 here with the dev install).

    python bench/prose_corpus.py prose.txt [--lines 100000]
    simreduce train data=texts data.path=prose.txt ...   # or embed it once and pass the vectors to the benches
"""

import argparse
import glob
import random
import re
import sys
from pathlib import Path

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
SKIPPED_STARTS = (">>>", "...", ":", "-", "*", "|", "=")  # doctests, reST fields, lists, tables, rules
MIN_LETTERS = 0.85  # share of letters and spaces in a line of prose (code and tables have less)
LENGTHS = (40, 300)  # characters of a kept sentence


def prose_lines(text: str):
    """The runs of consecutive prose lines of `text` (comment marks dropped), each joined into one paragraph."""
    paragraph: list[str] = []
    for line in [*text.splitlines(), ""]:
        stripped = line.strip().lstrip("#").strip()
        letters = sum(c.isalpha() or c == " " for c in stripped)
        if stripped and not stripped.startswith(SKIPPED_STARTS) and letters > MIN_LETTERS * len(stripped):
            paragraph.append(stripped)
            continue
        if paragraph:
            yield " ".join(paragraph)
        paragraph = []


def sentences(paths: list[str]) -> list[str]:
    """Every distinct sentence of 40-300 characters starting with a capital in the files `paths`, in their order."""
    seen: dict[str, None] = {}
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8", errors="ignore")
        except OSError:  # a folder, or unreadable
            continue
        for paragraph in prose_lines(text):
            for sentence in SENTENCE_END.split(paragraph):
                if LENGTHS[0] <= len(sentence) <= LENGTHS[1] and sentence[0].isupper():
                    seen.setdefault(sentence)
    return list(seen)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output")
    parser.add_argument("--lines", type=int, default=None, help="keep the first LINES after shuffling")
    args = parser.parse_args()
    site = next(p for p in sys.path if p.endswith("site-packages"))
    paths = sorted(glob.glob(f"{site}/**/*.py", recursive=True)) + sorted(
        glob.glob("/usr/share/doc/**/*", recursive=True)
    )
    found = sentences(paths)
    random.Random(0).shuffle(found)
    Path(args.output).write_text("\n".join(found[: args.lines]) + "\n", encoding="utf-8")
    print(f"{min(len(found), args.lines or len(found)):,} of {len(found):,} sentences written to {args.output}")
