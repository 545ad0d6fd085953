import json
import logging
import shutil
import socket

import pytest
import torch
from helpers.tiny_model import HIDDEN, WORDS

from simreduce.runtime.errors import SimreduceError
from simreduce.vectors.embedding import Embedder
from simreduce.vectors.model_files import UnusedHeadReport, load_pretrained, resolve_model_source
from simreduce.vectors.pooling import pool_hidden_states
from simreduce.vectors.sources import WordSource


def test_tiny_llama_vectors_have_model_width(tiny_llama):
    vectors = Embedder("tiny", str(tiny_llama), batch_size=8, device="cpu").embed(WORDS[:20])
    assert vectors.shape == (20, HIDDEN)
    assert vectors.dtype == torch.float32
    assert torch.isfinite(vectors).all()


def test_vectors_come_back_in_word_order_whatever_the_batching(tiny_llama):
    words = ["their", "of", "about", "the", "many", "is", "other", "we"]  # lengths out of order
    one_by_one = Embedder("tiny", str(tiny_llama), batch_size=1, device="cpu").embed(words)
    batched = Embedder("tiny", str(tiny_llama), batch_size=3, device="cpu").embed(words)
    assert torch.allclose(batched, one_by_one, atol=1e-5)
    assert not torch.allclose(one_by_one[0], one_by_one[1], atol=1e-3)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_padding_does_not_change_a_word_vector(tiny_llama, pooling):
    embedder = Embedder("tiny", str(tiny_llama), pooling=pooling, batch_size=16, device="cpu")
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
        Embedder("x", str(tmp_path / "nope"))


@pytest.mark.parametrize(
    ("hub_env", "connections"),
    [({"HF_HUB_OFFLINE": "1"}, 0), ({"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}, 1)],
    ids=["offline", "unreachable"],
)
def test_unloadable_hub_model_fails_at_the_first_check_without_retrying(monkeypatch, hub_env, connections):
    """Fails fast, as what happens rather than seconds: the hub is tried at most once and no loader runs."""
    import transformers

    for name, value in hub_env.items():
        monkeypatch.setenv(name, value)
    attempts, loads = [], []
    real_connect = socket.create_connection

    def counting_connect(address, *args, **kwargs):
        attempts.append(address)
        return real_connect(address, *args, **kwargs)

    def tokenizer_from_pretrained(location, local_files_only=False, **kwargs):
        loads.append(("tokenizer", local_files_only))
        raise OSError(f"{location} is not in the local cache")

    monkeypatch.setattr(socket, "create_connection", counting_connect)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer_from_pretrained)
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", lambda *a, **k: loads.append(("model", k)))
    with pytest.raises(SimreduceError) as error:
        load_pretrained(resolve_model_source("deepseek-ai/deepseek-coder-1.3b-base"))
    message = str(error.value)
    assert "deepseek-ai/deepseek-coder-1.3b-base" in message and "embedder=minilm" in message
    assert "HF_HUB_OFFLINE is set" in message if connections == 0 else "cannot be reached" in message
    assert len(attempts) == connections  # one probe of the endpoint at most: no retry
    assert loads == [("tokenizer", True)]  # only the local cache is looked at; the model loader never runs


BASE = {"layer": -1, "pooling": "mean", "max_length": 32, "dtype": "float32", "revision": None}


@pytest.mark.parametrize(
    "change",
    [{"max_length": 4}, {"pooling": "last"}, {"layer": 1}, {"dtype": "bfloat16"}, {"revision": "v2"}, "model files"],
    ids=["max_length", "pooling", "layer", "dtype", "revision", "model-files"],
)
def test_every_setting_that_changes_a_vector_misses_the_cache(tiny_llama, tmp_path, change):
    folder = tmp_path / "model"
    shutil.copytree(tiny_llama, folder)
    source = WordSource(Embedder("tiny", str(folder), **BASE), tmp_path / "cache", words_file=None, n_words=4)
    source._words = WORDS  # noqa: SLF001 - the tiny model's vocabulary, not wordfreq's
    first = source.load().vectors
    if change == "model files":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-3}))
        changed = Embedder("tiny", str(folder), **BASE)
    else:
        changed = Embedder("tiny", str(folder), **{**BASE, **change})
    assert source.cache.load(changed.cache_key(), WORDS) is None
    assert source.cache.load(source.cache_key(), WORDS) is not None and first is not None


@pytest.mark.parametrize("change", [{"batch_size": 1}, {"device": "cpu"}, {"trust_remote_code": True}, {"name": "x"}])
def test_settings_that_change_no_vector_share_the_cache(tiny_llama, change):
    plain = {"name": "tiny", "name_or_path": str(tiny_llama)}
    assert Embedder(**{**plain, **change}).cache_key() == Embedder(**plain).cache_key()


def test_a_checkpoints_unused_lm_head_is_no_load_report_on_the_console(tiny_llama, capfd):
    """The tiny model is saved with its LM head, as a causal LM's checkpoint is: the base model leaves it unused."""
    capfd.readouterr()
    load_pretrained(resolve_model_source(str(tiny_llama)))
    assert "LOAD REPORT" not in capfd.readouterr().err


@pytest.mark.parametrize(("statuses", "shown"), [(["UNEXPECTED"], False), (["UNEXPECTED", "MISSING"], True)])
def test_a_load_report_of_missing_weights_still_shows(statuses, shown):
    report = "LlamaModel LOAD REPORT from: x\n" + "\n".join(f"w{i} | {s} |" for i, s in enumerate(statuses))
    record = logging.LogRecord("transformers.modeling_utils", logging.WARNING, "", 0, report, (), None)
    assert UnusedHeadReport().filter(record) is shown
