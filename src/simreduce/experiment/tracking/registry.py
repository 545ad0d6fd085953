"""The Model Registry and serving: register a sweep's winner, load a logged reducer back, and read the config
its run was trained with."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from omegaconf import DictConfig, OmegaConf
from torch import nn

from simreduce.experiment.tracking.store import TrackingStore, quoted
from simreduce.reducers.base import apply_net, prefix_map
from simreduce.reducers.precision import StoredPrecision
from simreduce.reducers.weights import rebuild
from simreduce.runtime.errors import SimreduceError

WINNER_ALIAS = "winner"
REDUCER_MODEL_NAME = "model"  # the name a run's reducer is logged under (`runs.JobRun.log_model`)
SPEC_KEY = "simreduce"  # the MLmodel metadata entry holding a reducer's layer spec
WEIGHTS_FILE = "weights.safetensors"  # its tensors, logged as one of the PyTorch flavour's extra files
WEIGHTS_PATH = f"extra_files/{WEIGHTS_FILE}"  # where the flavour puts them in the model folder
WEIGHTS_ARTIFACT = "weights"  # their name among a nested model's pyfunc artifacts (`tracking/code_model.py`)


@dataclass(frozen=True)
class Registration:
    """A sweep's winner as a version of a registered model, and whether the `winner` alias moved to it."""

    name: str
    version: str
    holder: str | None  # the version the alias points at now
    alias_moved: bool  # by this selection
    why: str  # why the alias moved, or why it stayed

    def report(self) -> str:
        alias = f"models:/{self.name}@{WINNER_ALIAS}"
        if self.holder == self.version:
            where = f"{alias} moved to it" if self.alias_moved else f"{alias} points at it already"
        else:
            where = (
                f"@{WINNER_ALIAS} stays on version {self.holder}"
                if self.holder
                else f"@{WINNER_ALIAS} points at no version"
            )
        return f"registered as {self.name} version {self.version}; {where} ({self.why})"


def register_winner(
    store: TrackingStore,
    run_id: str,
    experiment_id: str,
    name: str,
    tags: dict[str, str],
    move_alias: Callable[[dict[str, str] | None], tuple[bool, str]],
) -> Registration | None:
    """Register the model logged by run `run_id` as a version of `name` (once: selecting a sweep again reuses
    it), tagged with `tags`, and point the alias `winner` at it if `move_alias(tags of the version holding the
    alias now, or None)` says so. Returns None when the run logged no model."""
    logged = store.client.search_logged_models(  # the reducer's, not an exported text model's (`text_model.py`)
        experiment_ids=[experiment_id],
        filter_string=f"source_run_id = {quoted(run_id)} AND name = {quoted(REDUCER_MODEL_NAME)}",
    )
    if not logged:
        return None
    model_uri = f"models:/{logged[0].model_id}"
    versions = store.client.search_model_versions(f"name = {quoted(name)}")
    version = next((v for v in versions if v.source == model_uri), None)
    if version is None:  # the client, not `mlflow.register_model`, which prints two lines of its own
        # MLflow's SQL registry looks a `models:/m-...` source up through the global tracking URI, not this
        # client's: unset, that is a new store in the working dir, where the logged model is not found.
        store.activate()
        try:
            store.client.create_registered_model(name)
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = store.client.create_model_version(
            name, model_uri, run_id=run_id, tags=tags, model_id=logged[0].model_id
        )
    else:  # selected again (another target, say): its tags say what the latest selection found
        for key, value in tags.items():
            store.client.set_model_version_tag(name, version.version, key, value)
    holder = alias_holder(store, name)
    if holder is not None and holder["version"] == version.version:
        return Registration(name, version.version, version.version, False, "it held the alias already")
    move, why = move_alias(holder)
    if not move:
        return Registration(name, version.version, holder and holder["version"], False, why)
    store.client.set_registered_model_alias(name, WINNER_ALIAS, version.version)
    return Registration(name, version.version, version.version, True, why)


def alias_holder(store: TrackingStore, name: str) -> dict[str, str] | None:
    """The tags of the version `name@winner` points at, with its number as `version`; None if there is none."""
    try:
        version = store.client.get_model_version_by_alias(name, WINNER_ALIAS)
    except MlflowException:
        return None
    return {**version.tags, "version": version.version}


@dataclass(frozen=True)
class LoggedReducer:
    """A reducer rebuilt from its logged layer spec and tensors: [N, in_dim] float32 -> [N, dim] as stored at
    its precision (`stored`): float32, float16, int8 codes, or [N, ceil(dim * b / 8)] uint8 packed sign bits
    (b = 1), b-bit codes or product codes."""

    net: nn.Module
    stored: StoredPrecision
    in_dim: int
    dim: int
    run_id: str | None  # None where it is served by MLflow, which passes no run
    prefix_dims: tuple[int, ...] = ()  # a nested model's sizes up to `dim`

    def prefix(self, dim: int, source: str, asked: str = "--dim") -> "LoggedReducer":
        """This reducer cut to its first `dim` outputs, one of a nested model's prefixes; refused in one line
        naming `source` (the model the user gave) and how the size was `asked` for (`--dim`, or the served
        model's `params`) for any other size or model."""
        request = f"{asked} {dim}" if asked.startswith("--") else f"{asked}={dim}"
        if not self.prefix_dims:
            raise SimreduceError(
                f"{request}: model {source!r} is not nested (its {self.dim} outputs are one reduction): drop "
                f"{asked}, or train one with encoder=nested."
            )
        if dim not in self.prefix_dims:
            raise SimreduceError(
                f"{request} is not a prefix of model {source!r}: pick one of {', '.join(map(str, self.prefix_dims))}."
            )
        prefixes = tuple(d for d in self.prefix_dims if d <= dim)
        return LoggedReducer(
            prefix_map(self.net, dim), self.stored.prefix(dim), self.in_dim, dim, self.run_id, prefixes
        )

    @property
    def width(self) -> int:
        """Values per stored vector."""
        return self.stored.stored_width(self.dim)

    def reduce(self, vectors: np.ndarray) -> np.ndarray:
        reduced = apply_net(self.net, torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)))
        return self.stored.encode(reduced.numpy())


def load_reducer(store: TrackingStore, model_uri: str) -> LoggedReducer:
    """The reducer at `model_uri` (`models:/simreduce-words-minilm@winner`, `models:/<model id>`, `runs:/<id>/model`,
    a folder). Only the files simreduce logs are read (MLmodel, the layer spec, safetensors): a model's own
    loader, code or pickles are never run, so a model simreduce did not log is refused."""
    store.activate()
    try:
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, tracking_uri=store.uri))
        model = Model.load(folder)
    except Exception as e:  # whatever the URI's scheme made MLflow try: it yields no model
        raise SimreduceError(
            unheld_alias(store, model_uri)
            or f"cannot load model {model_uri!r} from {store.uri} ({str(e).splitlines()[0]}): pass e.g. "
            "models:/simreduce-words-minilm@winner after `simreduce select`, or check --tracking-uri."
        ) from e
    spec, weights = simreduce_parts(model)
    if spec is None:
        raise SimreduceError(
            f"model {model_uri!r} was not logged by simreduce (its MLmodel has no simreduce layer spec and "
            "weights): compress serves only simreduce reducers and never runs a model's own loader or code."
        )
    net, stored = rebuild(spec, folder / weights, model_uri)
    prefixes = tuple(int(d) for d in spec["prefix_dims"])
    return LoggedReducer(net, stored, int(spec["in_dim"]), int(spec["dim"]), model.run_id, prefixes)


def unheld_alias(store: TrackingStore, model_uri: str) -> str | None:
    """Why `models:/NAME@winner` loads nothing when NAME is registered but no version holds the alias: every
    selection so far missed its target. Names the versions there are, to compress one of them knowingly."""
    name, alias_given, alias = model_uri.removeprefix("models:/").partition("@")
    if not model_uri.startswith("models:/") or not alias_given or alias != WINNER_ALIAS:
        return None
    try:
        versions = store.client.search_model_versions(f"name = {quoted(name)}")
    except MlflowException:
        return None
    if not versions:
        return None
    latest = max(versions, key=lambda v: int(v.version))
    missed = " (it missed its target)" if latest.tags.get("target_met") == "false" else ""
    return (
        f"no version of {name} holds @{WINNER_ALIAS}: no selection reached its target yet. The latest is "
        f"models:/{name}/{latest.version}{missed}: compress with it knowingly, or select again with a target "
        "it reaches (simreduce select --target ...)."
    )


def simreduce_parts(model: Model) -> tuple[dict | None, str | None]:
    """The layer spec and weights file simreduce logs with a model, or (None, None) when either is missing:
    the weights are an extra file of the PyTorch flavour, or for a nested model (a pyfunc from code, see
    `tracking/code_model.py`) its `weights` artifact."""
    metadata = model.metadata if isinstance(model.metadata, dict) else {}
    spec = metadata.get(SPEC_KEY)
    weights = pytorch_weights_path(model.flavors.get("pytorch")) or pyfunc_weights_path(
        model.flavors.get("python_function")
    )
    if not isinstance(spec, dict) or weights is None:
        return None, None
    return spec, weights


def pytorch_weights_path(flavour: object) -> str | None:
    extra_files = flavour.get("extra_files") if isinstance(flavour, dict) else None
    logged = [f.get("path") for f in extra_files if isinstance(f, dict)] if isinstance(extra_files, list) else []
    return WEIGHTS_PATH if WEIGHTS_PATH in logged else None


def pyfunc_weights_path(flavour: object) -> str | None:
    """The `weights` artifact's path, where it is a weights file inside the model folder."""
    artifacts = flavour.get("artifacts") if isinstance(flavour, dict) else None
    entry = artifacts.get(WEIGHTS_ARTIFACT) if isinstance(artifacts, dict) else None
    path = entry.get("path") if isinstance(entry, dict) else None
    if not isinstance(path, str) or Path(path).name != WEIGHTS_FILE:
        return None
    return None if Path(path).is_absolute() or ".." in Path(path).parts else path


def run_config(store: TrackingStore, run_id: str) -> DictConfig:
    """The resolved config a run logged as `config.yaml`."""
    with store.downloaded(run_id, "config.yaml") as path:
        return OmegaConf.create(path.read_text())
