import lightning.pytorch as pl
import numpy as np
import pytest
from helpers.project import compose_config
from hydra.utils import instantiate

from simreduce.experiment.config import CONFIG_DIR, ROOT_ENV
from simreduce.experiment.tracking.sweeps import sweep_id_of

# Built with a width; every other group instantiates as composed.
NEEDS_INPUT_WIDTH = {"encoder"}
NOT_OBJECTS = {"paths", "tracking", "select", "floor"}  # plain settings
NEEDS_A_FILE = {"data": {"vectors", "texts"}}


def group_options() -> list[tuple[str, str]]:
    return sorted(
        (group.name, option.stem)
        for group in (CONFIG_DIR).iterdir()
        if group.is_dir()
        for option in group.glob("*.yaml")
    )


@pytest.mark.parametrize(("group", "option"), group_options(), ids=lambda v: v)
def test_every_option_of_every_group_composes_and_builds(group, option, tmp_path, monkeypatch):
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    if group == "experiment":  # an overlay of the whole config, launcher included
        assert compose_config([f"+experiment={option}"]) != compose_config([])
        return
    overrides = [f"{group}={option}"]
    if option in NEEDS_A_FILE.get(group, ()):  # a source of the user's own file
        np.save(tmp_path / "emb.npy", np.eye(3, dtype=np.float32))
        overrides.append(f"data.path={tmp_path / 'emb.npy'}")
    cfg = compose_config(overrides)
    if group in NOT_OBJECTS:
        assert cfg[group]
        return
    built = (
        instantiate(cfg[group], in_dim=4 * cfg.encoder.dim) if group in NEEDS_INPUT_WIDTH else instantiate(cfg[group])
    )
    assert built is not None
    if group == "trainer":
        assert isinstance(built, pl.Trainer)


def test_run_time_folders_are_interpolated_from_the_project_root(tmp_path, monkeypatch):
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    cfg = compose_config([])
    assert cfg.paths.root == str(tmp_path)
    assert cfg.data.cache_dir == f"{tmp_path}/.cache/vectors"
    assert cfg.tracking.uri == f"sqlite:///{tmp_path}/mlruns/mlflow.db"


def test_default_config_is_the_study_setup():
    cfg = compose_config([])
    assert cfg.embedder.name == "minilm"
    assert cfg.data.n_words == 512
    assert cfg.data.words_file is None
    assert cfg.encoder._target_.endswith("CosineEncoder")
    assert cfg.trainer.accelerator == "auto"
    assert cfg.trainer.max_steps == cfg.encoder.steps
    assert cfg.tracking.experiment == "simreduce-minilm"


def test_deepseek_coder_names_the_reference_model():
    cfg = compose_config(["embedder=deepseek_coder"])
    assert cfg.embedder.name_or_path == "deepseek-ai/deepseek-coder-1.3b-base"
    assert cfg.tracking.experiment == "simreduce-deepseek_coder"


def test_overrides_reach_the_built_objects():
    cfg = compose_config(["encoder.dim=16", "encoder.hidden=[32]", "encoder.steps=7"])
    encoder = instantiate(cfg.encoder, in_dim=64)
    assert encoder.dim == 16
    assert [m.out_features for m in encoder.net if hasattr(m, "out_features")] == [32, 16]
    assert cfg.trainer.max_steps == 7


def test_two_sweeps_launched_in_the_same_second_get_their_own_sweep_ids():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        first, second = (compose("config", return_hydra_config=True).hydra.sweep.dir for _ in range(2))
    assert sweep_id_of(first) != sweep_id_of(second)
    assert sweep_id_of(first).split("_")[1].count("-") == 3  # hours, minutes, seconds, microseconds
