"""One size trained and scored on 100k x 2048 vectors through `train.py` itself, with wall time and peak RSS.

The vectors are synthetic (see common.anisotropic_vectors), written as the cache entry of a stand-in model
folder and a word list of 100k made-up words: the job finds them in the cache, as it would find a model's
embedded vocabulary, and never loads a model. Everything after that is the default pipeline.
"""

import tempfile
from pathlib import Path

from common import anisotropic_vectors, print_table
from sweep import grouped, print_logged_runs, print_logging_detail, timed_train

from simreduce.vectors.cache import VectorCache
from simreduce.vectors.embedding import Embedder


def seed_cache(root: Path, n: int, d: int) -> list[str]:
    """Write the synthetic vectors where `train.py` will look for them -> the overrides that select them."""
    model_folder = root / "synthetic-model"
    model_folder.mkdir()
    words = [f"w{i:07d}" for i in range(n)]
    words_file = root / "words.txt"
    words_file.write_text("\n".join(words) + "\n")
    key = Embedder("synthetic", str(model_folder)).cache_key()
    VectorCache(root / ".cache" / "vectors").save(key, words, anisotropic_vectors(n, d))
    return [f"embedder.name_or_path={model_folder}", "embedder.name=synthetic", f"data.words_file={words_file}"]


def run(n: int, d: int, dim: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="simreduce-scale-") as tmp:
        root = Path(tmp)
        overrides = [*seed_cache(root, n, d), f"encoder.dim={dim}", *extra]
        wall, peak_rss, times = timed_train(overrides, root)
        print_logged_runs(root)
    job = times["jobs"][0]
    phases = grouped(job)
    print_table(
        f"{n:,} x {d} float32 vectors, encoder.dim={dim} {' '.join(extra)}: train + evaluate + log",
        ["imports", *phases, "process wall", "peak RSS"],
        [
            [
                f"{times['imports']:.1f} s",
                *[f"{v:.1f} s" for v in phases.values()],
                f"{wall:.1f} s",
                f"{peak_rss / 2**30:.2f} GiB",
            ]
        ],
        note="`embedding` here is reading and checking the cached vectors (no model is loaded).",
    )
    print_logging_detail(times)
    return {"wall": wall, "peak_rss": peak_rss, "times": times}
