"""An exported sentence-transformers folder (`experiment/export.py`) logged with MLflow's `sentence_transformers`
flavour on the reducer's run: `mlflow.sentence_transformers.load_model(uri)` gives the model and
`mlflow.pyfunc.load_model(uri).predict(texts)` its vectors."""

from pathlib import Path

import mlflow.sentence_transformers
import sentence_transformers
import torch
import transformers

from simreduce.experiment.tracking.store import TrackingStore

TEXT_MODEL_NAME = "text_model"  # its name among the run's logged models, beside the reducer's `model`
TEXT_MODEL_TAG = "text_model_uri"  # the run's tag naming it


def log_text_model(
    store: TrackingStore,
    run_id: str,
    model: sentence_transformers.SentenceTransformer,
    folder: Path,
    extra_files: list[str],
) -> str:
    """`model`, saved in `folder`, logged on run `run_id` (its files in `extra_files`, the stored form's, beside it);
    returns its `models:/<model id>` URI, also the run's tag `text_model_uri`. Its requirements are stated rather
    than inferred (which loads the model again in another process), and no input example is logged (checking it
    would too)."""
    experiment_id = store.client.get_run(run_id).info.experiment_id
    logged = store.client.create_logged_model(experiment_id, name=TEXT_MODEL_NAME, source_run_id=run_id)
    requirements = [
        f"sentence-transformers=={sentence_transformers.__version__}",
        f"transformers=={transformers.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
    ]
    store.activate()  # the flavour's `log_model` reads the global URI
    mlflow.sentence_transformers.log_model(
        model,
        name=TEXT_MODEL_NAME,
        model_id=logged.model_id,
        run_id=run_id,
        pip_requirements=requirements,
        extra_files=[str(folder / name) for name in extra_files if (folder / name).is_file()],
    )
    uri = f"models:/{logged.model_id}"
    store.set_run_tag(run_id, TEXT_MODEL_TAG, uri)
    return uri
