"""The study's three charts, for one run or for every run of a sweep overlaid, and a sweep's metrics
against `dim`.

The study's charts take similarities keyed by a label (one entry for a single run). Every function returns
a Figure; saving and logging are the caller's job.
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy.stats import norm  # noqa: E402

BINS = 100


def _base_panel(ax: Axes, original: np.ndarray, original_label: str, reduced: dict[str, np.ndarray]) -> None:
    bins = np.linspace(-1, 1, 2 * BINS + 1)
    ax.hist(original, bins=bins, density=True, color="0.75", label=original_label)
    for label, sims in reduced.items():
        ax.hist(sims, bins=bins, density=True, histtype="step", linewidth=1.2, label=label)
    ax.set(title="Base distributions in cosine similarity space", xlabel="cosine similarity", ylabel="density")
    ax.legend(fontsize="small")


def _difference_panel(ax: Axes, diffs: dict[str, np.ndarray]) -> None:
    widest = max(float(np.abs(d).max()) for d in diffs.values()) or 1e-3
    bins = np.linspace(-widest, widest, BINS + 1)
    for label, diff in diffs.items():
        mean, std = float(diff.mean()), float(diff.std())
        ax.hist(
            diff,
            bins=bins,
            density=True,
            histtype="step",
            linewidth=1.2,
            label=f"{label}  (mean {mean:+.4f}, std {std:.4f})",
        )
        if len(diffs) == 1:
            grid = np.linspace(-widest, widest, 400)
            ax.plot(grid, norm.pdf(grid, mean, std or 1e-12), "k--", linewidth=1, label="fitted normal")
            ax.axvline(mean, color="C3", linewidth=1, label="mean")
            ax.axvspan(mean - std, mean + std, color="C3", alpha=0.1, label="mean ± std")
    ax.axvline(0, color="k", linewidth=0.6)
    ax.set(
        title="Difference distributions (original − reduced)",
        xlabel="difference in cosine similarity",
        ylabel="density",
    )
    ax.legend(fontsize="small")


def base_distributions(original: np.ndarray, original_label: str, reduced: dict[str, np.ndarray]) -> Figure:
    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    _base_panel(ax, original, original_label, reduced)
    return fig


def difference_distribution(diffs: dict[str, np.ndarray]) -> Figure:
    fig, ax = plt.subplots(figsize=(9, 5), layout="constrained")
    _difference_panel(ax, diffs)
    return fig


def base_and_difference(
    original: np.ndarray, original_label: str, reduced: dict[str, np.ndarray], diffs: dict[str, np.ndarray]
) -> Figure:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 9), layout="constrained")
    _base_panel(top, original, original_label, reduced)
    _difference_panel(bottom, diffs)
    return fig


def study_charts(
    original: np.ndarray, original_label: str, reduced: dict[str, np.ndarray], diffs: dict[str, np.ndarray]
) -> dict[str, Figure]:
    """The three charts under their artifact file names."""
    return {
        "base_distributions.png": base_distributions(original, original_label, reduced),
        "difference_distribution.png": difference_distribution(diffs),
        "base_and_difference.png": base_and_difference(original, original_label, reduced, diffs),
    }


METRIC_PANELS = {  # table column -> (panel title, log scale)
    "score": ("rmse of the differences", True),
    "abs_diff_mean": ("|mean| of the differences", True),
    "diff_std": ("std of the differences", True),
    "spearman": ("Spearman of the similarities", False),
    "knn@10": ("10-NN recall", False),
    "rmse_over_bound": ("fit rmse / Eckart-Young floor", False),
}


def metrics_vs_dim(table: pd.DataFrame) -> Figure:
    """A sweep's selection table (see `selection.run_table`) -> one panel per metric against `dim`, one line
    per encoder kind; the rmse panel also draws the Eckart-Young floor that no embedding of that size can beat."""
    data = table.assign(
        abs_diff_mean=table.diff_mean.abs(),
        diff_std=np.sqrt(table.diff_var),
        rmse_over_bound=table.fit_rmse / table.bound_rmse.where(table.bound_rmse > 0),
    ).sort_values("dim")
    fig, axes = plt.subplots(2, 3, figsize=(14, 8), layout="constrained")
    for ax, (column, (title, log_scale)) in zip(axes.flat, METRIC_PANELS.items(), strict=True):
        for kind, runs in data.groupby("encoder"):
            ax.plot(runs.dim, runs[column], marker="o", label=kind)
        if column == "score":
            floor = data.groupby("dim").bound_rmse.first()
            ax.plot(floor.index, floor.values, "k--", linewidth=1, label="Eckart-Young floor (√bound_ey)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(data.dim.unique()), labels=[str(d) for d in sorted(data.dim.unique())])
        if log_scale:
            ax.set_yscale("log")
        ax.set(title=title, xlabel="dim")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize="small")
    fig.suptitle(f"Metrics against dim ({', '.join(sorted(set(data.pairs)))} pairs; floor on training words)")
    return fig
