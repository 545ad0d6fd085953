"""Pick a sweep's winner: the cheapest candidate that reaches the user's target, or the study's rule.

A candidate is one run: a reducer at one dim, its vectors stored at one precision (`precision`: float32,
float16, int8, binary), costing `bytes_per_vector`.

With a `Target` (`select.metric`, `select.target`): the winner is the candidate with the fewest bytes per
vector whose metric reaches the target (>=, or <= for error-like metrics such as rmse); ties go to the better
metric, then the smaller dim. When none reaches it, the best by the metric is named (and registered with
`target_met=false`) with the size to try next. Runs with no held-out rows (`data.val_fraction=0`, the study's
setting) log no `heldout/` metric: a held-out target then falls back to the same metric on the fit rows, and
the reason says so.

Without one (`select.target: null`), the study's rule made exact: a run's score is the RMSE of its differences
(`sqrt(mean^2 + var)`: centred on 0 and narrow), on `heldout` pairs when it has any, else on `fit` pairs.
`best` is the lowest score; the winner is the smallest candidate (fewest bytes per vector: the smallest `dim`
at one precision) whose score is within `tolerance` of it (ties: the lower score, then the smaller dim, then
the encoder's name).

Either way, degenerate runs (`dim` at or above the number of training words, which can reach zero loss
trivially) are ranked but cannot win, unless every run is degenerate; runs whose metrics are NaN (the score, the
target's metric, or the Spearman of a side whose similarities are all alike; recall is NaN where every query's
k-th neighbour ties with the next: see `evaluate.neighbours`) are ranked but never win; reference runs (another
library's method, e.g. faiss product quantization) are ranked and charted but never win: they have no served model.

Pure pandas: the runs come in as a DataFrame, whoever read them.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simreduce.experiment.ranking_table import run_table
from simreduce.runtime.errors import SimreduceError

# Metrics (by their last name part) where lower is better; for the rest (recall, spearman, ...) higher is.
LOWER_IS_BETTER = ("rmse", "mae", "max_abs", "diff_var", "diff_std", "rmse_over_bound")


@dataclass(frozen=True)
class Target:
    """What the user needs: `metric` (any logged metric, e.g. `heldout/recall_at_10`) at `value` or better."""

    metric: str
    value: float

    @property
    def lower_is_better(self) -> bool:
        return self.metric.rsplit("/", 1)[-1] in LOWER_IS_BETTER

    def reached(self, values: pd.Series) -> pd.Series:
        return values <= self.value if self.lower_is_better else values >= self.value

    def __str__(self) -> str:
        return f"{self.metric} {'<=' if self.lower_is_better else '>='} {self.value:g}"


@dataclass(frozen=True)
class Selection:
    """`table`: `run_table`'s rows ranked (by score, or by bytes per vector with a target), `rank` and `winner`
    first; `winner`: one of its rows."""

    table: pd.DataFrame
    winner: pd.Series
    reason: str
    target_met: bool | None = None  # None: no target, the tolerance rule chose
    target: "Target | None" = None  # the target applied: the one asked for, or its fit-rows fallback


def run_score(metrics: Mapping[str, float]) -> float:
    """One run's score under the rule: rmse of the differences on heldout pairs when it has any, else on fit."""
    return float(metrics.get("heldout/rmse", metrics["fit/rmse"]))


def _label(row: pd.Series) -> str:
    """`cosine d=64`, named like its run: `cosine d=64 int8` when stored at another precision than float32."""
    label = f"{row.encoder} d={row.dim}"
    return label if row.precision == "float32" else f"{label} {row.precision}"


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
    ours = table[~table.reference & ~table.undefined]
    n_degenerate = int(ours.degenerate.sum())
    if n_degenerate == len(ours):
        why += "; every run is degenerate (dim at or above the number of training words): add words or lower dim"
    elif n_degenerate:
        why += f"; {n_degenerate} degenerate run(s), dim at or above the number of training words, could not win"
    return f"{_label(winner)} wins: {why}{_undefined_note(table)}."


def _undefined_note(table: pd.DataFrame, metric: str | None = None) -> str:
    """What the reason adds when runs with NaN metrics were passed over ("" when none was)."""
    undefined = table.undefined if metric is None else table.undefined | table[metric].isna()
    n = int((undefined & ~table.reference).sum())
    if not n:
        return ""
    return f"; {n} run(s) with NaN metrics (similarities all alike, or neighbours tied: copies of rows) could not win"


def make_target(metric: str, value: float | None) -> Target | None:
    """`select.metric` and `select.target` as a `Target`, or None (the tolerance rule) when `value` is null."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise SimreduceError(f"select.target={value!r} must be a number, or null for the tolerance rule.")
    if not isinstance(metric, str) or "/" not in metric:
        raise SimreduceError(
            f"select.metric={metric!r} is not a logged metric name: use e.g. heldout/recall_at_10 or heldout/rmse."
        )
    return Target(metric, float(value))


def check_tolerance(tolerance: float) -> None:
    """Refuse a `select.tolerance` below 0 or NaN (which no comparison with the best score could pass)."""
    if not tolerance >= 0:
        raise SimreduceError(f"select.tolerance={tolerance} must be a number at or above 0, e.g. 0.1 for 10%.")


def select_winner(runs: pd.DataFrame, tolerance: float, target: Target | None = None) -> Selection:
    """Rank `runs` (see `run_table`) and apply the rule of the module docstring: `target`'s when given, else
    the tolerance rule."""
    check_tolerance(tolerance)
    table = run_table(runs)
    if table.empty or table.score.isna().all():
        raise SimreduceError("the sweep has no finished run with an rmse to compare: nothing to select.")
    if target is not None:
        return _select_by_target(runs, table, target)
    table = table.sort_values(["score", "bytes", "encoder", "precision"], na_position="last", ignore_index=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    eligible = can_win(table[table.score.notna()])
    best = eligible.iloc[0]
    near_best = eligible[eligible.score <= best.score * (1 + tolerance)]
    winner = near_best.sort_values(["bytes", "score", "dim", "encoder"]).iloc[0]
    table.insert(1, "winner", np.where(table.run_id == winner.run_id, "*", ""))
    return Selection(table, table.loc[winner.name], _reason(winner, best, eligible, table, tolerance))


def can_win(scored: pd.DataFrame) -> pd.DataFrame:
    """The scored rows that can win: no reference, none with NaN metrics, and none degenerate unless all the
    others are."""
    ours = scored[~scored.reference]
    if ours.empty:
        raise SimreduceError(
            f"every scored run of the sweep is a reference ({', '.join(sorted(set(scored.encoder)))}), which is "
            "never served: sweep one of simreduce's encoders beside it, e.g. -m encoder=cosine,pq."
        )
    defined = ours[~ours.undefined]
    if defined.empty:
        raise SimreduceError(
            f"every run of the sweep ({len(ours)}) has NaN metrics: its similarities are all alike, so no candidate "
            "can win and recall would be an artefact of ties; check the data for copies of rows."
        )
    return defined[~defined.degenerate] if not defined.degenerate.all() else defined


def _logged(runs: pd.DataFrame, metric: str) -> bool:
    return metric in runs and runs[metric].notna().any()


def applied_target(runs: pd.DataFrame, target: Target) -> tuple[Target, str]:
    """`target` on a metric these runs logged, and what was changed to get there ("" when nothing was): a
    held-out metric is read on the fit rows (their own queries) when no run has held-out rows. A metric every run
    logged as NaN is kept: `_select_by_target` says why none can win."""
    if target.metric in runs:
        return target, ""
    on_fit = "fit/" + target.metric.removeprefix("heldout/")
    no_heldout = not any(_logged(runs, c) for c in runs.columns if c.startswith("heldout/"))
    if target.metric.startswith("heldout/") and no_heldout and _logged(runs, on_fit):
        note = f"no run has held-out rows (data.val_fraction=0): the target is on {on_fit}, the training rows' own. "
        return Target(on_fit, target.value), note
    logged = sorted(c for c in runs.columns if "/" in c and runs[c].notna().any())
    raise SimreduceError(f"select.metric={target.metric!r} is not logged by these runs: pick one of {logged}.")


def _select_by_target(runs: pd.DataFrame, table: pd.DataFrame, asked: Target) -> Selection:
    """The cheapest candidate (bytes per vector) reaching the target; the table sorted by bytes."""
    target, note = applied_target(runs, asked)
    metric = target.metric
    table[metric] = runs[metric].astype(float).to_numpy()
    better_first = target.lower_is_better
    table = table.sort_values(
        ["bytes", metric, "dim", "encoder", "precision"], ascending=[True, better_first, True, True, True]
    )
    table = table.reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    scored = table[table[metric].notna()]
    if scored.empty and not table.reference.all():
        raise SimreduceError(
            f"every run of the sweep ({len(table)}) has {metric} NaN, so no candidate can win: a recall is NaN when "
            "every query ties at its k-th neighbour (copies of a few rows: which of them are its top k, and so its "
            "recall, is a matter of row order); check the data for copies of rows."
        )
    eligible = can_win(scored)
    reaching = eligible[target.reached(eligible[metric])]
    met = not reaching.empty
    pool = reaching if met else eligible.sort_values(metric, ascending=better_first, kind="stable")
    winner = pool.iloc[0]  # reaching is in bytes order: the cheapest; else the best by the metric (ties: cheaper)
    table.insert(1, "winner", np.where(table.run_id == winner.run_id, "*", ""))
    cheaper = eligible[eligible.bytes < winner.bytes]
    reason = note + _target_reason(winner, cheaper, eligible, target, met)
    if undefined := _undefined_note(table, metric):
        reason = f"{reason.removesuffix('.')}{undefined}."
    return Selection(table, table.loc[winner.name], reason, met, target)


def _target_reason(winner: pd.Series, cheaper: pd.DataFrame, eligible: pd.DataFrame, target: Target, met: bool) -> str:
    metric, value = target.metric, winner[target.metric]
    if met:
        smaller = f"{winner.input_bytes / winner.bytes:.3g}x smaller than the {winner.input_bytes:,.0f}-byte input"
        why = f"{winner.bytes:,} bytes per vector ({smaller}), {metric} {value:.4g} reaches {target.value:g}"
        if not cheaper.empty:
            next_cheaper = cheaper[cheaper.bytes == cheaper.bytes.max()].iloc[0]  # the best of the next size down
            why += f"; the next cheaper candidate, {_label(next_cheaper)}, reaches {next_cheaper[metric]:.4g}"
        return f"{_label(winner)} wins: {why}."
    largest = int(eligible.dim.max())
    in_dim = round(winner.input_bytes / 4)
    if 2 * largest < in_dim:
        setting = "a last prefix of encoder.dims of " if winner.encoder == "nested" else "encoder.dim="
        next_step = f"try a larger size, e.g. {setting}{2 * largest}"
    else:
        next_step = f"no size below the {in_dim}-d input is left to try: lower select.target or keep the input"
    return (
        f"no candidate reaches {target}: the best, {_label(winner)}, reaches {value:.4g} at {winner.bytes:,} bytes "
        f"per vector; {next_step}. It is registered with target_met=false."
    )
