"""One job's MLflow run and everything it logs: params and config, metrics, charts, arrays, the reducer as a
model, and the Lightning logger that writes the training curves into it."""

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param
from omegaconf import DictConfig, OmegaConf

from simreduce.experiment.tracking.registry import REDUCER_MODEL_NAME, SPEC_KEY, WEIGHTS_ARTIFACT, WEIGHTS_FILE
from simreduce.experiment.tracking.store import TrackingStore
from simreduce.reducers.precision import ROTATED, StoredForm, StoredPrecision
from simreduce.reducers.weights import layer_spec, save_weights
from simreduce.runtime.errors import StopRequested, explained

CODE_MODEL = Path(__file__).with_name("code_model.py")  # run by MLflow to load a nested or rotated-code model


def pytorch_flavour():
    """MLflow's PyTorch flavour, imported with `pytorch_lightning` hidden: `mlflow.pytorch` imports that package
    (which `lightning` installs, a second, slow-to-import copy of the Lightning simreduce trains with) whenever it
    is installed, with no setting or `log_model` argument to avoid it, only to offer an autolog callback simreduce
    does not use."""
    hide = "pytorch_lightning" not in sys.modules
    if hide:
        sys.modules["pytorch_lightning"] = None  # makes `import pytorch_lightning` raise ImportError
    try:
        import mlflow.pytorch
    finally:
        if hide:
            del sys.modules["pytorch_lightning"]
    return mlflow.pytorch


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


def config_hash(cfg: DictConfig) -> str:
    """Identifies a job's work: two jobs whose resolved configs match outside `tracking` compute the same run."""
    work = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "tracking"}
    return hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(work)).encode()).hexdigest()[:16]


def git_commit(folder: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def process_tags() -> dict[str, str]:
    """Where a run's process lives, so a later job can tell a crashed run from a running one."""
    return {"host": socket.gethostname(), "pid": str(os.getpid())}


class JobRun:
    """An open run of `store`: what a job logs goes here."""

    def __init__(self, store: TrackingStore, run_id: str):
        self.store = store
        self.run_id = run_id

    def set_tag(self, key: str, value: str) -> None:
        self.store.client.set_tag(self.run_id, key, value)

    def log_config(self, cfg: DictConfig) -> None:
        """The flattened resolved config as params, and the whole of it as `config.yaml`."""
        resolved = OmegaConf.to_container(cfg, resolve=True)
        params = {k: str(v) if isinstance(v, list | tuple) else v for k, v in flatten(resolved).items()}
        self.log_params(params)
        self.store.client.log_text(self.run_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.store.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        now = int(time.time() * 1000)
        self.store.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])

    def log_figures(self, figures: dict[str, Figure], folder: str = "plots") -> None:
        import matplotlib.pyplot as plt

        for file_name, fig in figures.items():
            self.store.client.log_figure(self.run_id, fig, f"{folder}/{file_name}")
            plt.close(fig)

    def log_text(self, text: str, artifact_path: str) -> None:
        self.store.client.log_text(self.run_id, text, artifact_path)

    def log_array(self, array: np.ndarray, artifact_path: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_path).name
            np.save(path, array)
            self.store.client.log_artifact(self.run_id, str(path), str(Path(artifact_path).parent))

    def log_model(
        self, module: torch.nn.Module, stored: StoredPrecision, example: torch.Tensor, prefix_dims: tuple[int, ...] = ()
    ) -> None:
        """The reducer as an MLflow PyTorch model, exported (pt2, no pickle) with signature and input example,
        for any MLflow user: its map followed by its stored form (`StoredForm`), so it returns what compress
        writes; and, for `simreduce compress`, its layer spec with the stored precision (the model's `simreduce`
        metadata) and tensors with the precision's calibration constants (`extra_files/weights.safetensors`),
        which rebuild it without running any code.

        A map with several prefixes (a nested encoder's), or one stored as a rotated code, is logged as a pyfunc
        from code instead (`tracking/code_model.py` says why), whose `params={"dim": d}` cuts a nested map to a
        prefix; the same spec and tensors are its metadata and `weights` artifact."""
        from mlflow.models import infer_signature

        module = module.cpu().eval()
        served = torch.nn.Sequential(module, StoredForm(stored)).eval()
        example = example.cpu()
        spec = layer_spec(module, stored.name, prefix_dims)
        requirements = [f"torch=={torch.__version__.split('+')[0]}"]
        with torch.no_grad():
            output = served(example).numpy()
        with tempfile.TemporaryDirectory() as tmp:
            weights = Path(tmp) / WEIGHTS_FILE
            save_weights(module, weights, stored)
            nested = len(prefix_dims) > 1
            if nested or stored.name in ROTATED:
                params = {"dim": spec["dim"]} if nested else None
                mlflow.pyfunc.log_model(
                    name=REDUCER_MODEL_NAME,
                    python_model=str(CODE_MODEL),
                    artifacts={WEIGHTS_ARTIFACT: str(weights)},
                    model_config=spec,
                    signature=infer_signature(example.numpy(), output, params=params),
                    input_example=(example[:2].numpy(), params) if params else example[:2].numpy(),
                    pip_requirements=[*requirements, "simreduce"],  # the code it runs imports simreduce
                    metadata={SPEC_KEY: spec},
                )
                return
            pytorch_flavour().log_model(
                served,
                name=REDUCER_MODEL_NAME,
                signature=infer_signature(example.numpy(), output),
                input_example=example[:2].numpy(),
                pip_requirements=requirements,
                serialization_format="pt2",
                extra_files=[str(weights)],
                metadata={SPEC_KEY: spec},
            )

    def lightning_logger(self):
        """Lightning's MLflow logger, writing the training curves into this run."""
        from lightning.pytorch.loggers import MLFlowLogger

        return MLFlowLogger(run_id=self.run_id, tracking_uri=self.store.uri)


@contextlib.contextmanager
def job_run(
    store: TrackingStore, experiment_id: str, run_name: str, tags: dict[str, str], nested: bool = False
) -> Iterator[JobRun]:
    """A run that ends FINISHED, FAILED with the error as tag `error` when the body raises (a known cause, a full disk
    or a rank that died, as the one line a person sees), or KILLED when a stop signal or Ctrl-C ends it. It is
    MLflow's active run meanwhile, for the calls that only exist in fluent form (`log_model`); `nested`: a child of
    the active run (MLflow's tag `mlflow.parentRunId`)."""
    store.activate()
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags, nested=nested) as run:
        try:
            yield JobRun(store, run.info.run_id)
        except BaseException as e:
            shown = explained(e, store.uri) or e
            mlflow.set_tag("error", f"{type(shown).__name__}: {shown}"[:5000])
            mlflow.end_run("KILLED" if isinstance(e, KeyboardInterrupt | StopRequested) else "FAILED")
            raise
