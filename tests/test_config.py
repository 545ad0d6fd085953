from conftest import compose_config
from hydra.utils import instantiate


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
    assert encoder.hparams.dim == 16
    assert [m.out_features for m in encoder.net if hasattr(m, "out_features")] == [32, 16]
    assert cfg.trainer.max_steps == 7
