"""How close faiss's own search over the codes compress writes (`--faiss-index`) comes to the yardstick's
ranking, on a real corpus: held-out recall@10 of raw queries searching the stored corpus, by the yardstick
(cosine with each decoded row), by faiss's `index.search` (inner product with each decoded row), and by
`search_by_cosine` (faiss's best k_factor * k re-ranked by cosine); with faiss's search time per query.

    python bench/faiss_serving.py --vectors CACHE.safetensors   # a texts cache written by `simreduce train data=texts`

The split is the package's (20% held out, seeded); the SVD map and every stored form's tables are fit on the
other 80%. Each held-out row searches all other rows. One thread: OMP_NUM_THREADS=1.
"""

import argparse
import os
import time

import faiss
import numpy as np
import torch
from bits import K, Yardstick, split
from common import machine_summary, print_table
from safetensors.torch import load_file

from simreduce.evaluate.neighbours import Neighbours, kept_share
from simreduce.reducers.base import apply_net
from simreduce.reducers.closed_form import SVDReducer
from simreduce.reducers.faiss_index import add_codes, faiss_index, search_by_cosine
from simreduce.reducers.precision import StoredPrecision

CANDIDATES = (  # (dim, form): the best candidates at 16, 32 and 64 bytes in bench/results/bits.md, and others
    (128, "pq1"), (128, "int1"), (128, "pq2"), (128, "int2"), (256, "pq2"), (256, "int2"), (64, "int4"),
    (64, "int8"), (64, "float16"), (64, "float32"), (256, "binary"),
)  # fmt: skip


def recall_of(rows: np.ndarray, queries: torch.Tensor, truth: Neighbours) -> float:
    """recall@K of [Q, K + 1] found rows, each query's own row left out (it is stored too), as the yardstick counts
    it (`kept_share`)."""
    found = [[r for r in row if r != q][:K] for q, row in zip(queries.tolist(), rows, strict=True)]
    return kept_share(truth, torch.tensor(found), K)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", required=True)
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    machine = machine_summary(torch.device("cpu"))  # the load average at the start
    vectors = load_file(args.vectors)["vectors"].float()
    train, held_out = split(len(vectors))
    yardstick = Yardstick(vectors, held_out)
    query_rows = vectors[held_out].numpy()
    rows = []
    for dim, form in CANDIDATES:
        reducer = SVDReducer(vectors.shape[1], dim).fit(vectors[train])
        reduced = apply_net(reducer.net, vectors)
        stored = StoredPrecision.calibrated(form, reduced, train)
        codes = stored.encode(reduced.numpy())
        decoded = torch.from_numpy(stored.decode(codes, dim))
        index = faiss_index(reducer.net, stored, dim, "svd")
        add_codes(index, codes, form)
        start = time.perf_counter()
        _, own = index.search(query_rows, K + 1)
        search_ms = (time.perf_counter() - start) * 1000 / len(query_rows)
        reranked = {f: search_by_cosine(index, query_rows, K + 1, f)[1] for f in (2, 4)}
        rows.append(
            [
                f"svd {dim}-d {form}",
                stored.bytes_per_vector(dim),
                f"{yardstick.recall(decoded, reduced):.3f}",
                f"{recall_of(own, held_out, yardstick.truth):.3f}",
                f"{recall_of(reranked[2], held_out, yardstick.truth):.3f}",
                f"{recall_of(reranked[4], held_out, yardstick.truth):.3f}",
                f"{search_ms:.2f}",
            ]
        )
    header = ["candidate", "bytes", "yardstick", "faiss search", "re-ranked x2", "re-ranked x4", "faiss ms/query"]
    title = f"recall@{K} of {len(held_out)} held-out queries over {len(vectors)} rows: faiss's search and the yardstick"
    print_table(title, header, rows, f"{machine}; {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
