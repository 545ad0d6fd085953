"""Shared fixtures: a tiny random Llama (the class of deepseek-coder) saved to disk, and composed configs."""

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "you",
    "that",
    "it",
    "he",
    "was",
    "for",
    "on",
    "are",
    "as",
    "with",
    "his",
    "they",
    "at",
    "be",
    "this",
    "have",
    "from",
    "or",
    "one",
    "had",
    "by",
    "word",
    "but",
    "not",
    "what",
    "all",
    "were",
    "we",
    "when",
    "your",
    "can",
    "said",
    "there",
    "use",
    "an",
    "each",
    "which",
    "she",
    "do",
    "how",
    "their",
    "if",
    "will",
    "up",
    "other",
    "about",
    "out",
    "many",
    "then",
    "them",
    "these",
    "so",
]
HIDDEN = 32
CHARTS = {"plots/base_distributions.png", "plots/difference_distribution.png", "plots/base_and_difference.png"}


def build_tiny_llama(folder: Path) -> Path:
    """A random 2-layer LlamaForCausalLM and a small BPE tokenizer (words split into several tokens)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.train_from_iterator(WORDS * 3, trainers.BpeTrainer(vocab_size=60, special_tokens=specials))
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=bpe.get_vocab_size(),
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def words_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("words") / "words.txt"
    path.write_text("\n".join(WORDS) + "\n")
    return path


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A private project root: its own MLflow store and vector cache."""
    monkeypatch.setenv("SIMREDUCE_ROOT", str(tmp_path))
    return tmp_path


def tiny_overrides(model: Path, words: Path) -> list[str]:
    """Shrink the default config to seconds: tiny model, few words, few steps, CPU."""
    return [
        f"embedder.name_or_path={model}",
        "embedder.name=tiny",
        f"data.words_file={words}",
        "encoder.steps=40",
        "trainer.accelerator=cpu",
        "trainer.val_check_interval=20",
        "trainer.log_every_n_steps=10",
        "tracking.log_model=false",
    ]


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def project_env(root: Path, **env: str) -> dict[str, str]:
    """The environment of a subprocess whose project root (MLflow store, cache) is `root`."""
    return {**os.environ, "SIMREDUCE_ROOT": str(root), **env}


def run_python(args: list[str], root: Path, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    """`python ARGS` from the project folder with `root` as SIMREDUCE_ROOT: its own MLflow store and cache."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=project_env(root, **env),
    )


def tiny_sweep(model: Path, words: Path, sweep_dir: Path, *overrides: str) -> list[str]:
    """`train.py -m` on the tiny setup; an override here replaces the tiny default of the same key."""
    merged = dict(o.split("=", 1) for o in [*tiny_overrides(model, words), *overrides])
    return ["train.py", "-m", *(f"{k}={v}" for k, v in merged.items()), f"hydra.sweep.dir={sweep_dir}"]


def store_runs(root: Path, experiment: str = "simreduce-tiny") -> pd.DataFrame:
    """Every run of `experiment` in the store under `root`, oldest first (empty if there is none yet)."""
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    if mlflow.get_experiment_by_name(experiment) is None:
        return pd.DataFrame(columns=["run_id", "status", "tags.mlflow.runName"])
    return mlflow.search_runs(experiment_names=[experiment], order_by=["attributes.start_time ASC"])


def job_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The sweep's jobs, without its `sweep-<id>` summary run."""
    return runs[~runs["tags.mlflow.runName"].str.startswith("sweep-")]


def artifact_paths(run_id: str, folder: str | None = None) -> set[str]:
    """Every artifact file of a run, as paths relative to its artifact root."""
    paths = set()
    for item in mlflow.MlflowClient().list_artifacts(run_id, folder):
        paths |= artifact_paths(run_id, item.path) if item.is_dir else {item.path}
    return paths
