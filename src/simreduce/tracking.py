"""Everything that talks to MLflow: the store, one run per job and what it logs, reading a sweep back,
its summary run, the Model Registry, and loading a logged reducer.

The store is SQLite inside `<project root>/mlruns/` with artifacts beside it, so every job of a sweep,
whatever its working dir, writes to the same place.
"""

import contextlib
import hashlib
import logging
import os
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from simreduce.errors import SimreduceError, StopRequested
from simreduce.paths import project_root

log = logging.getLogger(__name__)
# Selection and compress read a few small artifacts back: a progress bar for each is noise.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# Reducers are exported (pt2) from CPU weights, which torch.export cannot load onto a GPU: serve them on the
# CPU, also when MLflow checks the input example at logging time on a GPU machine.
os.environ.setdefault("MLFLOW_DEFAULT_PREDICTION_DEVICE", "cpu")


def default_tracking_uri() -> str:
    return f"sqlite:///{project_root() / 'mlruns' / 'mlflow.db'}"


def _artifact_root(uri: str) -> str:
    """Artifacts sit beside a SQLite store; other stores choose their own place."""
    if uri.startswith("sqlite:///"):
        return str(Path(uri.removeprefix("sqlite:///")).parent / "artifacts")
    return None


def prepare_store(uri: str, experiment: str) -> str:
    """Create the store (schema migrations included) and the experiment once, before jobs start writing.

    Returns the experiment id.
    """
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=folder)
            probe.close()
        except OSError as e:
            raise SimreduceError(
                f"MLflow store folder {str(folder)!r} is not writable ({e.strerror}): "
                "set tracking.uri=sqlite:///<a writable folder>/mlflow.db or SIMREDUCE_ROOT."
            ) from e
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(experiment, artifact_location=_artifact_root(uri))
    except MlflowException:  # another job created it a moment ago
        return client.get_experiment_by_name(experiment).experiment_id


def sweep_id_of(sweep_dir: str) -> str:
    """The last two parts of Hydra's sweep dir (its date and time by default), shared by all its jobs."""
    return "_".join(str(sweep_dir).replace("\\", "/").rstrip("/").split("/")[-2:])


def git_commit(folder: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'encoder': {'dim': 64}} -> {'encoder.dim': 64}; Hydra's `_target_` keys are left out."""
    flat = {}
    for key, value in config.items():
        if key == "_target_":
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


@contextlib.contextmanager
def job_run(uri: str, experiment_id: str, run_name: str, tags: dict[str, str]) -> Iterator[str]:
    """An MLflow run that ends FINISHED, or FAILED with the error as tag `error` when the body raises."""
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
        try:
            yield run.info.run_id
        except BaseException as e:
            mlflow.set_tag("error", f"{type(e).__name__}: {e}"[:5000])
            mlflow.end_run("KILLED" if isinstance(e, KeyboardInterrupt | StopRequested) else "FAILED")
            raise


def log_config(cfg: DictConfig) -> None:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    mlflow.log_params({k: str(v) if isinstance(v, list | tuple) else v for k, v in flatten(resolved).items()})
    mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")


def log_figures(figures: dict[str, Figure], folder: str = "plots") -> None:
    import matplotlib.pyplot as plt

    for file_name, fig in figures.items():
        mlflow.log_figure(fig, f"{folder}/{file_name}")
        plt.close(fig)


def log_array(array: np.ndarray, artifact_path: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_path).name
        np.save(path, array)
        mlflow.log_artifact(str(path), str(Path(artifact_path).parent))


def log_reducer_model(module: torch.nn.Module, example: torch.Tensor) -> None:
    """The reducer as an MLflow PyTorch model, exported (pt2, no pickle) with signature and input example."""
    from mlflow.models import infer_signature

    module = module.cpu().eval()
    example = example.cpu()
    with torch.no_grad():
        signature = infer_signature(example.numpy(), module(example).numpy())
    mlflow.pytorch.log_model(
        module,
        name="model",
        signature=signature,
        input_example=example[:2].numpy(),
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        serialization_format="pt2",
    )


SUMMARY_TAG = "summary_of_sweep"
WINNER_ALIAS = "winner"


def open_store(uri: str) -> None:
    """Point MLflow at an existing store: reading must not create an empty one in the wrong folder."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise SimreduceError(
            f"there is no MLflow store at {uri}: run `python train.py -m ...` first, or pass --tracking-uri "
            "(or set SIMREDUCE_ROOT) to the project that holds mlruns/."
        )
    mlflow.set_tracking_uri(uri)


def _latest_sweep_id(experiment_ids: list[str] | None) -> str:
    latest = mlflow.search_runs(
        experiment_ids=experiment_ids,
        search_all_experiments=experiment_ids is None,
        filter_string="attributes.status = 'FINISHED' AND tags.sweep_id LIKE '%'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if latest.empty:
        raise SimreduceError("the MLflow store holds no finished sweep runs: run `python train.py -m ...` first.")
    return latest["tags.sweep_id"].iloc[0]


def sweep_runs(uri: str, sweep_id: str | None = None, experiment: str | None = None) -> pd.DataFrame:
    """The finished job runs of a sweep (default: the latest one), in one experiment or in all.

    One row per run: `run_id, run_name, experiment_id, sweep_id, embedder, encoder, dim, degenerate`, and
    every metric under its logged name (`heldout/rmse`, `bound_ey`, ...).
    """
    open_store(uri)
    experiment_ids = None
    if experiment is not None:
        found = MlflowClient().get_experiment_by_name(experiment)
        if found is None:
            raise SimreduceError(f"experiment {experiment!r} is not in the MLflow store {uri}: check --experiment.")
        experiment_ids = [found.experiment_id]
    sweep_id = sweep_id or _latest_sweep_id(experiment_ids)
    runs = mlflow.search_runs(
        experiment_ids=experiment_ids,
        search_all_experiments=experiment_ids is None,
        filter_string=f"attributes.status = 'FINISHED' AND tags.sweep_id = '{sweep_id}'",
    )
    if runs.empty:
        raise SimreduceError(f"sweep {sweep_id!r} has no finished runs in {experiment or 'any experiment'}.")
    metrics = runs.filter(like="metrics.", axis=1).rename(columns=lambda c: c.removeprefix("metrics."))
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "run_id": runs.run_id,
                    "run_name": runs["tags.mlflow.runName"],
                    "experiment_id": runs.experiment_id,
                    "sweep_id": sweep_id,
                    "embedder": runs["tags.embedder"],
                    "encoder": runs["tags.encoder"],
                    "dim": runs["params.encoder.dim"].astype(int),
                    "degenerate": runs.get("tags.degenerate", pd.Series("false", index=runs.index)).eq("true"),
                }
            ),
            metrics,
        ],
        axis=1,
    )


def load_run_array(run_id: str, artifact_path: str) -> np.ndarray:
    """An array a run logged with `log_array`, read back from its artifacts."""
    with tempfile.TemporaryDirectory() as tmp:
        return np.load(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path, dst_path=tmp))


def log_sweep_summary(
    experiment_id: str,
    sweep_id: str,
    texts: dict[str, str],
    figures: dict[str, Figure],
    tags: dict[str, str],
    metrics: dict[str, float],
    child_run_ids: list[str],
) -> str:
    """Log (or update, when selection runs again) the run `sweep-<id>`, and nest the sweep's runs under it.

    Returns the summary run's id.
    """
    previous = mlflow.search_runs(
        experiment_ids=[experiment_id], filter_string=f"tags.{SUMMARY_TAG} = '{sweep_id}'", max_results=1
    )
    run_id = previous.run_id.iloc[0] if not previous.empty else None
    with mlflow.start_run(run_id=run_id, experiment_id=experiment_id, run_name=f"sweep-{sweep_id}") as run:
        mlflow.set_tags({SUMMARY_TAG: sweep_id, **tags})
        mlflow.log_metrics(metrics)
        for artifact_path, text in texts.items():
            mlflow.log_text(text, artifact_path)
        log_figures(figures)
    client = MlflowClient()
    for child in child_run_ids:
        client.set_tag(child, "mlflow.parentRunId", run.info.run_id)
    return run.info.run_id


def register_winner(run_id: str, experiment_id: str, name: str, tags: dict[str, str]) -> str | None:
    """Register the model logged by run `run_id` as `name` and point the alias `winner` at it.

    Returns the URI `models:/<name>@winner`, or None when the run logged no model.
    """
    client = MlflowClient()
    logged = mlflow.search_logged_models(
        experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run_id}'", output_format="list"
    )
    if not logged:
        return None
    model_uri = f"models:/{logged[0].model_id}"
    versions = client.search_model_versions(f"name = '{name}'")
    version = next((v for v in versions if v.source == model_uri), None)
    if version is None:
        version = mlflow.register_model(model_uri, name, tags=tags)
    client.set_registered_model_alias(name, WINNER_ALIAS, version.version)
    return f"models:/{name}@{WINNER_ALIAS}"


@dataclass(frozen=True)
class LoggedReducer:
    """A reducer loaded from MLflow as a pyfunc model: [N, in_dim] float32 -> [N, dim]."""

    model: Any
    in_dim: int
    run_id: str

    def reduce(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(vectors.astype(np.float32)))


def load_reducer(uri: str, model_uri: str) -> LoggedReducer:
    """The model at `model_uri` (`models:/simreduce-minilm@winner`, `models:/<model id>`, `runs:/<id>/model`)."""
    open_store(uri)
    try:
        model = mlflow.pyfunc.load_model(model_uri, model_config={"device": "cpu"})
    except (MlflowException, OSError) as e:
        raise SimreduceError(
            f"cannot load model {model_uri!r} from {uri} ({str(e).splitlines()[0]}): pass e.g. "
            "models:/simreduce-minilm@winner after `simreduce select`, or check --tracking-uri."
        ) from e
    inputs = model.metadata.get_input_schema()
    if inputs is None or not inputs.is_tensor_spec() or len(inputs.inputs[0].shape) != 2:
        raise SimreduceError(f"model {model_uri!r} does not take [N, D] vectors: it is not a simreduce reducer.")
    return LoggedReducer(model, inputs.inputs[0].shape[1], model.metadata.run_id)


def run_config(run_id: str) -> DictConfig:
    """The resolved config a run logged as `config.yaml`."""
    return OmegaConf.create(mlflow.artifacts.load_text(f"runs:/{run_id}/config.yaml"))


def config_hash(cfg: DictConfig) -> str:
    """Identifies a job's work: two jobs whose resolved configs match outside `tracking` compute the same run."""
    work = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "tracking"}
    return hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(work)).encode()).hexdigest()[:16]


def process_tags() -> dict[str, str]:
    """Where a run's process lives, so a later job can tell a crashed run from a running one."""
    return {"host": socket.gethostname(), "pid": str(os.getpid())}


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def close_stale_runs(experiment_id: str, sweep_id: str) -> list[str]:
    """End as FAILED the RUNNING runs of this sweep whose process on this host is gone (killed, crashed).

    Runs on other hosts are left alone: their process cannot be checked from here.
    """
    client = MlflowClient()
    stale = []
    for run in client.search_runs(
        [experiment_id], f"tags.sweep_id = '{sweep_id}' and attributes.status = 'RUNNING'", max_results=1000
    ):
        tags = run.data.tags
        if tags.get("host") == socket.gethostname() and not _is_alive(int(tags.get("pid", "0"))):
            client.set_tag(run.info.run_id, "error", "the job's process ended without closing its run")
            client.set_terminated(run.info.run_id, "FAILED")
            stale.append(run.info.run_id)
    if stale:
        log.warning("marked %d stale run(s) of sweep %s as FAILED", len(stale), sweep_id)
    return stale


def failed_sweep_runs(sweep_id: str, experiment_ids: list[str] | None = None) -> dict[str, str]:
    """Run name -> error of the sweep's runs that ended FAILED or KILLED and were not redone since
    (a later FINISHED run of the same config, from a resumed sweep, supersedes them)."""
    client = MlflowClient()
    runs = client.search_runs(
        experiment_ids or [e.experiment_id for e in client.search_experiments()],
        f"tags.sweep_id = '{sweep_id}' and attributes.status != 'RUNNING'",
        max_results=5000,
    )
    redone = {run.data.tags.get("config_hash") for run in runs if run.info.status == "FINISHED"}
    return {
        run.info.run_name: run.data.tags.get("error", run.info.status)
        for run in runs
        if run.info.status != "FINISHED" and run.data.tags.get("config_hash") not in redone
    }


def find_finished_run(experiment_id: str, sweep_id: str, cfg_hash: str) -> mlflow.entities.Run | None:
    runs = MlflowClient().search_runs(
        [experiment_id],
        f"tags.sweep_id = '{sweep_id}' and tags.config_hash = '{cfg_hash}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return runs[0] if runs else None
