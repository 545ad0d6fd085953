"""A sweep's table of runs, one row per candidate on its scored pairs, and how it is shown: aligned for a
terminal, or as markdown for the summary run. Pure pandas: the runs come in as a DataFrame, whoever read them.
"""

import numpy as np
import pandas as pd

KNN = "knn_recall_at_10"
RECALL = "recall_at_10"
TABLE_COLUMNS = [
    "rank",
    "winner",
    "run",
    "encoder",
    "dim",
    "precision",
    "bytes",
    "queries",
    "pairs",
    "diff_mean",
    "diff_var",
    "fit_rmse",
    "bound_rmse",
    "spearman",
    "knn@10",
    "recall@10",
    "degenerate",
    "score",
]


def _metric(runs: pd.DataFrame, name: str) -> pd.Series:
    return runs[name].astype(float) if name in runs else pd.Series(np.nan, index=runs.index)


def run_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs with columns `run_id, run_name, encoder, dim, precision, queries, degenerate, reference` (`queries`:
    how recall@k and the pairs met the stored vectors) and metrics under their logged names (`heldout/rmse`,
    `fit/diff_mean`, `bound_ey`, `bytes_per_vector`, `compression_ratio`, ...) -> the unranked table, each row on
    its scored pairs; `undefined` marks a row whose score or Spearman is NaN, which can never win."""
    scored = np.where(_metric(runs, "heldout/rmse").notna(), "heldout", "fit")
    stored_bytes = runs["bytes_per_vector"].astype(float)

    def on_scored_pairs(stat: str) -> pd.Series:
        return _metric(runs, f"heldout/{stat}").where(scored == "heldout", _metric(runs, f"fit/{stat}"))

    # NaN where it was logged: a side's similarities were all alike, so its neighbours are ties and its recall
    # an artefact of their order (runs that never logged it are not marked).
    spearman_nan = on_scored_pairs("spearman").isna() & np.where(
        scored == "heldout", "heldout/spearman" in runs, "fit/spearman" in runs
    )
    return pd.DataFrame(
        {
            "run": runs["run_name"],
            "encoder": runs["encoder"],
            "dim": runs["dim"].astype(int),
            "precision": runs["precision"],
            "bytes": stored_bytes.astype(int),
            "queries": runs["queries"],
            "pairs": scored,
            "diff_mean": on_scored_pairs("diff_mean"),
            "diff_var": on_scored_pairs("diff_var"),
            "fit_rmse": _metric(runs, "fit/rmse"),
            "bound_rmse": np.sqrt(_metric(runs, "bound_ey")),
            "spearman": on_scored_pairs("spearman"),
            "knn@10": on_scored_pairs(KNN),
            "recall@10": on_scored_pairs(RECALL),
            "degenerate": runs["degenerate"].astype(bool),
            "score": on_scored_pairs("rmse"),
            "reference": runs["reference"].astype(bool),
            "undefined": spearman_nan | on_scored_pairs("rmse").isna(),
            "run_id": runs["run_id"],
            "input_bytes": (stored_bytes * runs["compression_ratio"].astype(float)).round(),
        }
    )


def shown_columns(table: pd.DataFrame) -> list[str]:
    """TABLE_COLUMNS, `reference` when a run is one, then the target's metric when selection had one (a column
    named like `heldout/...`)."""
    references = ["reference"] if table.reference.any() else []
    return TABLE_COLUMNS + references + [c for c in table.columns if "/" in c]


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of the shown columns, numbers to 5 significant digits."""
    shown = table[shown_columns(table)]
    cells = [[f"{v:.5g}" if isinstance(v, float) else str(v) for v in row] for row in shown.itertuples(index=False)]
    lines = [shown.columns.tolist(), ["---"] * len(shown.columns), *cells]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"


def text_table(table: pd.DataFrame) -> str:
    """The shown columns aligned for a terminal."""
    return table[shown_columns(table)].to_string(index=False, float_format=lambda v: f"{v:.5g}")
