"""Nothing from a model folder, cache or logged model runs code unless the user turns it on."""

import json
import re
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from helpers.models import write_model_folder
from helpers.project import PROJECT_ROOT, compose_config, store_uri
from mlflow.models import Model

from simreduce.cli import main
from simreduce.experiment.tracking import TrackingStore
from simreduce.experiment.tracking.registry import SPEC_KEY, load_reducer, simreduce_parts
from simreduce.runtime.errors import SimreduceError
from simreduce.vectors.embedding import Embedder


@pytest.mark.parametrize("embedder", ["minilm", "deepseek_coder"])
def test_remote_code_is_off_in_every_embedder_config(embedder):
    assert compose_config([f"embedder={embedder}"]).embedder.trust_remote_code is False


@pytest.fixture
def remote_code_model(tiny_llama, tmp_path) -> tuple[Path, Path]:
    """A model folder only its own Python code can load; that code leaves a marker file when it runs."""
    folder = tmp_path / "remote-code-model"
    shutil.copytree(tiny_llama, folder)
    marker = tmp_path / "code-ran"
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "evil"  # no built-in class
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel", "AutoConfig": "modeling_evil.EvilConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder, marker


def test_model_folder_asking_for_remote_code_is_refused_without_running_it(remote_code_model):
    folder, marker = remote_code_model
    with pytest.raises(SimreduceError, match="cannot load model"):
        Embedder("evil", str(folder), device="cpu").embed(["the", "of"])
    assert not marker.exists()


def test_the_same_folder_does_run_its_code_once_trusted(remote_code_model):
    """The control for the test above: the folder's code is real and runs when remote code is turned on."""
    folder, marker = remote_code_model
    with pytest.raises(Exception):  # noqa: B017 - the module defines no classes; only its import matters
        Embedder("evil", str(folder), device="cpu", trust_remote_code=True).embed(["the", "of"])
    assert marker.exists()


def test_mlflow_ui_instructions_bind_to_localhost():
    commands = re.findall(r"^.*mlflow ui.*$", (PROJECT_ROOT / "README.md").read_text(), flags=re.M)
    assert commands
    assert all("--host 127.0.0.1" in line for line in commands)


def test_compress_refuses_a_model_simreduce_did_not_log_without_running_its_loader(project, tmp_path, capsys):
    folder, marker = tmp_path / "evil-model", tmp_path / "loader-ran"
    write_model_folder(folder, marker, simreduce_parts=False)
    x, y = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x, np.ones((3, 6), np.float32))
    with pytest.raises(SystemExit) as exit_info:
        main(["compress", "--model", str(folder), "--input", str(x), "--output", str(y)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("simreduce: error: ") and "\n" not in err
    assert "was not logged by simreduce" in err
    assert not marker.exists() and not y.exists()


def test_a_simreduce_model_is_served_from_its_weights_never_its_loader(project, tmp_path):
    folder, marker = tmp_path / "model", tmp_path / "loader-ran"
    net = write_model_folder(folder, marker, simreduce_parts=True)
    reducer = load_reducer(TrackingStore(store_uri(project)), str(folder))
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_array_equal(reducer.reduce(x), net(torch.from_numpy(x)).numpy())
    assert reducer.in_dim == 6
    assert not marker.exists()


def test_the_loader_of_that_folder_is_real_code(project, tmp_path):
    """The control for the two tests above: MLflow's own pyfunc loading does run the folder's loader."""
    folder, marker = tmp_path / "model", tmp_path / "loader-ran"
    write_model_folder(folder, marker, simreduce_parts=True)
    mlflow.pyfunc.load_model(str(folder))
    assert marker.exists()


@pytest.mark.parametrize(
    ("path", "read"),
    [
        ("artifacts/weights.safetensors", True),
        ("../weights.safetensors", False),
        ("/elsewhere/weights.safetensors", False),
        ("artifacts/model.pkl", False),
    ],
)
def test_a_nested_models_weights_are_read_only_from_inside_its_folder(path, read):
    """A nested model's weights are a pyfunc artifact named in its MLmodel: compress reads one only where it is
    a weights file inside the model folder."""
    model = Model(
        metadata={SPEC_KEY: {"format": "simreduce.mlp/1"}},
        flavors={"python_function": {"artifacts": {"weights": {"path": path}}}},
    )
    assert simreduce_parts(model) == (({"format": "simreduce.mlp/1"}, path) if read else (None, None))
