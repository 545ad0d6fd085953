import re
import warnings

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from helpers.project import compose_config

from simreduce.evaluate.plots import metrics_vs_dim, pareto_frontier, rate_distortion
from simreduce.experiment.alias_policy import alias_decision
from simreduce.experiment.ranking_table import TABLE_COLUMNS, markdown_table, text_table
from simreduce.experiment.selection import Target, make_target, select_winner
from simreduce.experiment.summary import runs_of_latest_data
from simreduce.runtime.errors import SimreduceError

TOLERANCE = compose_config([]).select.tolerance  # the default rule


def runs(*rows: tuple) -> pd.DataFrame:
    """(encoder, dim, heldout rmse, degenerate) -> a run table as the tracking layer reads it: float32
    candidates of a 384-d input."""
    return pd.DataFrame(
        [
            {
                "run_id": f"id-{encoder}-{dim}",
                "run_name": f"{encoder}-d{dim:04d}",
                "encoder": encoder,
                "dim": dim,
                "precision": "float32",
                "queries": "float",
                "degenerate": degenerate,
                "reference": False,
                "bytes_per_vector": 4 * dim,
                "compression_ratio": 384 / dim,
                "fit/rmse": rmse * 0.9,
                "fit/diff_mean": 0.001,
                "heldout/rmse": rmse,
                "heldout/diff_mean": -0.002,
                "heldout/diff_var": rmse**2 - 0.002**2,
                "heldout/spearman": 1 - rmse,
                "heldout/knn_recall_at_10": 0.8,
                "bound_ey": (rmse * 0.5) ** 2,
            }
            for encoder, dim, rmse, degenerate in rows
        ]
    )


def winner_of(table: pd.DataFrame, tolerance: float = 0.1) -> tuple[str, int]:
    w = select_winner(table, tolerance).winner
    return w.encoder, w.dim


def test_smallest_dim_within_tolerance_wins():
    sweep = runs(("cosine", 16, 0.20, False), ("cosine", 32, 0.108, False), ("cosine", 64, 0.100, False))
    assert winner_of(sweep, 0.1) == ("cosine", 32)
    assert winner_of(sweep, 0.05) == ("cosine", 64)
    assert winner_of(sweep, 1.0) == ("cosine", 16)
    assert winner_of(sweep, 0.0) == ("cosine", 64)


def test_table_is_ranked_by_score_and_marks_the_winner():
    selection = select_winner(
        runs(("cosine", 16, 0.3, False), ("cosine", 64, 0.1, False), ("cosine", 32, 0.2, False)), TOLERANCE
    )
    table = selection.table
    assert list(table.dim) == [64, 32, 16]
    assert list(table["rank"]) == [1, 2, 3]
    assert list(table.winner) == ["*", "", ""]
    assert list(table.columns[: len(TABLE_COLUMNS)]) == TABLE_COLUMNS
    assert table.pairs.eq("heldout").all()
    assert table.bound_rmse.iloc[0] == pytest.approx(0.05)
    assert "lowest heldout rmse" in selection.reason and "cosine d=64 wins" in selection.reason


def test_ties_go_to_the_smaller_dim_then_the_lower_score():
    tied_dims = runs(("cosine", 64, 0.1, False), ("cosine", 32, 0.1, False))
    assert winner_of(tied_dims, 0.0) == ("cosine", 32)
    same_dim = runs(("autoencoder", 32, 0.104, False), ("cosine", 32, 0.102, False), ("pca", 64, 0.1, False))
    assert winner_of(same_dim) == ("cosine", 32)
    same_score = runs(("pca", 32, 0.1, False), ("cosine", 32, 0.1, False))
    assert winner_of(same_score) == ("cosine", 32)


def test_degenerate_runs_are_flagged_and_cannot_win():
    sweep = runs(("cosine", 16, 0.2, False), ("cosine", 32, 0.15, False), ("cosine", 512, 0.001, True))
    selection = select_winner(sweep, 0.1)
    assert (selection.winner.encoder, selection.winner.dim) == ("cosine", 32)
    assert selection.table.set_index("dim").degenerate.to_dict() == {512: True, 32: False, 16: False}
    assert selection.table.dim.iloc[0] == 512  # still ranked first: the table shows what happened
    assert "1 degenerate run(s)" in selection.reason


def test_all_degenerate_still_names_a_winner_and_says_so():
    selection = select_winner(runs(("cosine", 16, 0.01, True), ("cosine", 32, 0.0101, True)), TOLERANCE)
    assert selection.winner.dim == 16
    assert "every run is degenerate" in selection.reason


def test_single_run_wins():
    selection = select_winner(runs(("cosine", 8, 0.3, False)), TOLERANCE)
    assert selection.winner.dim == 8
    assert "only run" in selection.reason


def test_without_heldout_pairs_the_fit_rmse_is_the_score():
    sweep = runs(("cosine", 16, 0.2, False), ("cosine", 32, 0.1, False)).drop(
        columns=[c for c in runs(("x", 1, 0.1, False)).columns if c.startswith("heldout/")]
    )
    selection = select_winner(sweep, TOLERANCE)
    assert selection.table.pairs.eq("fit").all()
    assert selection.table.score.tolist() == pytest.approx([0.09, 0.18])
    assert "fit rmse" in selection.reason


def test_bad_tolerance_and_empty_sweeps_are_user_errors():
    with pytest.raises(SimreduceError, match="tolerance"):
        select_winner(runs(("cosine", 8, 0.3, False)), -0.1)
    with pytest.raises(SimreduceError, match="nothing to select"):
        select_winner(runs(("cosine", 8, 0.3, False)).iloc[:0], TOLERANCE)


def test_markdown_and_text_tables_hold_every_run():
    selection = select_winner(runs(("cosine", 16, 0.2, False), ("cosine", 32, 0.1, False)), TOLERANCE)
    md = markdown_table(selection.table).splitlines()
    assert md[0].startswith("| rank | winner | run |") and md[1].startswith("| --- |")
    assert len(md) == 4 and "cosine-d0032" in md[2]
    text = text_table(selection.table)
    assert "cosine-d0016" in text and "knn@10" in text


WINNER = {"data_id": "abc", "score": "0.100"}


@pytest.mark.parametrize(
    ("policy", "holder", "moves", "why"),
    [
        ("auto", None, True, "no version held it"),
        ("auto", {"version": "3", "data_id": "other", "score": "0.9"}, False, "version 3 reduces other data"),
        ("auto", {"version": "3", "data_id": "abc", "score": "0.095"}, True, "within 10% of version 3's 0.095"),
        ("auto", {"version": "3", "data_id": "abc", "score": "0.05"}, False, "version 3 scores 0.05 on the same data"),
        ("auto", {"version": "3", "data_id": "abc"}, False, "version 3 scores nan"),  # unknown: kept
        ("always", {"version": "3", "data_id": "abc", "score": "0.05"}, True, "select.register=always"),
        ("never", None, False, "select.register=never"),
    ],
)
def test_the_winner_alias_moves_only_to_an_as_good_model_or_when_asked(policy, holder, moves, why):
    moved, reason = alias_decision(policy, holder, WINNER, tolerance=0.1)
    assert moved is moves and why in reason


@pytest.mark.parametrize("target_met", [None, True])
def test_the_alias_never_moves_across_data_unless_asked(target_met):
    other = {"version": "3", "data_id": "other", "score": "0.9"}  # a/same.npy's model, worse than b's
    moved, reason = alias_decision("auto", other, WINNER, tolerance=0.1, target_met=target_met)
    assert not moved
    assert reason == (
        "version 3 reduces other data (data_id other, this winner's abc): select.register=always moves @winner "
        "across data"
    )
    assert alias_decision("always", other, WINNER, tolerance=0.1, target_met=target_met) == (
        True,
        "select.register=always",
    )


def test_a_resumed_sweep_ranks_only_the_runs_on_its_latest_data():
    sweep = runs(("cosine", 16, 0.05, False), ("cosine", 16, 0.2, False), ("cosine", 32, 0.1, False))
    sweep = sweep.assign(data_id=["old", "new", "new"], start_time=[1, 3, 2])
    kept, note = runs_of_latest_data(sweep)
    assert list(kept.data_id) == ["new", "new"] and len(kept) == 2
    assert note == "1 run(s) of this sweep on earlier data (data_id old, since changed to new) are left out. "
    assert runs_of_latest_data(kept)[1] == ""


def test_an_unknown_register_policy_is_a_user_error():
    with pytest.raises(SimreduceError, match="select.register='sometimes' is not one of"):
        alias_decision("sometimes", None, WINNER, tolerance=0.1)


def with_recall(table: pd.DataFrame, recalls: dict[tuple[str, int], float]) -> pd.DataFrame:
    """`table` with held-out recall@10 per (encoder, dim)."""
    recall = [recalls[(e, d)] for e, d in zip(table.encoder, table.dim, strict=True)]
    return table.assign(**{"heldout/recall_at_10": recall})


RECALL_90 = Target("heldout/recall_at_10", 0.9)


def test_the_cheapest_candidate_that_reaches_the_target_wins_and_the_table_is_in_bytes_order():
    table = with_recall(
        runs(("cosine", 64, 0.06, False), ("cosine", 128, 0.03, False), ("cosine", 256, 0.01, False)),
        {("cosine", 64): 0.72, ("cosine", 128): 0.91, ("cosine", 256): 0.96},
    )
    selection = select_winner(table, TOLERANCE, RECALL_90)
    assert (selection.winner.dim, selection.target_met) == (128, True)
    assert list(selection.table.bytes) == [256, 512, 1024]
    assert selection.reason == (
        "cosine d=128 wins: 512 bytes per vector (3x smaller than the 1,536-byte input), heldout/recall_at_10 0.91 "
        "reaches 0.9; the next cheaper candidate, cosine d=64, reaches 0.72."
    )
    assert "heldout/recall_at_10" in text_table(selection.table)


def test_when_nothing_reaches_the_target_the_best_is_named_with_the_size_to_try_next():
    table = with_recall(
        runs(("cosine", 32, 0.1, False), ("cosine", 64, 0.06, False)), {("cosine", 32): 0.5, ("cosine", 64): 0.7}
    )
    selection = select_winner(table, TOLERANCE, RECALL_90)
    assert (selection.winner.dim, selection.target_met) == (64, False)
    assert "no candidate reaches heldout/recall_at_10 >= 0.9: the best, cosine d=64, reaches 0.7" in selection.reason
    assert "try a larger size, e.g. encoder.dim=128" in selection.reason
    wide = with_recall(runs(("cosine", 256, 0.01, False)), {("cosine", 256): 0.8})
    assert "no size below the 384-d input is left to try" in select_winner(wide, TOLERANCE, RECALL_90).reason


def test_at_the_same_bytes_the_better_metric_wins_and_degenerate_runs_cannot():
    table = with_recall(
        runs(("pca", 64, 0.08, False), ("cosine", 64, 0.06, False), ("svd", 32, 0.05, True)),
        {("pca", 64): 0.92, ("cosine", 64): 0.95, ("svd", 32): 0.99},
    )
    winner = select_winner(table, TOLERANCE, RECALL_90).winner
    assert (winner.encoder, winner.dim) == ("cosine", 64)


def test_a_run_with_nan_spearman_and_recall_by_ties_never_wins_and_the_reason_says_so():
    # 300 copies of one row: rmse 0 or 1, Spearman NaN, recall@10 = 1 by the order ties fall in.
    table = with_recall(
        runs(("cosine", 4, 0.0, False), ("cosine", 32, 0.052, False), ("cosine", 64, 0.05, False)),
        {("cosine", 4): 1.0, ("cosine", 32): 0.85, ("cosine", 64): 0.95},
    )
    table.loc[table.dim == 4, "heldout/spearman"] = float("nan")
    for target in (None, RECALL_90):
        selection = select_winner(table, TOLERANCE, target)
        assert selection.winner.dim == (64 if target else 32)
        assert (
            "1 run(s) with NaN metrics (similarities all alike, or neighbours tied: copies of rows) could not win"
            in (selection.reason)
        )
        assert selection.table.set_index("dim").undefined.to_dict() == {4: True, 32: False, 64: False}


def test_a_nan_target_metric_is_passed_over_and_named():
    table = with_recall(
        runs(("cosine", 16, 0.1, False), ("cosine", 64, 0.05, False)),
        {("cosine", 16): float("nan"), ("cosine", 64): 0.95},
    )
    selection = select_winner(table, TOLERANCE, RECALL_90)
    assert selection.winner.dim == 64 and "1 run(s) with NaN metrics" in selection.reason


def test_when_every_run_has_nan_metrics_nothing_wins():
    table = runs(("cosine", 4, 0.0, False), ("cosine", 8, 0.0, False)).assign(**{"heldout/spearman": float("nan")})
    for target in (None, Target("heldout/rmse", 0.1)):
        with pytest.raises(SimreduceError, match=r"every run of the sweep \(2\) has NaN metrics"):
            select_winner(table, TOLERANCE, target)


def test_when_every_runs_target_metric_is_nan_nothing_wins_and_the_ties_are_named():
    # 3 rows x 100 copies: Spearman is defined (three values), but every query's 10th neighbour is a tied copy.
    table = runs(("cosine", 4, 0.01, False), ("cosine", 8, 0.0, False)).assign(**{"heldout/recall_at_10": float("nan")})
    with pytest.raises(SimreduceError, match=r"every run of the sweep \(2\) has heldout/recall_at_10 NaN.*copies"):
        select_winner(table, TOLERANCE, RECALL_90)


def test_runs_that_never_logged_spearman_still_win():
    table = runs(("cosine", 16, 0.1, False)).drop(columns=["heldout/spearman"])
    assert select_winner(table, TOLERANCE).winner.dim == 16


def test_a_lower_is_better_metric_is_reached_from_below():
    table = runs(("cosine", 16, 0.2, False), ("cosine", 32, 0.1, False), ("cosine", 64, 0.05, False))
    target = Target("heldout/rmse", 0.12)
    assert target.lower_is_better and str(target) == "heldout/rmse <= 0.12"
    assert select_winner(table, TOLERANCE, target).winner.dim == 32


@pytest.mark.parametrize(
    ("metric", "value", "message"),
    [
        ("heldout/recall_at_10", "high", "select.target='high' must be a number"),
        ("recall", 0.9, "select.metric='recall' is not a logged metric name"),
    ],
)
def test_bad_targets_are_user_errors(metric, value, message):
    with pytest.raises(SimreduceError, match=re.escape(message)):
        make_target(metric, value)
    assert make_target("heldout/rmse", None) is None  # the tolerance rule


def test_a_target_on_a_metric_the_runs_did_not_log_names_the_ones_they_did():
    with pytest.raises(SimreduceError, match=r"select.metric='heldout/recall_at_5' is not logged .*heldout/rmse"):
        select_winner(runs(("cosine", 16, 0.2, False)), TOLERANCE, Target("heldout/recall_at_5", 0.9))


def test_the_pareto_frontier_keeps_what_nothing_cheaper_beats():
    frontier = pareto_frontier(pd.Series([64, 128, 128, 256]), pd.Series([0.5, 0.4, 0.8, 0.7]), True)
    assert list(frontier.bytes) == [64, 128] and list(frontier.quality) == [0.5, 0.8]


def with_int8(table: pd.DataFrame, recalls: list[float]) -> pd.DataFrame:
    """`table` (see `with_recall`) beside its int8 candidates, a quarter of the bytes, with these recalls."""
    int8 = table.assign(
        run_id=table.run_id + "-int8",
        run_name=table.run_name + "-int8",
        precision="int8",
        bytes_per_vector=table.dim,
        compression_ratio=4 * 384 / table.dim,
        **{"heldout/recall_at_10": recalls},
    )
    return pd.concat([table, int8], ignore_index=True)


def test_a_cheaper_int8_candidate_that_reaches_the_target_wins_and_a_degenerate_one_cannot():
    table = with_recall(
        runs(("cosine", 64, 0.06, False), ("cosine", 128, 0.03, False), ("svd", 16, 0.01, True)),
        {("cosine", 64): 0.85, ("cosine", 128): 0.93, ("svd", 16): 0.99},
    )
    selection = select_winner(with_int8(table, [0.84, 0.92, 0.99]), TOLERANCE, RECALL_90)
    assert (selection.winner.dim, selection.winner.precision, selection.winner.run) == (
        128,
        "int8",
        "cosine-d0128-int8",
    )
    assert list(zip(selection.table.bytes, selection.table.precision, strict=True)) == [
        (16, "int8"),
        (64, "float32"),
        (64, "int8"),
        (128, "int8"),
        (256, "float32"),
        (512, "float32"),
    ]
    assert selection.reason == (
        "cosine d=128 int8 wins: 128 bytes per vector (12x smaller than the 1,536-byte input), heldout/recall_at_10 "
        "0.92 reaches 0.9; the next cheaper candidate, cosine d=64 int8, reaches 0.84."
    )
    assert "precision" in text_table(selection.table)
    # The tolerance rule: of the candidates within tolerance of the best score, the fewest bytes per vector.
    assert select_winner(with_int8(table, [0.84, 0.92, 0.99]), TOLERANCE).winner.run == "cosine-d0128-int8"


def test_the_charts_draw_a_line_per_reducer_and_precision():
    table = with_recall(
        runs(("cosine", 64, 0.06, False), ("cosine", 128, 0.03, False), ("pca", 64, 0.08, False)),
        {("cosine", 64): 0.85, ("cosine", 128): 0.93, ("pca", 64): 0.8},
    )
    ranked = select_winner(with_int8(table, [0.84, 0.92, 0.79]), TOLERANCE, RECALL_90).table
    expected = {"cosine", "cosine int8", "pca", "pca int8"}
    for fig in (rate_distortion(ranked, RECALL_90), metrics_vs_dim(ranked)):
        assert expected <= {line.get_label() for line in fig.axes[0].get_lines()}
        plt.close(fig)


def test_the_charts_of_exact_candidates_draw_without_a_warning(tmp_path):
    """Rows of fewer directions than every size: each candidate keeps them exactly, its rmse and mean 0 and its
    variance rounded below 0; a log-scale panel of nothing but zeros was a warning, then an error when saved."""
    exact = runs(("cosine", 4, 0.0, False), ("cosine", 8, 0.0, False)).assign(**{"heldout/diff_mean": 0.0})
    ranked = select_winner(exact.assign(**{"heldout/diff_var": -1e-19}), TOLERANCE).table
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for fig in (metrics_vs_dim(ranked), rate_distortion(ranked)):
            fig.savefig(tmp_path / "chart.png")
            plt.close(fig)


def test_a_reference_run_is_ranked_and_shown_but_never_wins_under_either_rule():
    sweep = runs(("pq", 8, 0.05, False), ("cosine", 16, 0.20, False), ("cosine", 32, 0.10, False))
    sweep["reference"] = sweep.encoder == "pq"
    by_tolerance = select_winner(sweep, TOLERANCE)
    assert (by_tolerance.winner.encoder, by_tolerance.winner.dim) == ("cosine", 32)
    assert by_tolerance.table.run.iloc[0] == "pq-d0008"  # ranked first by its score all the same
    assert "reference" in text_table(by_tolerance.table).splitlines()[0]
    fig = rate_distortion(by_tolerance.table)
    assert {"pq (reference)", "cosine"} <= {line.get_label() for line in fig.axes[1].get_lines()}
    plt.close(fig)
    sweep["heldout/recall_at_10"] = [0.99, 0.95, 0.97]
    by_target = select_winner(sweep, TOLERANCE, Target("heldout/recall_at_10", 0.9))
    assert (by_target.winner.encoder, by_target.winner.dim) == ("cosine", 16)  # pq is cheaper, and reaches it


def test_a_sweep_of_references_alone_has_nothing_to_serve():
    sweep = runs(("pq", 8, 0.05, False), ("pq", 16, 0.04, False))
    sweep["reference"] = True
    with pytest.raises(SimreduceError, match=r"every scored run of the sweep is a reference \(pq\)"):
        select_winner(sweep, TOLERANCE)


def test_without_references_the_table_has_no_reference_column():
    table = select_winner(runs(("cosine", 16, 0.2, False)), TOLERANCE).table
    assert "reference" not in text_table(table).splitlines()[0]


def test_without_held_out_rows_a_held_out_target_is_read_on_the_fit_rows_and_says_so():
    study = runs(("cosine", 16, 0.2, False), ("cosine", 32, 0.1, False))  # data.val_fraction=0: no heldout/*
    study = study.drop(columns=[c for c in study.columns if c.startswith("heldout/")])
    study["fit/recall_at_10"] = [0.7, 0.95]
    selection = select_winner(study, TOLERANCE, RECALL_90)
    assert (selection.winner.dim, selection.target_met) == (32, True)
    assert selection.target == Target("fit/recall_at_10", 0.9)
    assert selection.reason.startswith("no run has held-out rows (data.val_fraction=0): the target is on fit/recall")
    # Runs that have held-out rows are never read on their fit rows: a metric they lack is an error.
    with pytest.raises(SimreduceError, match="is not logged by these runs"):
        select_winner(runs(("cosine", 16, 0.2, False)), TOLERANCE, RECALL_90)
