"""Run `train.py` (one run or a `-m` sweep) in this process with each phase of each job timed from outside.

    python bench/timed_run.py TIMES.json [train.py arguments...]

The project's functions are wrapped by name, not edited; a phase nested in another (MLflow calls inside
training, say) is counted in the inner phase only, so the phases of a job add up to its wall time.
Writes {"imports": s, "start_up": span, "jobs": [span, ...], "finish": span, "process": s} to TIMES.json,
a span being {"wall": s, phase: s, ...}.
"""

import contextlib
import functools
import json
import runpy
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class PhaseClock:
    """Exclusive time per phase: entering a phase pauses the one it is nested in."""

    def __init__(self):
        self.totals: dict[str, float] = defaultdict(float)
        self.stack: list[str] = []
        self.mark = time.perf_counter()

    def _switch(self) -> None:
        now = time.perf_counter()
        if self.stack:
            self.totals[self.stack[-1]] += now - self.mark
        self.mark = now

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._switch()
        self.stack.append(name)
        try:
            yield
        finally:
            self._switch()
            self.stack.pop()

    def wrap(self, owner: object, attribute: str, name: str) -> None:
        """Replace `owner.attribute` by a wrapper that times every call as phase `name`."""
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            with self.phase(name):
                return original(*args, **kwargs)

        setattr(owner, attribute, timed)


def instrument(clock: PhaseClock) -> None:
    """Attach the phases to the functions a job calls, where it looks them up (simreduce.experiment.job and
    candidates)."""
    import mlflow
    import mlflow.tracking.fluent
    from lightning.pytorch.loggers import MLFlowLogger

    from simreduce.evaluate import plots
    from simreduce.experiment import candidates, job
    from simreduce.experiment.tracking import TrackingStore, runs
    from simreduce.reducers import closed_form, cosine

    clock.wrap(job, "load_data", "embedding")
    clock.wrap(cosine.CosineEncoder, "fit", "training")
    clock.wrap(closed_form.ClosedFormReducer, "fit", "training")  # a closed-form fit is its training
    clock.wrap(job, "fit", "training")
    clock.wrap(job, "apply_net", "evaluation")  # a candidate's map applied to the vectors, once per map
    clock.wrap(candidates, "score_reduction", "evaluation")
    clock.wrap(plots, "study_charts", "logging: charts")
    clock.wrap(runs.JobRun, "log_figures", "logging: charts")
    clock.wrap(runs.JobRun, "log_model", "logging: model")
    for name in ("log_config", "log_array", "log_metrics", "set_tag"):
        clock.wrap(runs.JobRun, name, "logging: run")
    for name in ("create", "experiment_id"):
        clock.wrap(TrackingStore, name, "logging: run")
    clock.wrap(runs, "git_commit", "logging: run")
    clock.wrap(mlflow, "start_run", "logging: run")
    clock.wrap(mlflow.tracking.fluent, "end_run", "logging: run")
    for name in ("log_metrics", "log_hyperparams", "finalize"):
        clock.wrap(MLFlowLogger, name, "logging: training curves")


def main(out: Path, train_args: list[str]) -> None:
    started = time.perf_counter()
    clock = PhaseClock()
    with clock.phase("imports"):
        import hydra  # noqa: F401
        import lightning.pytorch  # noqa: F401
        import transformers  # noqa: F401

        import simreduce.evaluate.plots  # noqa: F401  (matplotlib)
        import simreduce.evaluate.scoring  # noqa: F401  (scipy, scikit-learn)
        import simreduce.experiment.tracking.runs  # noqa: F401  (mlflow)
        from simreduce.experiment import job
    imports = clock.totals.pop("imports")
    instrument(clock)
    spans = []  # Hydra's start-up, each job, Hydra's finish: {"wall": s, phase: s, ...}; the rest is "other"
    run_job = job.run_job
    mark = time.perf_counter()

    def close_span() -> None:
        nonlocal mark
        now = time.perf_counter()
        spans.append({"wall": now - mark, **clock.totals})
        clock.totals.clear()
        mark = now

    def timed_job(cfg):
        if not spans:
            close_span()  # Hydra's start-up, the tracking store's preparation included
        with clock.phase("other"):
            score = run_job(cfg)
        close_span()  # this job, Hydra's set-up of it included
        return score

    job.run_job = timed_job  # train.py imports it by name, after this
    sys.argv = [str(PROJECT_ROOT / "train.py"), *train_args]
    runpy.run_path(sys.argv[0], run_name="__main__")
    close_span()
    times = {"imports": imports, "start_up": spans[0], "jobs": spans[1:-1], "finish": spans[-1]}
    out.write_text(json.dumps({**times, "process": time.perf_counter() - started}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
