"""The study's three charts, for one run or for every run of a sweep overlaid, and a sweep's metrics
against `dim`.

The study's charts take similarities keyed by a label (one entry for a single run). Every function returns
a Figure; saving and logging are the caller's job.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy.stats import norm  # noqa: E402

BINS = 100
SIMILARITY_EDGES = np.linspace(-1, 1, 2 * BINS + 1)
MARGINS = {"left": 0.08, "right": 0.98, "bottom": 0.1, "top": 0.93}


@dataclass
class Histogram:
    """A density histogram, computed once and drawn as one outline (`stairs`) in every chart that shows it:
    binning again per chart and drawing each bin as a bar of its own would make the charts most of a run's
    logging time."""

    density: np.ndarray
    edges: np.ndarray
    mean: float
    std: float

    @classmethod
    def of(cls, values: np.ndarray, edges: np.ndarray) -> "Histogram":
        density, _ = np.histogram(values, bins=edges, density=True)
        return cls(density, edges, float(values.mean()), float(values.std()))


def _base_panel(ax: Axes, original_label: str, original: Histogram, reduced: dict[str, Histogram]) -> None:
    ax.stairs(original.density, original.edges, fill=True, color="0.75", label=original_label)
    for label, histogram in reduced.items():
        ax.stairs(histogram.density, histogram.edges, linewidth=1.2, label=label)
    ax.set(title="Base distributions in cosine similarity space", xlabel="cosine similarity", ylabel="density")
    ax.legend(fontsize="small")


def _difference_panel(ax: Axes, diffs: dict[str, Histogram]) -> None:
    for label, histogram in diffs.items():
        ax.stairs(
            histogram.density,
            histogram.edges,
            linewidth=1.2,
            label=f"{label}  (mean {histogram.mean:+.4f}, std {histogram.std:.4f})",
        )
    if len(diffs) == 1:
        (histogram,) = diffs.values()
        mean, std = histogram.mean, histogram.std
        grid = np.linspace(histogram.edges[0], histogram.edges[-1], 400)
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


def study_charts(
    original: np.ndarray,
    original_label: str,
    reduced: dict[str, np.ndarray],
    diffs: dict[str, np.ndarray],
    stacked_only: bool = False,
) -> dict[str, Figure]:
    """The study's three charts under their artifact file names: the base distributions (original and
    reduced similarities), the difference distributions, and both stacked; `stacked_only`: the last alone (what
    a candidate beside its job's own run shows). Differences share bins spanning the widest of them."""
    widest = max(float(np.abs(d).max()) for d in diffs.values()) or 1e-3
    diff_edges = np.linspace(-widest, widest, BINS + 1)
    original_histogram = Histogram.of(original, SIMILARITY_EDGES)
    reduced_histograms = {label: Histogram.of(sims, SIMILARITY_EDGES) for label, sims in reduced.items()}
    diff_histograms = {label: Histogram.of(diff, diff_edges) for label, diff in diffs.items()}

    # Fixed margins: a layout engine measures every label in an extra draw, which doubles the cost per chart.
    both, (top, bottom) = plt.subplots(2, 1, figsize=(9, 9), gridspec_kw=MARGINS | {"hspace": 0.25})
    _base_panel(top, original_label, original_histogram, reduced_histograms)
    _difference_panel(bottom, diff_histograms)
    if stacked_only:
        return {"base_and_difference.png": both}
    base, ax = plt.subplots(figsize=(9, 5), gridspec_kw=MARGINS)
    _base_panel(ax, original_label, original_histogram, reduced_histograms)
    difference, ax = plt.subplots(figsize=(9, 5), gridspec_kw=MARGINS)
    _difference_panel(ax, diff_histograms)
    return {"base_distributions.png": base, "difference_distribution.png": difference, "base_and_difference.png": both}


def candidate_label(kind: str, dim: int, precision: str) -> str:
    """`cosine | 0064` in the study's charts, `cosine | 0064 int8` for a candidate stored at another precision."""
    label = f"{kind} | {dim:04d}"
    return label if precision == "float32" else f"{label} {precision}"


def modes(table: pd.DataFrame) -> str:
    """How a selection table's runs compared queries with stored vectors, for a chart's title: `float queries`
    (reduced, not stored) or `stored queries`."""
    found = sorted(set(table.queries)) if "queries" in table else ["stored"]
    return f"{' and '.join(found)} queries"


def candidate_lines(table: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    """A selection table's rows grouped into one chart line per reducer and storage precision: (label, rows);
    a reference's label says it is one (it cannot win)."""
    for (kind, precision), rows in table.groupby(["encoder", "precision"], sort=True):
        label = kind if precision == "float32" else f"{kind} {precision}"
        yield (f"{label} (reference)" if rows.reference.any() else label), rows


METRIC_PANELS = {  # table column -> (panel title, log scale)
    "score": ("rmse of the differences", True),
    "abs_diff_mean": ("|mean| of the differences", True),
    "diff_std": ("std of the differences", True),
    "spearman": ("Spearman of the similarities", False),
    "knn@10": ("10-NN recall", False),
    # Eckart-Young ignores that every reduced vector has unit norm: the encoder can sit well above it and at the
    # tight floor (`simreduce floor`, an optimisation per dim: too slow to run per sweep here).
    "rmse_over_bound": ("fit rmse / Eckart-Young bound\n(a loose floor; tight: simreduce floor)", False),
}


def metrics_vs_dim(table: pd.DataFrame) -> Figure:
    """A sweep's selection table (see `ranking_table.run_table`) -> one panel per metric against `dim`, one line
    per reducer and precision; the rmse panel also draws the Eckart-Young bound that no embedding of that size
    can beat. A log-scale panel with no positive value (every candidate exact: rows of fewer directions than its
    size) is drawn on a linear scale: a log scale has nothing to show, and matplotlib refuses to draw it."""
    data = table.assign(
        abs_diff_mean=table.diff_mean.abs(),
        diff_std=np.sqrt(table.diff_var.clip(lower=0)),  # a variance of exact copies rounds to -1e-19
        rmse_over_bound=table.fit_rmse / table.bound_rmse.where(table.bound_rmse > 0),
    ).sort_values("dim")
    fig, axes = plt.subplots(2, 3, figsize=(14, 8), layout="constrained")
    for ax, (column, (title, log_scale)) in zip(axes.flat, METRIC_PANELS.items(), strict=True):
        for label, runs in candidate_lines(data):
            ax.plot(runs.dim, runs[column], marker="o", label=label)
        if column == "score":
            floor = data.groupby("dim").bound_rmse.first()
            ax.plot(floor.index, floor.values, "k--", linewidth=1, label="Eckart-Young bound (√bound_ey, loose)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(data.dim.unique()), labels=[str(d) for d in sorted(data.dim.unique())])
        if log_scale and (data[column] > 0).any():
            ax.set_yscale("log")
        ax.set(title=title, xlabel="dim")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize="small")
    fig.suptitle(
        f"Metrics against dim ({', '.join(sorted(set(data.pairs)))} pairs, {modes(data)}; bound on training words)"
    )
    return fig


def pareto_frontier(bytes_per_vector: pd.Series, quality: pd.Series, higher_is_better: bool) -> pd.DataFrame:
    """The candidates no other beats on both axes: fewer (or as few) bytes and a better metric."""
    points = pd.DataFrame({"bytes": bytes_per_vector, "quality": quality}).dropna().sort_values("bytes")
    best, keep = -np.inf, []
    for row in points.itertuples():
        value = row.quality if higher_is_better else -row.quality
        if value > best:
            best = value
            keep.append(row.Index)
    return points.loc[keep]


RATE_PANELS = {  # table column -> (title, higher is better, the logged metric's last name part)
    "recall@10": ("recall@10: share of true top 10 found", True, "recall_at_10"),
    "score": ("rmse of the differences", False, "rmse"),
}


def rate_distortion(table: pd.DataFrame, target=None) -> Figure:
    """A sweep's selection table -> bytes per vector (log 2) against recall@10 and rmse on its scored pairs:
    one line per reducer and precision, the Pareto frontier, the target's line on its panel, the winner starred, and the
    uncompressed input (float32) as a reference point."""
    winner = table[table.winner == "*"]
    input_bytes = table.input_bytes.iloc[0]
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5), layout="constrained")
    for ax, (column, (title, higher_is_better, metric)) in zip(axes, RATE_PANELS.items(), strict=True):
        for label, runs in candidate_lines(table.sort_values("bytes")):
            ax.plot(runs.bytes, runs[column], marker="o", label=label)
        frontier = pareto_frontier(table.bytes, table[column], higher_is_better)
        ax.step(frontier.bytes, frontier.quality, where="post", color="k", alpha=0.3, linewidth=4, label="Pareto")
        ax.plot(winner.bytes, winner[column], "*", color="gold", markersize=18, markeredgecolor="k", label="winner")
        ax.plot([input_bytes], [1.0 if higher_is_better else 0.0], "D", color="grey", label="input")
        if target is not None and target.metric.rsplit("/", 1)[-1] == metric:
            ax.axhline(target.value, color="red", linestyle="--", linewidth=1, label=f"target: {target}")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="bytes per vector", title=title)
        ax.grid(alpha=0.3)
    # One legend beside both panels: inside either, a sweep's many lines (two objectives by five forms) covered the
    # winner's star. The panels share every label but the target's.
    handles = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(handles.values(), handles.keys(), loc="outside right upper", fontsize="small")
    fig.suptitle(
        f"What each size costs and keeps ({', '.join(sorted(set(table.pairs)))} pairs and queries; {modes(table)})"
    )
    return fig
