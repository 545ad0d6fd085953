"""`data=texts`: corpora read from every supported format, bad corpora refused in one line before a model is
loaded, vectors cached under the texts' content, and a sweep on texts read back from MLflow."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from helpers.project import job_runs, run_python, store_runs

from simreduce.cli import main
from simreduce.runtime.errors import SimreduceError
from simreduce.vectors import embedding
from simreduce.vectors.data import VectorDataModule
from simreduce.vectors.embedding import Embedder
from simreduce.vectors.sources import TextSource
from simreduce.vectors.texts import read_corpus

TEXTS = [
    "The cat sat on the mat.",
    "A dog barked at the mailman all morning.",
    "Stock markets fell sharply after the announcement.",
    "She planted tomatoes, basil and peppers in spring.",
    "Quantum computers use qubits instead of bits.",
    "The recipe needs two cups of flour and an egg.",
]
IDS = [f"doc-{i}" for i in range(len(TEXTS))]


class ModelLoaded(Exception):
    """Raised in place of loading a model: a cache hit must not get there."""


def write(path, texts=TEXTS, ids=IDS) -> None:
    suffix = path.suffix
    if suffix == ".txt":
        path.write_text("\n".join(texts) + "\n")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in zip(ids, texts, strict=True)))
    elif suffix == ".csv":
        pa.csv.write_csv(pa.table({"id": ids, "body": texts}), path)
    else:
        pq.write_table(pa.table({"id": ids, "body": texts}), path)


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv", ".parquet"])
def test_every_format_gives_its_texts_and_ids(tmp_path, suffix):
    path = tmp_path / f"corpus{suffix}"
    write(path)
    options = {} if suffix == ".txt" else {"column": "body", "id_column": "id"}
    corpus = read_corpus(path, **options)
    assert corpus.texts == TEXTS
    assert corpus.ids == ([str(i) for i in range(len(TEXTS))] if suffix == ".txt" else IDS)


def refused(path, **options) -> str:
    with pytest.raises(SimreduceError) as error:
        read_corpus(path, **options)
    assert "\n" not in str(error.value)
    return str(error.value)


def test_missing_file_and_unknown_extension(tmp_path):
    assert "does not exist" in refused(tmp_path / "corpus.txt")
    (tmp_path / "corpus.docx").write_text("x")
    assert ".txt, .jsonl, .csv, .parquet" in refused(tmp_path / "corpus.docx")
    (tmp_path / "emb.npy").write_bytes(b"")
    assert "a file of vectors is read by data=vectors" in refused(tmp_path / "emb.npy")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_missing_column_lists_the_columns(tmp_path, suffix):
    path = tmp_path / f"corpus{suffix}"
    write(path)
    message = refused(path, column="text")
    assert "data.column='text'" in message and "['id', 'body']" in message
    assert "data.id_column='key'" in refused(path, column="body", id_column="key")


def test_a_column_of_numbers_is_not_texts(tmp_path):
    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"body": [1.5, 2.5]}), path)
    assert "holds float at row 0" in refused(path, column="body")


def test_empty_texts_are_named(tmp_path):
    path = tmp_path / "corpus.jsonl"
    write(path, texts=[*TEXTS[:2], "  ", *TEXTS[3:5], ""])
    message = refused(path, column="body", id_column="id")
    assert "2 empty text(s), at rows ['doc-2', 'doc-5']" in message


def test_repeated_ids_and_too_few_texts(tmp_path):
    path = tmp_path / "corpus.csv"
    write(path, ids=["a", "b", "a", "c", "b", "d"])
    assert "repeats the ids ['a', 'b']" in refused(path, column="body", id_column="id")
    write(path, texts=TEXTS[:1], ids=IDS[:1])
    assert "1 text(s)" in refused(path, column="body")


def test_a_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"caf\xe9\nthe\n")
    assert "is not UTF-8" in refused(path)


def test_vectors_are_cached_under_the_texts_content(tmp_path, tiny_llama, monkeypatch):
    path = tmp_path / "corpus.txt"
    write(path)
    embedder = Embedder(name="tiny", name_or_path=str(tiny_llama), device="cpu")
    first = TextSource(embedder, str(path), tmp_path / "cache").load()
    assert first.vectors.shape[0] == len(TEXTS)

    def model_loaded(*args, **kwargs):
        raise ModelLoaded

    monkeypatch.setattr(embedding, "load_pretrained", model_loaded)
    again = TextSource(embedder, str(path), tmp_path / "cache").load()
    np.testing.assert_array_equal(again.vectors.numpy(), first.vectors.numpy())

    write(path, texts=[*TEXTS[:-1], "Another text altogether."])
    with pytest.raises(ModelLoaded):  # new content: embedded anew
        TextSource(embedder, str(path), tmp_path / "cache").load()


def test_fifty_identical_texts_are_refused_once_embedded(tmp_path, tiny_llama):
    path = tmp_path / "same.txt"
    path.write_text("The cat sat on the mat.\n" * 50)
    embedder = Embedder(name="tiny", name_or_path=str(tiny_llama), device="cpu")
    data = VectorDataModule(TextSource, "same", embedder=embedder, path=str(path), cache_dir=tmp_path / "cache")
    with pytest.raises(SimreduceError, match=r"the 40 training rows of texts 'same' hold only 1 distinct row\(s\)"):
        data.setup()


@pytest.mark.slow
def test_a_sweep_on_a_corpus_of_texts(project):
    """The packaged MiniLM embeds 60 short texts with its own pooling; the sweep logs and registers as texts."""
    topics = ["cooking", "football", "stock markets", "gardening", "astronomy", "music"]
    texts = [f"A note number {i} about {topics[i % 6]} and {topics[(i * 5) % 6]}." for i in range(60)]
    path = project / "notes.txt"
    path.write_text("\n".join(texts) + "\n")
    done = run_python(
        ["train.py", "-m", "data=texts", f"data.path={path}", "encoder.dim=4,8", "encoder.steps=30"],
        project,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = job_runs(store_runs(project, "simreduce-notes-minilm"))
    assert sorted(runs["tags.mlflow.runName"]) == ["cosine-d0004", "cosine-d0008"]
    assert set(runs["tags.source"]) == {"texts"}
    assert set(runs["params.n_vectors"]) == {"60"} and set(runs["params.input_dim"]) == {"384"}
    assert "simreduce-texts-notes-minilm" in done.stdout, done.stdout

    # New texts, as jsonl with ids, embedded the way the run embedded its corpus, then reduced.
    (project / "new.jsonl").write_text(
        "".join(json.dumps({"key": f"n{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS))
    )
    compress = ["compress", "--model", "models:/simreduce-texts-notes-minilm/1"]
    files = ["--input", str(project / "new.jsonl"), "--column", "text", "--id-column", "key"]
    main([*compress, *files, "--output", str(project / "new.parquet")])
    out = pq.read_table(project / "new.parquet")
    assert out.column("id").to_pylist() == [f"n{i}" for i in range(len(TEXTS))]
    assert np.isfinite(np.stack(out.column("embedding").to_numpy(zero_copy_only=False))).all()


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv", ".parquet"])
def test_n_lines_in_give_n_rows_whatever_separators_the_texts_hold(tmp_path, suffix):
    texts = ["a line\u2028with a line separator", "a form\x0cfeed", "a vertical\x0btab", "next\x85line", "plain"]
    path = tmp_path / f"corpus{suffix}"
    write(path, texts, ids=[f"doc-{i}" for i in range(len(texts))])
    options = {} if suffix == ".txt" else {"column": "body", "id_column": "id"}
    assert read_corpus(path, **options).texts == texts
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"first\r\nsecond\r\n")
    assert read_corpus(crlf).texts == ["first", "second"]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_null_id_is_refused_not_named_none(tmp_path, suffix):
    path = tmp_path / f"corpus{suffix}"
    write(path, ids=["doc-0", None, *IDS[2:]])
    message = refused(path, column="body", id_column="id")
    assert "data.id_column='id' (--id-column)" in message and "is empty (null) at row(s) ['1']" in message
