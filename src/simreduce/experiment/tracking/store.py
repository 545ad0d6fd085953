"""One MLflow store, addressed by its URI: its client, its experiments, and safe filter strings.

Every MLflow call of simreduce goes through a `TrackingStore` (or a run opened from one), so no module relies
on a tracking URI set somewhere else. MLflow's fluent calls (`log_model`, `pyfunc.load_model`) read a global
URI; the store sets it right before such a call, here in `tracking/` alone.
"""

import contextlib
import functools
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
from filelock import FileLock, Timeout
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from simreduce.runtime.errors import SimreduceError, full_disk

# Selection and compress read a few small artifacts back: a progress bar for each is noise.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# Reducers are exported (pt2) from CPU weights, which torch.export cannot load onto a GPU: serve them on the
# CPU, also when MLflow checks the input example at logging time on a GPU machine.
os.environ.setdefault("MLFLOW_DEFAULT_PREDICTION_DEVICE", "cpu")

# A new store's "Creating initial MLflow database tables..." lines say nothing a user acts on.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

SQLITE = "sqlite:///"
CREATION_WAIT_S = 300  # making a store takes seconds; a lock held longer is a hung process's
UI_ADDRESS = "http://127.0.0.1:5000"  # where the README's `mlflow ui` line serves


def runs_page(experiment_id: str) -> str:
    """The MLflow UI's page of an experiment's runs. MLflow 3.17 opens an experiment on its GenAI overview
    (traces, tokens) whatever the experiment's tags say, as long as the UI's own GenAI/Model training switch
    is on GenAI, its default: this address lands on the runs either way."""
    return f"{UI_ADDRESS}/#/experiments/{experiment_id}/runs"


def quoted(value: str) -> str:
    """`value` as a string literal of an MLflow filter: user-given ids never break out of their quotes."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise SimreduceError(f"{value!r} holds both kinds of quote, which an MLflow search cannot match: rename it.")


class TrackingStore:
    def __init__(self, uri: str):
        self.uri = uri

    @functools.cached_property
    def client(self) -> MlflowClient:
        """Made on first use: MLflow's client creates a SQLite store's folder, which `create` checks first."""
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    @property
    def sqlite_file(self) -> Path | None:
        return Path(self.uri.removeprefix(SQLITE)) if self.uri.startswith(SQLITE) else None

    @classmethod
    def create(cls, uri: str) -> "TrackingStore":
        """The store at `uri`, its folder made if needed; an unwritable one fails here, before any job."""
        store = cls(uri)
        if store.sqlite_file is not None:
            folder = store.sqlite_file.parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
                tempfile.NamedTemporaryFile(dir=folder).close()
            except OSError as e:
                raise SimreduceError(
                    f"MLflow store folder {str(folder)!r} is not writable ({e.strerror}): "
                    "set tracking.uri=sqlite:///<a writable folder>/mlflow.db or SIMREDUCE_ROOT."
                ) from e
        try:
            with store.creation_lock(), store.usable():
                store.client.search_experiments(max_results=1)  # creates a new store's tables, reads an old one's
        except Timeout as e:
            raise SimreduceError(
                f"another process has held {e.lock_file} for {CREATION_WAIT_S} s while making the MLflow store {uri}: "
                "let it finish, or delete the lock file if no simreduce process is running."
            ) from None
        return store

    def creation_lock(self) -> contextlib.AbstractContextManager:
        """Held while a process makes or first reads a SQLite store: two sweeps started together on a new store
        would otherwise both create its tables, and one would find the other's half-made schema unusable."""
        if self.sqlite_file is None:
            return contextlib.nullcontext()
        return FileLock(f"{self.sqlite_file}.lock", timeout=CREATION_WAIT_S)

    @contextlib.contextmanager
    def usable(self) -> Iterator[None]:
        """MLflow's and SQLAlchemy's errors from a store that cannot be read or written (a truncated or
        read-only database, a file that is no database, a full disk) as one line that says what to do."""
        try:
            yield
        except SimreduceError:
            raise
        except Exception as e:
            if (full := full_disk(e, self.uri)) is not None:  # the store is fine: its disk is not
                raise full from e
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise SimreduceError(
                f"the MLflow store {self.uri} cannot be used ({reason}): check that the file is a readable and "
                "writable MLflow database, or move it aside to start a new store."
            ) from e

    @classmethod
    def open(cls, uri: str) -> "TrackingStore":
        """An existing store: reading must not create an empty one in the wrong folder."""
        store = cls(uri)
        if store.sqlite_file is not None and not store.sqlite_file.is_file():
            raise SimreduceError(
                f"there is no MLflow store at {uri}: run `simreduce train -m ...` first, or pass --tracking-uri "
                "(or set SIMREDUCE_ROOT) to the project that holds mlruns/."
            )
        with store.usable():
            store.client.search_experiments(max_results=1)
        return store

    def experiment_id(self, name: str) -> str:
        """The id of experiment `name`, created (artifacts beside a SQLite store) if it does not exist yet."""
        with self.usable():
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                return found.experiment_id
            artifacts = str(self.sqlite_file.parent / "artifacts") if self.sqlite_file is not None else None
            try:
                return self.client.create_experiment(name, artifact_location=artifacts)
            except MlflowException:  # another job created it a moment ago, or the store is read-only
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
                return found.experiment_id

    def existing_experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is None:
            raise SimreduceError(f"experiment {name!r} is not in the MLflow store {self.uri}: check --experiment.")
        return found.experiment_id

    def all_experiment_ids(self) -> list[str]:
        return [e.experiment_id for e in self.client.search_experiments()]

    def run_tags(self, run_id: str) -> dict[str, str]:
        return self.client.get_run(run_id).data.tags

    def set_run_tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    @contextlib.contextmanager
    def downloaded(self, run_id: str, artifact_path: str) -> Iterator[Path]:
        """A run's artifact, downloaded to a temporary file for the block's duration."""
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = Path(self.client.download_artifacts(run_id, artifact_path, tmp))
            except (MlflowException, OSError) as e:
                raise SimreduceError(
                    f"artifact {artifact_path!r} of run {run_id} cannot be read from {self.uri} "
                    f"({str(e).strip().splitlines()[0][:200]}): its artifacts folder was moved or deleted; "
                    "run the sweep again."
                ) from e
            yield path

    def activate(self) -> None:
        """Point MLflow's fluent API at this store, right before a fluent call."""
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
