"""A large word list embedded into a fresh cache by `train.py` itself: time, words per second, peak RSS.

The run trains a single step, so its peak memory is the embedding's (vectors + one batch of activations),
plus the job's evaluation and charts on N words.
"""

import tempfile
from pathlib import Path

from common import print_table
from sweep import grouped, timed_train


def run(n_words: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="simreduce-embed-") as tmp:
        root = Path(tmp)
        overrides = [f"data.n_words={n_words}", "encoder.steps=1", "tracking.log_model=false", *extra]
        wall, peak_rss, times = timed_train(overrides, root)
        cache_bytes = sum(f.stat().st_size for f in (root / ".cache" / "vectors").glob("*.safetensors"))
    phases = grouped(times["jobs"][0])
    print_table(
        f"Embedding {n_words:,} words with the default model into a fresh cache {' '.join(extra)}",
        ["embedding", "words / s", "cache file", "rest of the job", "process wall", "peak RSS"],
        [
            [
                f"{phases['embedding']:.1f} s",
                f"{n_words / phases['embedding']:.0f}",
                f"{cache_bytes / 2**20:.0f} MiB",
                f"{times['jobs'][0]['wall'] - phases['embedding']:.1f} s",
                f"{wall:.1f} s",
                f"{peak_rss / 2**20:.0f} MiB",
            ]
        ],
    )
    return {"wall": wall, "peak_rss": peak_rss, "embedding": phases["embedding"]}
