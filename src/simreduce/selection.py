"""The study's rule, made exact: rank a sweep's runs and pick the smallest size that is nearly the best.

A run's score is the RMSE of its differences (`sqrt(mean^2 + var)`: centred on 0 and narrow), on `heldout`
pairs when it has any, else on `fit` pairs. `best` is the lowest score; the winner is the smallest `dim`
whose score is within `tolerance` of it (ties: the lower score, then the encoder's name). Degenerate runs
(`dim` at or above the number of training words, which can reach zero loss trivially) are ranked but
cannot win, unless every run is degenerate.

Pure pandas: the runs come in as a DataFrame, whoever read them.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simreduce.errors import SimreduceError

KNN = "knn_recall_at_10"
TABLE_COLUMNS = [
    "rank",
    "winner",
    "run",
    "encoder",
    "dim",
    "pairs",
    "diff_mean",
    "diff_var",
    "fit_rmse",
    "bound_rmse",
    "spearman",
    "knn@10",
    "degenerate",
    "score",
]


@dataclass(frozen=True)
class Selection:
    """`table`: one row per run, best score first (TABLE_COLUMNS, then `run_id`); `winner`: one of its rows."""

    table: pd.DataFrame
    winner: pd.Series
    reason: str


def run_score(metrics: Mapping[str, float]) -> float:
    """One run's score under the rule: rmse of the differences on heldout pairs when it has any, else on fit."""
    return float(metrics.get("heldout/rmse", metrics["fit/rmse"]))


def _metric(runs: pd.DataFrame, name: str) -> pd.Series:
    return runs[name].astype(float) if name in runs else pd.Series(np.nan, index=runs.index)


def run_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs with columns `run_id, run_name, encoder, dim, degenerate` and metrics under their logged names
    (`heldout/rmse`, `fit/diff_mean`, `bound_ey`, ...) -> the unranked table, each row on its scored pairs."""
    scored = np.where(_metric(runs, "heldout/rmse").notna(), "heldout", "fit")

    def on_scored_pairs(stat: str) -> pd.Series:
        return _metric(runs, f"heldout/{stat}").where(scored == "heldout", _metric(runs, f"fit/{stat}"))

    return pd.DataFrame(
        {
            "run": runs["run_name"],
            "encoder": runs["encoder"],
            "dim": runs["dim"].astype(int),
            "pairs": scored,
            "diff_mean": on_scored_pairs("diff_mean"),
            "diff_var": on_scored_pairs("diff_var"),
            "fit_rmse": _metric(runs, "fit/rmse"),
            "bound_rmse": np.sqrt(_metric(runs, "bound_ey")),
            "spearman": on_scored_pairs("spearman"),
            "knn@10": on_scored_pairs(KNN),
            "degenerate": runs["degenerate"].astype(bool),
            "score": on_scored_pairs("rmse"),
            "run_id": runs["run_id"],
        }
    )


def _label(row: pd.Series) -> str:
    return f"{row.encoder} d={row.dim}"


def _reason(winner: pd.Series, best: pd.Series, eligible: pd.DataFrame, table: pd.DataFrame, tolerance: float) -> str:
    rmse = f"{winner.pairs} rmse"
    if len(eligible) == 1:
        why = f"it is the only run that can win ({rmse} {winner.score:.4g})"
    elif winner.run_id == best.run_id:
        why = f"it has the lowest {rmse}, {best.score:.4g}, and no smaller size is within {tolerance:.0%} of it"
    else:
        why = (
            f"the smallest size whose {rmse}, {winner.score:.4g}, is within {tolerance:.0%} "
            f"of the best, {best.score:.4g} ({_label(best)})"
        )
    n_degenerate = int(table.degenerate.sum())
    if n_degenerate == len(table):
        why += "; every run is degenerate (dim at or above the number of training words): add words or lower dim"
    elif n_degenerate:
        why += f"; {n_degenerate} degenerate run(s), dim at or above the number of training words, could not win"
    return f"{_label(winner)} wins: {why}."


def check_tolerance(tolerance: float) -> None:
    if not tolerance >= 0:
        raise SimreduceError(f"select.tolerance={tolerance} must be a number at or above 0, e.g. 0.1 for 10%.")


REGISTER_POLICIES = ("auto", "always", "never")


def check_register(policy: str) -> None:
    if policy not in REGISTER_POLICIES:
        raise SimreduceError(f"select.register={policy!r} is not one of {REGISTER_POLICIES}.")


def alias_decision(
    policy: str, holder: dict[str, str] | None, winner: dict[str, str], tolerance: float
) -> tuple[bool, str]:
    """Whether the `winner` alias moves to this sweep's winner (tags `data_id`, `score`) from `holder` (the
    tags and `version` of the version holding it, None when none does), and why, in a few words.

    `auto` keeps a model nobody asked to replace: the alias moves to a model of other data (a new setup), or
    to one of the same data whose score is within `tolerance` of the holder's (the selection rule's own
    reading of "as good"); a throwaway sweep (`encoder.steps=0`, a tiny batch) scores worse and moves nothing.
    """
    check_register(policy)
    if policy != "auto":
        return policy == "always", f"select.register={policy}"
    if holder is None:
        return True, "no version held it"
    version = holder["version"]
    if holder.get("data_id") != winner["data_id"]:
        return True, f"it reduces other data than version {version}"
    held, new = float(holder.get("score", "nan")), float(winner["score"])
    if new <= held * (1 + tolerance):
        return True, f"its score {new:.4g} is within {tolerance:.0%} of version {version}'s {held:.4g}, same data"
    return False, (
        f"version {version} scores {held:.4g} on the same data, better than {new:.4g}; select.register=always moves it"
    )


def select_winner(runs: pd.DataFrame, tolerance: float) -> Selection:
    """Rank `runs` (see `run_table`) and apply the rule of the module docstring."""
    check_tolerance(tolerance)
    table = run_table(runs)
    if table.empty or table.score.isna().all():
        raise SimreduceError("the sweep has no finished run with an rmse to compare: nothing to select.")
    table = table.sort_values(["score", "dim", "encoder"], na_position="last", ignore_index=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    scored = table[table.score.notna()]
    eligible = scored[~scored.degenerate] if not scored.degenerate.all() else scored
    best = eligible.iloc[0]
    near_best = eligible[eligible.score <= best.score * (1 + tolerance)]
    winner = near_best.sort_values(["dim", "score", "encoder"]).iloc[0]
    table.insert(1, "winner", np.where(table.run_id == winner.run_id, "*", ""))
    return Selection(table, table.loc[winner.name], _reason(winner, best, eligible, table, tolerance))


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of the TABLE_COLUMNS, numbers to 5 significant digits."""
    shown = table[TABLE_COLUMNS]
    cells = [[f"{v:.5g}" if isinstance(v, float) else str(v) for v in row] for row in shown.itertuples(index=False)]
    lines = [shown.columns.tolist(), ["---"] * len(shown.columns), *cells]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"


def text_table(table: pd.DataFrame) -> str:
    """The TABLE_COLUMNS aligned for a terminal."""
    return table[TABLE_COLUMNS].to_string(index=False, float_format=lambda v: f"{v:.5g}")
