"""The tracking layer on a real (empty) store: ids typed by users never break a search filter."""

import threading

import pytest
from filelock import FileLock
from helpers.project import store_uri

from simreduce.experiment.tracking import TrackingStore
from simreduce.experiment.tracking.runs import JobRun, process_tags
from simreduce.experiment.tracking.store import quoted
from simreduce.experiment.tracking.sweeps import failed_sweep_runs, find_finished_run, sweep_runs
from simreduce.runtime.errors import SimreduceError

# The tags a real float32 job run carries (`candidates.job_tags`, `job_run`, its candidate's `precision`); each
# test sets its `sweep_id` and `config_hash`, and a child run its own `precision` and `job_run`.
RUN_TAGS = process_tags() | {
    "embedder": "tiny",
    "source": "words",
    "data_name": "tiny",
    "data_id": "d1",
    "encoder": "cosine",
    "degenerate": "false",
    "reference": "false",
    "precision": "float32",
    "queries": "float",
    "job_run": "true",
}


def test_quoted_picks_the_quote_the_value_does_not_hold():
    assert quoted("2026-01-01_10-00-00") == "'2026-01-01_10-00-00'"
    assert quoted("it's") == '"it\'s"'
    with pytest.raises(SimreduceError, match="both kinds of quote"):
        quoted("""it's "x\"""")


@pytest.mark.parametrize("sweep_id", ["plain", "it's mine", 'say "hi"', "100%_done"])
def test_runs_of_a_sweep_whose_id_holds_quotes_are_found(project, sweep_id):
    store = TrackingStore.create(store_uri(project))
    experiment_id = store.experiment_id("simreduce-tiny")
    tags = RUN_TAGS | {"sweep_id": sweep_id, "config_hash": "abc"}
    run_id = store.client.create_run(experiment_id, run_name="cosine-d0004", tags=tags).info.run_id
    run = JobRun(store, run_id)
    run.log_params({"encoder.dim": 4})
    run.log_metrics({"fit/rmse": 0.5})
    store.client.set_terminated(run_id, "FINISHED")
    store.client.create_run(experiment_id, run_name="other", tags={**tags, "sweep_id": "other"})

    found = sweep_runs(store, sweep_id)
    assert list(found.run_id) == [run_id] and found["fit/rmse"].iloc[0] == 0.5 and found.dim.iloc[0] == 4
    assert find_finished_run(store, experiment_id, sweep_id, "abc", "d1").info.run_id == run_id
    assert failed_sweep_runs(store, sweep_id) == {}


def test_a_run_of_the_same_config_on_other_data_is_not_finished_for_this_job(project, caplog):
    """A resumed sweep whose vectors file was rewritten (same shape, other vectors): the old run is no
    longer this config's finished run, and the log says why the job runs again."""
    store = TrackingStore.create(store_uri(project))
    experiment_id = store.experiment_id("simreduce-tiny")
    tags = RUN_TAGS | {"sweep_id": "s", "config_hash": "abc", "data_id": "old"}
    old = store.client.create_run(experiment_id, run_name="cosine-d0004", tags=tags).info.run_id
    store.client.set_terminated(old, "FINISHED")
    assert find_finished_run(store, experiment_id, "s", "abc", "old").info.run_id == old
    assert find_finished_run(store, experiment_id, "s", "abc", "new") is None
    assert f"run {old} of sweep s finished this config on other data (data_id old, now new): it runs again" in (
        caplog.text
    )


def test_a_child_candidate_is_never_taken_for_its_job_and_a_killed_jobs_children_are_left_out(project):
    store = TrackingStore.create(store_uri(project))
    experiment_id = store.experiment_id("simreduce-tiny")

    def finished_run(name: str, status: str, parent: str | None = None, precision: str = "float32") -> str:
        tags = RUN_TAGS | {"sweep_id": "s", "config_hash": name[:12], "precision": precision}
        tags |= {"mlflow.parentRunId": parent, "job_run": "false"} if parent else {}
        run_id = store.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        JobRun(store, run_id).log_params({"encoder.dim": 4})
        JobRun(store, run_id).log_metrics({"fit/rmse": 0.5})
        store.client.set_terminated(run_id, status)
        return run_id

    killed = finished_run("cosine-d0004", "KILLED")
    finished_run("cosine-d0004-int8", "FINISHED", parent=killed, precision="int8")  # logged before the kill
    assert find_finished_run(store, experiment_id, "s", "cosine-d0004", "d1") is None  # the job is to be redone
    assert "cosine-d0004" in failed_sweep_runs(store, "s")
    with pytest.raises(SimreduceError, match="has no finished runs"):
        sweep_runs(store, "s")

    redone = finished_run("cosine-d0004", "FINISHED")
    child = finished_run("cosine-d0004-int8", "FINISHED", parent=redone, precision="int8")
    assert find_finished_run(store, experiment_id, "s", "cosine-d0004", "d1").info.run_id == redone
    assert failed_sweep_runs(store, "s") == {}
    found = sweep_runs(store, "s").set_index("run_id")
    assert found.precision.to_dict() == {redone: "float32", child: "int8"}


def test_a_new_store_is_made_by_one_process_at_a_time(tmp_path):
    uri = store_uri(tmp_path)
    database = tmp_path / "mlruns" / "mlflow.db"
    database.parent.mkdir()
    made, errors = [], []

    def create() -> None:
        try:
            made.append(TrackingStore.create(uri))
        except Exception as e:  # the thread's error, for the assertion below
            errors.append(e)

    with FileLock(f"{database}.lock"):  # another sweep making the store
        creator = threading.Thread(target=create)
        creator.start()
        creator.join(timeout=2)
        assert creator.is_alive() and not database.exists()  # it waits, and touches no half-made schema
    creator.join(timeout=300)
    assert not errors and len(made) == 1 and made[0].all_experiment_ids() == ["0"]
