"""Every reducer on real sentences, through `train.py -m data=texts` itself: heldout recall@10 per reducer and
size (and per storage precision, where candidates of several precisions were logged), as one table.

The corpus: `--corpus FILE` (one text a line), else the prose sentences of the Vim manual shipped on this
machine (/usr/share/vim/vim*/doc/*.txt): real English sentences, no network needed.

    python bench/real_texts.py [--corpus FILE] [--n 6000] [--dims 16,32,64,128,256]
    python bench/real_texts.py --reducers cosine --precisions float32,float16,int8,binary
    python bench/real_texts.py --reducers cosine,pq --dims 8,16,32,64,128

Two tables: recall by reducer and size, and by bytes per vector, where faiss's product quantization (pq, a
reference) meets the reducers at the same storage cost.
"""

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
from common import PROJECT_ROOT, print_table

REDUCERS = ("cosine", "autoencoder", "pca", "svd", "random", "pq")  # pq: the faiss extra


def manual_sentences(limit: int) -> list[str]:
    """Prose sentences of the Vim manual (not code, tables or headings), 40-300 characters, unique."""
    sentences: list[str] = []
    for path in sorted(glob.glob("/usr/share/vim/vim*/doc/usr_*.txt")) + sorted(
        glob.glob("/usr/share/vim/vim*/doc/*.txt")
    ):
        paragraph: list[str] = []
        for line in [*Path(path).read_text(encoding="utf-8", errors="replace").splitlines(), ""]:
            prose = line.strip() and not line.startswith(("\t", "    ")) and not line.isupper()
            if prose and not line.rstrip().endswith(("*", ">", "~")):
                paragraph.append(line.strip())
                continue
            for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", " ".join(paragraph)):
                if 40 <= len(sentence) <= 300 and sum(c.isalpha() for c in sentence) > 0.7 * len(sentence):
                    sentences.append(sentence)
            paragraph = []
    return list(dict.fromkeys(sentences))[:limit]


def run(corpus: Path | None, n: int, dims: str, reducers: str, precisions: str) -> None:
    with tempfile.TemporaryDirectory(prefix="simreduce-real-texts-") as tmp:
        root = Path(tmp)
        if corpus is None:
            corpus = root / "sentences.txt"
            corpus.write_text("\n".join(manual_sentences(n)) + "\n")
        n_texts = len(corpus.read_text().splitlines())
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "train.py", "-m", "data=texts", f"data.path={corpus}", f"encoder={reducers}",
             f"encoder.dim={dims}", f"eval.precisions=[{precisions}]", "select.register=never"],
            cwd=PROJECT_ROOT, env={**os.environ, "SIMREDUCE_ROOT": str(root)}, capture_output=True, text=True,
        )  # fmt: skip
        wall = time.perf_counter() - started
        if done.returncode:
            raise RuntimeError(done.stderr[-3000:])
        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
        runs = mlflow.search_runs(search_all_experiments=True, filter_string="attributes.status = 'FINISHED'")
    runs = runs[runs["tags.encoder"].notna()]
    precision = runs.get("tags.precision", None)
    runs = runs.assign(precision=precision.fillna("float32") if precision is not None else "float32")
    note = f"one sweep, {len(runs)} candidate runs, {wall:.0f} s; load average {os.getloadavg()[0]:.1f} at the end"
    print_recall_table(runs, "params.encoder.dim", "d", "by reducer and size", n_texts, note)
    print_recall_table(
        runs, "metrics.bytes_per_vector", "B", "by bytes per vector (pq: faiss OPQ+PQ codes, a reference)", n_texts
    )


def print_recall_table(runs, column: str, unit: str, what: str, n_texts: int, note: str = "") -> None:
    """Heldout recall@10, one row per reducer and stored form, one column per value of `column`."""
    sizes = sorted({int(v) for v in runs[column]})
    rows = []
    for (reducer, stored), group in runs.groupby(["tags.encoder", "precision"]):
        by_size = dict(zip(group[column].astype(int), group["metrics.heldout/recall_at_10"], strict=True))
        rows.append([reducer, stored, *(f"{by_size[v]:.3f}" if v in by_size else "-" for v in sizes)])
    order = {r: i for i, r in enumerate(REDUCERS)}
    rows.sort(key=lambda row: (order.get(row[0], 99), row[1] != "float32", row[1]))
    print_table(
        f"heldout recall@10 on {n_texts:,} real sentences (all-MiniLM-L6-v2, 384-d), {what}",
        ["reducer", "stored as", *(f"{unit}={v}" for v in sizes)],
        rows,
        note=note,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, help="one text a line (default: the Vim manual's sentences)")
    parser.add_argument("--n", type=int, default=6000, help="texts taken from the default corpus")
    parser.add_argument("--dims", default="16,32,64,128,256")
    parser.add_argument("--reducers", default=",".join(REDUCERS))
    parser.add_argument("--precisions", default="float32,int8", help="eval.precisions of the sweep")
    args = parser.parse_args()
    run(args.corpus, args.n, args.dims, args.reducers, args.precisions)
