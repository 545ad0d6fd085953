"""The study's three charts, for one run or for every run of a sweep overlaid.

Each function takes similarities keyed by a label (one entry for a single run) and returns a Figure;
saving and logging are the caller's job.
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
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
