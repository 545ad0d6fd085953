"""A sweep, end to end: read its runs back, pick the winner, log the `sweep-<id>` summary run with the
ranked table and the overlay charts, and register the winner. Run by the Hydra callback after
`simreduce train -m ...` and by `simreduce select`; nothing is retrained.
"""

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from simreduce.evaluate import plots
from simreduce.evaluate.scoring import INPUT_BYTES
from simreduce.experiment.alias_policy import alias_decision, check_register
from simreduce.experiment.ranking_table import markdown_table, text_table
from simreduce.experiment.selection import Selection, Target, select_winner
from simreduce.experiment.tracking import TrackingStore
from simreduce.experiment.tracking.registry import Registration, register_winner
from simreduce.experiment.tracking.store import runs_page
from simreduce.experiment.tracking.sweeps import failed_sweep_runs, load_run_array, summary_run, sweep_runs
from simreduce.runtime.signals import raise_if_stop_requested


@dataclass(frozen=True)
class SweepSummary:
    experiment_id: str
    sweep_id: str
    selection: Selection
    summary_run_id: str
    registration: Registration | None
    failed: dict[str, str]
    skipped: list[str]

    @property
    def ranked_by(self) -> str:
        return "score" if self.selection.target_met is None else "bytes per vector, then the target's metric"

    def report(self) -> str:
        """What the terminal shows: the ranked table, the winner and why, and where it went."""
        registered = (
            self.registration.report()
            if self.registration
            else "not registered: its run logged no model (tracking.log_model=false)"
        )
        return (
            f"sweep {self.sweep_id}: {len(self.selection.table)} run(s), ranked by {self.ranked_by}\n"
            f"{text_table(self.selection.table)}\n"
            f"{self.selection.reason}\n"
            f"winner {self.selection.winner.run} ({self.selection.winner.run_id}) {registered}; "
            f"summary run sweep-{self.sweep_id} ({self.summary_run_id})\n"
            f"runs in the MLflow UI: {runs_page(self.experiment_id)}"
            + "".join(f"\nFAILED {name}: {error}" for name, error in sorted(self.failed.items()))
            + "".join(f"\n{reason}" for reason in self.skipped)
        )


def overlay_charts(store: TrackingStore, table: pd.DataFrame) -> dict[str, Figure]:
    """The study's three charts with every run of the table overlaid, from each run's `diffs/fit.npy`."""
    by_dim = table.sort_values(["dim", "encoder", "bytes"], ascending=[True, True, False])
    labels = [plots.candidate_label(row.encoder, row.dim, row.precision) for row in by_dim.itertuples()]
    if len(set(labels)) < len(labels):  # e.g. a sweep over seeds: tell the runs apart
        labels = [f"{label} ({run_id[:6]})" for label, run_id in zip(labels, by_dim.run_id, strict=True)]
    run_ids = dict(zip(labels, by_dim.run_id, strict=True))
    diffs = {label: load_run_array(store, run_id, "diffs/fit.npy") for label, run_id in run_ids.items()}
    first = by_dim.iloc[0]
    original = load_run_array(store, first.run_id, "similarities/fit_original.npy")
    reduced = {label: original - diff for label, diff in diffs.items()}
    in_dim = round(first.input_bytes / INPUT_BYTES)
    return plots.study_charts(original, f"original {in_dim}", reduced, diffs)


def runs_of_latest_data(runs: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The runs on the data of the sweep's latest run, and a note naming those left out ("" when none was): a
    sweep resumed after its vectors file was rewritten holds runs on both, whose scores do not compare."""
    latest = runs.data_id.loc[runs.start_time.idxmax()] if "start_time" in runs else runs.data_id.iloc[0]
    earlier = runs[runs.data_id != latest]
    if earlier.empty:
        return runs, ""
    note = (
        f"{len(earlier)} run(s) of this sweep on earlier data (data_id {', '.join(sorted(set(earlier.data_id)))}, "
        f"since changed to {latest}) are left out. "
    )
    return runs[runs.data_id == latest], note


def summarise_experiment(
    store: TrackingStore,
    runs: pd.DataFrame,
    tolerance: float,
    skipped: list[str],
    register: str = "auto",
    target: Target | None = None,
) -> SweepSummary:
    """`runs`: one sweep's runs in one experiment (see `tracking.sweep_runs`); `skipped`: why the sweep
    skipped some sizes (no run was opened for them)."""
    runs, earlier = runs_of_latest_data(runs)
    selection = select_winner(runs, tolerance, target)
    if earlier:
        selection = replace(selection, reason=earlier + selection.reason)
    target = selection.target  # a held-out target is read on the fit rows where no run has held-out rows
    table = selection.table
    winner = selection.winner
    experiment_id, sweep_id = runs.experiment_id.iloc[0], runs.sweep_id.iloc[0]
    failed = failed_sweep_runs(store, sweep_id, [experiment_id])
    target_tags = {"target": str(target), "target_met": str(selection.target_met).lower()} if target else {}
    figures = overlay_charts(store, table) | {
        "metrics_vs_dim.png": plots.metrics_vs_dim(table),
        "rate_distortion.png": plots.rate_distortion(table, target),
    }
    markdown = markdown_table(selection.table)
    tags = {
        "winner_run_id": winner.run_id,
        "winner": winner.run,
        "failed_runs": ", ".join(sorted(failed)) or "none",
    }
    # Set only when known: a later `select` knows no skipped sizes, and leaves the sweep's own on its summary run.
    tags |= target_tags | ({"skipped_sizes": "; ".join(skipped)} if skipped else {})
    child_run_ids = list(runs.run_id[runs.job_run])  # candidates' child runs stay under their job's run
    with summary_run(store, experiment_id, sweep_id, f"{selection.reason}\n\n{markdown}", tags, child_run_ids) as run:
        # A stop signal is taken between the parts (see `signals.py`), and ends the run KILLED.
        run.log_metrics(
            {
                "tolerance": tolerance,
                "winner_dim": float(winner.dim),
                "winner_score": winner.score,
                "best_score": float(np.nanmin(selection.table.score)),
                "n_runs": float(len(selection.table)),
            }
        )
        raise_if_stop_requested()
        run.log_text(selection.table.to_csv(index=False), "selection/ranking.csv")
        run.log_text(markdown, "selection/ranking.md")
        raise_if_stop_requested()
        run.log_figures(figures)
        raise_if_stop_requested()
    summary_run_id = run.run_id
    raise_if_stop_requested()  # a stop during selection registers nothing
    winner_row = runs.loc[runs.run_id == winner.run_id].iloc[0]
    version_tags = {
        "sweep_id": sweep_id,
        "encoder": winner.encoder,
        "dim": str(winner.dim),
        "precision": winner.precision,
        "queries": winner_row.queries,  # the query mode its score was measured in
        "data_id": winner_row.data_id,
        "score": repr(float(winner.score)),
    } | target_tags
    registration = register_winner(
        store,
        winner.run_id,
        experiment_id,
        f"simreduce-{winner_row.source}-{winner_row.data_name}",
        version_tags,
        move_alias=lambda holder: alias_decision(register, holder, version_tags, tolerance, selection.target_met),
    )
    if registration is not None:
        store.set_run_tag(summary_run_id, "alias_moved", str(registration.alias_moved).lower())
    return SweepSummary(experiment_id, sweep_id, selection, summary_run_id, registration, failed, skipped)


def summarise_sweep(
    store: TrackingStore,
    sweep_id: str | None,
    tolerance: float,
    experiment: str | None = None,
    skipped: list[str] = (),
    register: str = "auto",
    target: Target | None = None,
) -> list[SweepSummary]:
    """Select and log a sweep (default: the latest), once per experiment it wrote to (one per data name);
    `register` is the `winner` alias policy (`alias_policy.alias_decision`), `target` what the winner must reach
    (None: the tolerance rule)."""
    check_register(register)
    runs = sweep_runs(store, sweep_id, experiment)
    groups = runs.groupby("experiment_id", sort=False)
    return [summarise_experiment(store, group, tolerance, list(skipped), register, target) for _, group in groups]
