import os
import signal

import mlflow
import pytest
from helpers.project import compose_config, store_runs, store_uri, sweep_end_config, tiny_overrides

from simreduce.evaluate import plots
from simreduce.experiment.callbacks import SelectSweepWinner
from simreduce.experiment.job import run_job
from simreduce.experiment.tracking.sweeps import sweep_id_of
from simreduce.runtime.errors import StopRequested
from simreduce.runtime.signals import raise_if_stop_requested, stop_signals_deferred


def test_a_stop_signal_is_raised_at_the_next_check_not_where_it_lands():
    before = signal.getsignal(signal.SIGTERM)
    reached = []
    with pytest.raises(StopRequested, match="stopped by SIGTERM"), stop_signals_deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        reached.append("after the signal")  # e.g. the rest of an MLflow write that holds a lock
        raise_if_stop_requested()
        reached.append("after the check")
    assert reached == ["after the signal"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_signal_stops_at_once():
    with pytest.raises(StopRequested, match="stopped by SIGINT"), stop_signals_deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        pytest.fail("the second signal did not raise")


def test_a_signal_without_a_later_check_stops_at_the_end_of_the_block():
    finished = []
    with pytest.raises(StopRequested), stop_signals_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        finished.append(True)
    assert finished == [True]
    with stop_signals_deferred():  # the request does not leak into the next block
        raise_if_stop_requested()


def test_a_stop_during_selection_ends_the_summary_run_killed_and_registers_nothing(
    project, tiny_llama, words_file, monkeypatch, capsys
):
    sweep_dir = project / "multirun" / "2026-12-01" / "11-00-00"
    overrides = ["encoder.dim=4", "tracking.log_model=true", f"tracking.sweep_id={sweep_id_of(str(sweep_dir))}"]
    run_job(compose_config([*tiny_overrides(tiny_llama, words_file), *overrides]))
    draw = plots.metrics_vs_dim

    def signalled_while_drawing(table):
        os.kill(os.getpid(), signal.SIGTERM)
        return draw(table)

    monkeypatch.setattr(plots, "metrics_vs_dim", signalled_while_drawing)
    with pytest.raises(SystemExit) as exit_info:
        SelectSweepWinner().on_multirun_end(sweep_end_config(project, sweep_dir))
    assert exit_info.value.code == 128 + signal.SIGTERM
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "SIGTERM during selection" in err and "simreduce select --sweep 2026-12-01_11-00-00" in err
    runs = store_runs(project)
    assert runs.loc[runs["tags.mlflow.runName"].str.startswith("sweep-"), "status"].tolist() == ["KILLED"]
    assert not mlflow.MlflowClient(store_uri(project)).search_registered_models()
