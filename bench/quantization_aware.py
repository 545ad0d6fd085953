"""Training through the quantiser: does a short fine-tune after the float fit, with the stored form's codes in the
loop, keep more held-out neighbours than the same form calibrated on the float map alone?

For each size, the default cosine encoder is fitted through the package's own path (as `neighbour_loss.py`), each
low-bit form is calibrated as a candidate's is (`StoredPrecision.calibrated` on the training rows: the learned
rotation, then levels or centroids), and then fine-tuned for a few full-batch Adam steps with a straight-through
estimator: each training row's code is its nearest level or centroid (hard, recomputed every step), the decoded
vector carries the gradient back to the level or centroid it used and, unchanged, to the reduced vector. The
rotation stays. Two things are trained, by two objectives:
- `codebooks`: only the levels or centroids (Distill-VQ's setting: the encoder fixed);
- `map+codebooks`: those and the linear map (its rows re-coded every step);
- `pairs`: the pair loss between each float query and each stored row, `mean (cos(x_i, x_j) - cos(z_i, q(z_j)))^2`
  (the Gram form, as training's), the asymmetric comparison a float query makes;
- `listwise`: KL between the softmax (temperature `--tau`) of each training row's original cosines and of its
  float query's against the decoded rows, over its 10 true neighbours and the 10 its stored search returns now.
Held-out recall@10 as the sweep scores it (`eval.queries=float`: each held-out row, reduced, searches the whole
stored corpus); the stored form is re-read from the trained levels or centroids (`map+codebooks`: also re-coded).

    OMP_NUM_THREADS=1 python bench/quantization_aware.py VECTORS.safetensors [--n 5000] [--dims 64,128]
        [--forms int4,pq2,pq1] [--steps 10,30]
"""

import argparse
import os
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from common import machine_note, print_table, quiet
from neighbour_loss import InMemorySource, config
from safetensors.torch import load_file

from simreduce.evaluate.neighbours import retrieval_recall, true_neighbours
from simreduce.experiment.fitting import build_reducer, fit
from simreduce.reducers.base import apply_net
from simreduce.reducers.codes import CODE_BITS
from simreduce.reducers.precision import StoredPrecision
from simreduce.reducers.product_codes import assign, decoded_parts, sub_vectors
from simreduce.vectors.data import VectorDataModule

LEARNING_RATES = {"codebooks": 1e-3, "map": 1e-4}  # the map's: DEFAULT_LR["adam"]; a larger one undid the fit
LISTWISE_K = 10


def straight_through(unit: torch.Tensor, precision: StoredPrecision, book: torch.Tensor) -> torch.Tensor:
    """[n, dim] rotated unit rows -> [n, dim] their decoded values (still rotated): each value (a scalar code) or
    sub-vector (a product code) replaced by its nearest level or centroid in `book`, the gradient passing to that
    level or centroid and, unchanged, to `unit`."""
    if precision.name in CODE_BITS:
        boundaries = (book[:, 1:] + book[:, :-1]).detach() / 2
        codes = (unit.detach()[:, :, None] > boundaries).sum(-1)
        return book[torch.arange(unit.shape[1]), codes] + (unit - unit.detach())
    parts = sub_vectors(unit, book.shape[2])
    decoded = decoded_parts(assign(parts.detach(), book.detach()), book) + (parts - parts.detach())
    return decoded.flatten(1)[:, : unit.shape[1]]


def trained_precision(precision: StoredPrecision, book: torch.Tensor) -> StoredPrecision:
    """The form with the trained levels (sorted, as a calibrated form's are) or centroids."""
    if precision.levels is not None:
        return StoredPrecision(precision.name, rotation=precision.rotation, levels=np.sort(book.numpy(), axis=1))
    return StoredPrecision(precision.name, rotation=precision.rotation, codebooks=book.numpy().copy())


class Objective:
    """The two fine-tuning objectives over the training rows `train` [n, D]: `pairs(z, c)` and `listwise(z, c)`
    for their float reductions z and decoded stored rows c ([n, dim] each)."""

    def __init__(self, train: torch.Tensor, tau: float):
        self.x = F.normalize(train.double(), dim=1)
        self.x_total = (self.x.T @ self.x).square().sum()
        similarities = (self.x @ self.x.T).float()
        self.similarities = similarities.fill_diagonal_(-2)
        self.true_top = similarities.topk(LISTWISE_K, dim=1).indices
        self.tau = tau

    def pairs(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        a, c = F.normalize(z.double(), dim=1), F.normalize(c.double(), dim=1)
        x = self.x
        return (self.x_total - 2 * ((x.T @ a) * (x.T @ c)).sum() + ((a.T @ a) * (c.T @ c)).sum()) / len(x) ** 2

    def listwise(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        a, c = F.normalize(z, dim=1), F.normalize(c, dim=1)
        with torch.no_grad():
            searched = (a @ c.T).fill_diagonal_(-2).topk(LISTWISE_K, dim=1).indices
            rows = torch.cat([self.true_top, searched], 1)
        wanted = F.log_softmax(self.similarities.gather(1, rows) / self.tau, 1)
        found = F.log_softmax((a[:, None, :] * c[rows]).sum(-1) / self.tau, 1)
        return (wanted.exp() * (wanted - found)).sum(1).mean()


def fine_tune(linear, precision, train, vectors, objective, trained, loss_name, checkpoints, recall):
    """Adam on `trained` ("codebooks" or "map+codebooks") through the quantiser; the held-out recall after each
    of `checkpoints` steps, and the seconds the steps took."""
    rotation = torch.from_numpy(precision.rotation)
    constants = precision.levels if precision.levels is not None else precision.codebooks
    book = torch.nn.Parameter(torch.from_numpy(constants).clone())
    weight = torch.nn.Parameter(linear.weight.detach().clone())
    bias = torch.nn.Parameter(torch.zeros(len(weight)) if linear.bias is None else linear.bias.detach().clone())
    groups = [{"params": [book], "lr": LEARNING_RATES["codebooks"]}]
    if trained == "map+codebooks":
        groups.append({"params": [weight, bias], "lr": LEARNING_RATES["map"]})
    optimizer = torch.optim.Adam(groups)
    loss_of = getattr(objective, loss_name)
    found, seconds = [], 0.0
    for step in range(1, max(checkpoints) + 1):
        started = time.perf_counter()
        optimizer.zero_grad()
        z = train @ weight.T + bias
        decoded = straight_through(F.normalize(z, dim=1) @ rotation, precision, book) @ rotation.T
        loss_of(z, decoded).backward()
        optimizer.step()
        seconds += time.perf_counter() - started
        if step in checkpoints:
            with torch.no_grad():
                reduced = vectors @ weight.T + bias
                found.append(recall(reduced, trained_precision(precision, book.detach()).comparable(reduced)))
    return found, seconds


def run(path: str, n: int, dims: list[int], forms: list[str], checkpoints: list[int], tau: float) -> None:
    vectors = load_file(path)["vectors"][:n].float().contiguous()
    split = config([]).data
    data = VectorDataModule(
        InMemorySource, "bench", split.val_fraction, split.batch_size, split.seed, split.max_fit_rows, vectors=vectors
    )
    data.setup("fit")
    truth = true_neighbours(vectors, data.val_idx, 11)
    train = vectors[data.fit_idx]
    objective = Objective(train, tau)

    def recall(reduced: torch.Tensor, stored: torch.Tensor) -> float:
        return retrieval_recall(vectors, stored, data.val_idx, [10], truth=truth, query_vectors=reduced)[10]

    rows = []
    for dim in dims:
        cfg = config([f"encoder.dim={dim}"])
        reducer = build_reducer(cfg, vectors.shape[1])
        with quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit(reducer, data, cfg.trainer)
        reduced = apply_net(reducer.net, vectors)
        print(f"d={dim} float32: {recall(reduced, reduced):.3f}", flush=True)
        for form in forms:
            precision = StoredPrecision.calibrated(form, reduced, data.fit_idx)
            calibrated = recall(reduced, precision.comparable(reduced))
            cells = [f"{dim}-d {form}", str(precision.bytes_per_vector(dim)), f"{calibrated:.3f}"]
            for trained in ("codebooks", "map+codebooks"):
                for loss_name in ("pairs", "listwise"):
                    found, seconds = fine_tune(
                        reducer.net[0], precision, train, vectors, objective, trained, loss_name, checkpoints, recall
                    )
                    cells.append(" / ".join(f"{r:.3f}" for r in found) + f" ({seconds:.0f} s)")
                    print(dim, form, trained, loss_name, cells[-1], f"load {os.getloadavg()[0]:.1f}", flush=True)
            rows.append(cells)
    after = " / ".join(map(str, checkpoints))
    print_table(
        f"heldout recall@10 of {n:,} rows of {os.path.basename(path)} ({len(data.fit_idx):,} training, "
        f"{len(data.val_idx):,} held-out queries), calibrated, then fine-tuned through the quantiser ({after} steps)",
        [
            "candidate",
            "bytes",
            "calibrated",
            "codebooks, pairs",
            "codebooks, listwise",
            "map+codebooks, pairs",
            "map+codebooks, listwise",
        ],
        rows,
        note=machine_note(f"listwise temperature {tau}"),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("vectors", help="a safetensors file with `vectors` [N, D]")
    parser.add_argument("--n", type=int, default=5000, help="rows taken from the file")
    parser.add_argument("--dims", default="64,128")
    parser.add_argument("--forms", default="int4,pq2,pq1")
    parser.add_argument("--steps", default="10,30", help="the steps after which recall is scored")
    parser.add_argument("--tau", type=float, default=0.05, help="the listwise objective's temperature")
    args = parser.parse_args()
    checkpoints = sorted(int(s) for s in args.steps.split(","))
    run(args.vectors, args.n, [int(d) for d in args.dims.split(",")], args.forms.split(","), checkpoints, args.tau)
