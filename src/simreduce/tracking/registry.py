"""The Model Registry and serving: register a sweep's winner, load a logged reducer back, and read the config
its run was trained with."""

from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from simreduce.errors import SimreduceError
from simreduce.tracking.store import TrackingStore, quoted

WINNER_ALIAS = "winner"


def register_winner(
    store: TrackingStore, run_id: str, experiment_id: str, name: str, tags: dict[str, str]
) -> str | None:
    """Register the model logged by run `run_id` as `name` and point the alias `winner` at it.

    Returns the URI `models:/<name>@winner`, or None when the run logged no model.
    """
    logged = store.client.search_logged_models(
        experiment_ids=[experiment_id], filter_string=f"source_run_id = {quoted(run_id)}"
    )
    if not logged:
        return None
    model_uri = f"models:/{logged[0].model_id}"
    versions = store.client.search_model_versions(f"name = {quoted(name)}")
    version = next((v for v in versions if v.source == model_uri), None)
    if version is None:
        store.activate()
        version = mlflow.register_model(model_uri, name, tags=tags)
    store.client.set_registered_model_alias(name, WINNER_ALIAS, version.version)
    return f"models:/{name}@{WINNER_ALIAS}"


@dataclass(frozen=True)
class LoggedReducer:
    """A reducer loaded from MLflow as a pyfunc model: [N, in_dim] float32 -> [N, dim]."""

    model: Any
    in_dim: int
    run_id: str

    def reduce(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(vectors.astype(np.float32)))


def load_reducer(store: TrackingStore, model_uri: str) -> LoggedReducer:
    """The model at `model_uri` (`models:/simreduce-minilm@winner`, `models:/<model id>`, `runs:/<id>/model`)."""
    store.activate()
    try:
        model = mlflow.pyfunc.load_model(model_uri, model_config={"device": "cpu"})
    except (MlflowException, OSError) as e:
        raise SimreduceError(
            f"cannot load model {model_uri!r} from {store.uri} ({str(e).splitlines()[0]}): pass e.g. "
            "models:/simreduce-minilm@winner after `simreduce select`, or check --tracking-uri."
        ) from e
    inputs = model.metadata.get_input_schema()
    if inputs is None or not inputs.is_tensor_spec() or len(inputs.inputs[0].shape) != 2:
        raise SimreduceError(f"model {model_uri!r} does not take [N, D] vectors: it is not a simreduce reducer.")
    return LoggedReducer(model, inputs.inputs[0].shape[1], model.metadata.run_id)


def run_config(store: TrackingStore, run_id: str) -> DictConfig:
    """The resolved config a run logged as `config.yaml`."""
    with store.downloaded(run_id, "config.yaml") as path:
        return OmegaConf.create(path.read_text())
