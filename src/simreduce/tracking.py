"""Everything that talks to MLflow: the store, one run per job, and what each run logs.

The store is SQLite inside `<project root>/mlruns/` with artifacts beside it, so every job of a sweep,
whatever its working dir, writes to the same place.
"""

import contextlib
import logging
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from simreduce.errors import SimreduceError
from simreduce.paths import project_root

log = logging.getLogger(__name__)


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
    except mlflow.exceptions.MlflowException:  # another job created it a moment ago
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
            mlflow.end_run("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
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
