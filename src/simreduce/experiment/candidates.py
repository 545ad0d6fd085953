"""One candidate of a job in its MLflow run: what every run of the job holds, and the candidate's scores,
charts and model."""

from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict

from simreduce.evaluate import plots
from simreduce.evaluate.scoring import OriginalSide, score_reduction
from simreduce.experiment.console import quiet_dependencies
from simreduce.experiment.notes import hydra_verbose
from simreduce.experiment.tracking.runs import JobRun, git_commit, process_tags
from simreduce.experiment.tracking.sweeps import JOB_RUN_TAG
from simreduce.reducers.base import Candidate, Reducer
from simreduce.reducers.precision import ROTATED, StoredPrecision
from simreduce.runtime.signals import raise_if_stop_requested
from simreduce.vectors.data import VectorDataModule

JOB_RUN = {JOB_RUN_TAG: "true"}  # the job's own run, whose `precision` its first candidate says (float32)
CHILD_RUN = {JOB_RUN_TAG: "false"}  # another candidate of the same job: another precision or prefix


def job_tags(cfg: DictConfig, datamodule: VectorDataModule, reducer: Reducer, sweep_id: str, cfg_hash: str) -> dict:
    """The tags every run of a job carries: where it belongs (sweep, config), what data it saw (selection never
    ranks runs of different data together), what reducer, and which process runs it."""
    return {
        "sweep_id": sweep_id,
        "embedder": cfg.embedder.name,
        "source": datamodule.source.kind,
        "data_name": datamodule.name,
        "data_id": datamodule.identity(),
        "encoder": reducer.kind,
        "config_hash": cfg_hash,
        "git_commit": git_commit(Path(__file__).parent),  # of a checkout; "unknown" from a wheel
        # At or above the rank of the training set a reducer can reach zero fit loss trivially.
        "degenerate": str(reducer.dim >= len(datamodule.train_idx)).lower(),
        "reference": str(reducer.reference).lower(),
        "queries": cfg.eval.queries,  # how recall@k and the pairs compared a query with the stored vectors
        **process_tags(),
    }


def log_setup(run: JobRun, cfg: DictConfig, datamodule: VectorDataModule, dim: int | None = None) -> None:
    """What every run of a job holds, whichever candidate it scores: the config (its `encoder.dim` is what
    selection reads: `dim`, the candidate's size when it is not the job's, a nested encoder's prefix; its
    `config.yaml` what compress embeds new words or texts with) and the data's sizes."""
    if dim is not None and dim != cfg.encoder.dim:
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.encoder.dim = dim
    run.log_config(cfg)
    run.log_params(
        {"n_vectors": len(datamodule.ids), "input_dim": datamodule.dim, "n_fit_rows": len(datamodule.fit_idx)}
    )


def log_candidate(
    run: JobRun,
    candidate: Candidate,
    reduced: torch.Tensor,
    datamodule: VectorDataModule,
    original: OriginalSide,
    log_model: bool,
    child: bool = False,
) -> dict:
    """Score `candidate` (its map's output `reduced`) as it would be stored (int8 and the rotated codes calibrated
    on the rows a fit sees), its queries as `eval.queries` says, against the job's `OriginalSide` on every pair
    set and log its metrics, the study's three charts (a `child` of the job's run: the stacked one alone, what a
    person compares candidates by; the job's run has all three), the arrays the sweep's charts are drawn from,
    and (`log_model`) its map and stored form as an MLflow model. Returns the metrics."""
    stored = StoredPrecision.calibrated(candidate.precision, reduced, datamodule.fit_idx)
    bytes_per_vector = candidate.code_bytes or stored.bytes_per_vector(candidate.dim)
    # A float query is reduced but not stored; a code's (pq's) decodes to the input space: there it is the input.
    unstored = datamodule.vectors if candidate.code_bytes else reduced
    compared = stored.comparable(reduced)
    scores = score_reduction(original, compared, bytes_per_vector=bytes_per_vector, unstored=unstored)
    raise_if_stop_requested()
    run.log_metrics(scores.metrics)
    fit = scores.pairs["fit"]
    label = plots.candidate_label(candidate.kind, candidate.dim, candidate.stored_form)
    run.log_figures(
        plots.study_charts(
            fit.original, f"original {datamodule.dim}", {label: fit.reduced}, {label: fit.diff}, stacked_only=child
        )
    )
    run.log_array(fit.diff, "diffs/fit.npy")
    run.log_array(fit.original, "similarities/fit_original.npy")
    if log_model:
        with quiet_dependencies(verbose=hydra_verbose()):
            prefix_dims = () if candidate.precision in ROTATED else candidate.prefix_dims  # see `prefix`
            run.log_model(candidate.net, stored, datamodule.vectors[:8], prefix_dims)
    return scores.metrics
