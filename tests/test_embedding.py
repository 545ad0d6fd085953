import time

import pytest
import torch
from conftest import HIDDEN, WORDS, run_python

from simreduce.embedding import WordEmbedder, pool_hidden_states
from simreduce.errors import SimreduceError


def test_tiny_llama_vectors_have_model_width(tiny_llama):
    vectors = WordEmbedder("tiny", str(tiny_llama), batch_size=8, device="cpu").embed(WORDS[:20])
    assert vectors.shape == (20, HIDDEN)
    assert vectors.dtype == torch.float32
    assert torch.isfinite(vectors).all()


def test_vectors_come_back_in_word_order_whatever_the_batching(tiny_llama):
    words = ["their", "of", "about", "the", "many", "is", "other", "we"]  # lengths out of order
    one_by_one = WordEmbedder("tiny", str(tiny_llama), batch_size=1, device="cpu").embed(words)
    batched = WordEmbedder("tiny", str(tiny_llama), batch_size=3, device="cpu").embed(words)
    assert torch.allclose(batched, one_by_one, atol=1e-5)
    assert not torch.allclose(one_by_one[0], one_by_one[1], atol=1e-3)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_padding_does_not_change_a_word_vector(tiny_llama, pooling):
    embedder = WordEmbedder("tiny", str(tiny_llama), pooling=pooling, batch_size=16, device="cpu")
    short_word, long_word = "the", "their"  # "their" splits into more tokens, so "the" gets padded
    alone = embedder.embed([short_word])
    padded = embedder.embed([short_word, long_word])
    assert torch.allclose(alone[0], padded[0], atol=1e-5)


def test_pooling_uses_only_masked_tokens():
    hidden = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [-100.0], [-100.0]]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert pool_hidden_states(hidden, mask, "mean").flatten().tolist() == [2.0, 2.0]
    assert pool_hidden_states(hidden, mask, "last").flatten().tolist() == [3.0, 2.0]


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SimreduceError, match="does not exist"):
        WordEmbedder("x", str(tmp_path / "nope"))


@pytest.mark.parametrize(
    "hub_env",
    [{"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}],
    ids=["offline", "unreachable"],
)
def test_unloadable_hub_model_fails_fast_with_clear_message(tmp_path, hub_env):
    started = time.perf_counter()
    proc = run_python(
        ["train.py", "embedder=deepseek_coder"], tmp_path, timeout=60, HF_HOME=str(tmp_path / "hf"), **hub_env
    )
    elapsed = time.perf_counter() - started
    assert proc.returncode == 2
    assert "deepseek-ai/deepseek-coder-1.3b-base" in proc.stderr
    assert "embedder=minilm" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert elapsed < 10
