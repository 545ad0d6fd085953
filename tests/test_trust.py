"""Nothing from a model folder, cache or logged model runs code unless the user turns it on."""

import json
import re
import shutil
from pathlib import Path

import pytest
from helpers.project import PROJECT_ROOT, compose_config

from simreduce.embedding import WordEmbedder
from simreduce.errors import SimreduceError


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
        WordEmbedder("evil", str(folder), device="cpu").embed(["the", "of"])
    assert not marker.exists()


def test_the_same_folder_does_run_its_code_once_trusted(remote_code_model):
    """The control for the test above: the folder's code is real and runs when remote code is turned on."""
    folder, marker = remote_code_model
    with pytest.raises(Exception):  # noqa: B017 - the module defines no classes; only its import matters
        WordEmbedder("evil", str(folder), device="cpu", trust_remote_code=True).embed(["the", "of"])
    assert marker.exists()


def test_mlflow_ui_instructions_bind_to_localhost():
    commands = re.findall(r"^.*mlflow ui.*$", (PROJECT_ROOT / "README.md").read_text(), flags=re.M)
    assert commands
    assert all("--host 127.0.0.1" in line for line in commands)
