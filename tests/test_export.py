"""`simreduce export`: a logged reducer of texts as a sentence-transformers model folder (standard modules,
safetensors, no code of its own) whose `encode` gives what `simreduce compress` writes for the same texts, its
stored form's codes included, and the same model served by MLflow's sentence_transformers flavour."""

import json

import mlflow
import mlflow.pyfunc
import mlflow.sentence_transformers
import numpy as np
import pytest
import torch
from helpers.models import write_model_folder
from helpers.project import compose_config, run_python, tiny_overrides, use_store
from helpers.tiny_model import WORDS
from safetensors.numpy import load_file
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import quantize_embeddings

from simreduce.cli import main
from simreduce.experiment.export import INFO_FILE, STORED_FILE, int8_ranges, stored_codes
from simreduce.experiment.job import run_job
from simreduce.experiment.settings import check_settings
from simreduce.reducers.precision import StoredPrecision
from simreduce.runtime.errors import SimreduceError

TEXTS = [" ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(3 + i % 5)) for i in range(40)]
STANDARD_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")
# encode in the batches the run's embedder used (embedder.batch_size): the same floats to the last bit, so the
# same codes; other batches pad differently, which can move a float's last bit and, rarely, a code
TINY_BATCH, MINILM_BATCH = 64, 128


@pytest.fixture
def corpus(project):
    path = project / "notes.txt"
    path.write_text("\n".join(TEXTS) + "\n")
    return path


def train(corpus, *overrides: str, embedder: str | None = None) -> dict[str, str]:
    """One job on the corpus, every candidate's model logged; {run name: models:/<model id>}."""
    model = [f"embedder.name_or_path={embedder}", "embedder.name=tiny"] if embedder else []
    run_job(
        compose_config(
            [
                "data=texts",
                f"data.path={corpus}",
                *model,
                "encoder.steps=20",
                "trainer.accelerator=cpu",
                "trainer.val_check_interval=10",
                "tracking.log_model=true",
                *overrides,
            ]
        )
    )
    return logged_models(corpus.parent)


def logged_models(root) -> dict[str, str]:
    """{run name: models:/<model id>} of every reducer logged in the store under `root`."""
    use_store(root)
    client = mlflow.MlflowClient()
    logged = client.search_logged_models(
        experiment_ids=[e.experiment_id for e in client.search_experiments()], filter_string="name = 'model'"
    )
    return {client.get_run(m.source_run_id).info.run_name: f"models:/{m.model_id}" for m in logged}


def export(uri: str, folder, *flags: str) -> str:
    main(["export", "--model", uri, "--to", str(folder), *flags])
    return folder


def compress(uri: str, corpus, *flags: str) -> np.ndarray:
    output = corpus.parent / "compressed.npy"
    main(["compress", "--model", uri, "--input", str(corpus), "--output", str(output), *flags])
    return np.load(output)


def encode(folder, batch_size: int = TINY_BATCH, **settings) -> np.ndarray:
    model = SentenceTransformer(str(folder), device="cpu", trust_remote_code=False, **settings)
    return model.encode(TEXTS, batch_size=batch_size)


def assert_standard_and_pickle_free(folder) -> None:
    modules = json.loads((folder / "modules.json").read_text())
    assert all(m["type"].rpartition(".")[2] in STANDARD_MODULES for m in modules), modules
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".json", ".safetensors"}, files
    assert not [p for p in files if p.read_bytes()[:1] == b"\x80"]  # a pickle's first byte


def test_a_sentence_transformers_winner_encodes_as_compress_and_mlflow_serves_it(project, corpus, capsys):
    """The packaged MiniLM (Transformer, Pooling, Normalize) and a linear map: the folder is MiniLM's modules and
    a Dense, pickle-free; its encode, MLflow's flavour and its pyfunc give compress's vectors."""
    uri = train(corpus, "encoder.dim=8", "eval.precisions=[float32]")["cosine-d0008"]
    folder = export(uri, project / "exported")
    report = capsys.readouterr().out
    assert "8-d vectors, stored as float32" in report
    modules = [m["type"].rpartition(".")[2] for m in json.loads((folder / "modules.json").read_text())]
    assert modules == ["Transformer", "Pooling", "Normalize", "Dense"]
    assert_standard_and_pickle_free(folder)

    expected = compress(uri, corpus)
    np.testing.assert_allclose(encode(folder, MINILM_BATCH), expected, atol=1e-5)

    text_model_uri = report.split("logged as ")[1].split()[0]
    served = mlflow.sentence_transformers.load_model(text_model_uri).encode(TEXTS, batch_size=MINILM_BATCH)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    predicted = mlflow.pyfunc.load_model(text_model_uri).predict(TEXTS)
    np.testing.assert_allclose(np.asarray(predicted), expected, atol=1e-5)
    run = mlflow.MlflowClient().get_run(json.loads((folder / INFO_FILE).read_text())["run_id"])
    assert run.data.tags["text_model_uri"] == text_model_uri


def test_an_mlp_winner_and_its_stored_forms_give_compress_codes(project, corpus, tiny_llama):
    """A plain model (hidden layer 1, last-token pooling) and an MLP: float32 within 1e-5; int8 by
    sentence-transformers' own quantize_embeddings with the folder's ranges, binary by its ubinary, 2-bit codes by
    `stored_codes`: each identical to compress's."""
    overrides = ["encoder.hidden=[16]", "encoder.dim=6", "embedder.layer=1", "embedder.pooling=last"]
    uris = train(corpus, *overrides, "eval.precisions=[float32,int8,int2,binary]", embedder=tiny_llama)
    exported = {name: export(uri, project / name, "--no-log") for name, uri in uris.items()}
    vectors = encode(exported["cosine-d0006"])
    np.testing.assert_allclose(vectors, compress(uris["cosine-d0006"], corpus), atol=1e-5)
    assert_standard_and_pickle_free(exported["cosine-d0006"])

    int8 = exported["cosine-d0006-int8"]
    ranges = load_file(str(int8 / STORED_FILE))["ranges"]
    codes = compress(uris["cosine-d0006-int8"], corpus)
    assert np.array_equal(quantize_embeddings(encode(int8), "int8", ranges=ranges), codes)
    assert np.array_equal(stored_codes(int8, encode(int8)), codes)
    assert np.array_equal(
        stored_codes(exported["cosine-d0006-int2"], vectors), compress(uris["cosine-d0006-int2"], corpus)
    )
    binary = SentenceTransformer(str(exported["cosine-d0006-binary"]), device="cpu")
    ubinary = binary.encode(TEXTS, batch_size=TINY_BATCH, precision="ubinary")
    assert np.array_equal(ubinary, compress(uris["cosine-d0006-binary"], corpus))


def test_a_nested_winner_gives_each_prefix_with_truncate_dim(project, corpus, tiny_llama):
    uris = train(
        corpus, "encoder=nested", "encoder.dims=[2,4,8]", "eval.precisions=[float32,int8]", embedder=tiny_llama
    )
    floats = export(uris["nested-d0008"], project / "floats", "--no-log")
    codes = export(uris["nested-d0008-int8"], project / "codes", "--no-log")
    assert json.loads((codes / INFO_FILE).read_text())["prefix_dims"] == [2, 4, 8]
    np.testing.assert_allclose(
        encode(floats, truncate_dim=4), compress(uris["nested-d0008"], corpus, "--dim", "4"), atol=1e-5
    )
    prefix = encode(codes, truncate_dim=4)
    ranges = load_file(str(codes / STORED_FILE))["ranges"][:, :4]
    expected = compress(uris["nested-d0008-int8"], corpus, "--dim", "4")
    assert np.array_equal(quantize_embeddings(prefix, "int8", ranges=ranges), expected)
    assert np.array_equal(stored_codes(codes, prefix), expected)
    with pytest.raises(SimreduceError, match=r"3-d vectors are no output of .*: it gives 8-d vectors, or prefixes of"):
        stored_codes(codes, prefix[:, :3])


def test_a_words_winner_becomes_a_text_model_and_says_how_it_differs(project, tiny_llama, words_file, capsys):
    overrides = [*tiny_overrides(tiny_llama, words_file), "encoder.dim=4", "tracking.log_model=true"]
    run_job(compose_config(overrides))
    [uri] = logged_models(project).values()
    folder = export(uri, project / "words-model", "--no-log")
    assert "note: trained on words: encode pools all of a text's tokens" in capsys.readouterr().out
    assert encode(folder).shape == (len(TEXTS), 4)
    assert_standard_and_pickle_free(folder)


def user_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("simreduce: error: ") and "\n" not in err
    return err


def test_a_vectors_winner_is_refused_in_one_line_pointing_to_compress(project, capsys):
    path = project / "vectors.npy"
    np.save(path, np.random.default_rng(0).normal(size=(40, 12)).astype(np.float32))
    overrides = ["data=vectors", f"data.path={path}", "encoder=pca", "encoder.dim=4", "tracking.log_model=true"]
    run_job(compose_config([*overrides, "eval.precisions=[float32]"]))
    [uri] = logged_models(project).values()
    err = user_error(capsys, ["export", "--model", uri, "--to", str(project / "out")])
    assert "cannot be a text model" in err and "simreduce compress --model" in err
    assert not (project / "out").exists()
    with pytest.raises(SimreduceError, match="data=vectors has no embedder, so its winner cannot be a text model"):
        check_settings(compose_config([*overrides, f"select.export_to={project / 'out'}"]))


def test_a_folder_that_holds_files_is_never_overwritten(project, capsys):
    (project / "taken").mkdir()
    (project / "taken" / "mine.txt").write_text("keep me")
    err = user_error(capsys, ["export", "--model", "models:/any@winner", "--to", str(project / "taken")])
    assert "exists and is not an empty folder" in err
    err = user_error(capsys, ["select", "--export-to", str(project / "taken")])  # before anything is selected
    assert err.endswith(
        "--export-to " + repr(str(project / "taken")) + " exists and is not an empty folder: pass a new folder."
    )
    assert (project / "taken" / "mine.txt").read_text() == "keep me"


def test_a_model_without_a_run_has_no_embedder_to_export(project, tmp_path, capsys):
    write_model_folder(tmp_path / "model", tmp_path / "loader-ran", simreduce_parts=True)
    err = user_error(capsys, ["export", "--model", str(tmp_path / "model"), "--to", str(project / "out")])
    assert "has no MLflow run to take its embedder from" in err
    assert not (tmp_path / "loader-ran").exists() and not (project / "out").exists()


def test_int8_ranges_give_sentence_transformers_our_steps_exactly():
    rng = np.random.default_rng(0)
    reduced = (rng.normal(size=(50, 4096)) * rng.uniform(1e-3, 30, size=4096)).astype(np.float32)
    reduced[:, 0] = 0.25  # a dimension without range
    stored = StoredPrecision.calibrated("int8", torch.from_numpy(reduced))
    ranges = int8_ranges(stored.starts, stored.steps)
    assert np.array_equal(ranges[0], stored.starts)
    assert np.array_equal(quantize_embeddings(reduced, "int8", ranges=ranges), stored.encode(reduced))


@pytest.mark.slow
def test_a_sweep_on_texts_exports_its_winner_as_a_sentence_transformers_model(project, corpus):
    """The README's three lines: `train.py -m data=texts ... select.export_to=folder`, then SentenceTransformer."""
    folder = project / "winner"
    done = run_python(
        [
            "train.py",
            "-m",
            "data=texts",
            f"data.path={corpus}",
            "encoder.dim=4,8",
            "encoder.steps=20",
            "select.register=always",
            f"select.export_to={folder}",
        ],
        project,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"exported a sentence-transformers model to {folder}" in done.stdout
    info = json.loads((folder / INFO_FILE).read_text())
    vectors = SentenceTransformer(str(folder), device="cpu").encode(["a sentence"])
    assert vectors.shape == (1, info["dim"])
