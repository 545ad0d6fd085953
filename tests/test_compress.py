"""`simreduce compress` never writes garbage and never destroys input: bad paths and bad rows are refused with
one line before anything is written, and the output appears whole or not at all."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from helpers.models import write_model_folder
from helpers.project import compose_config
from helpers.tiny_model import HIDDEN
from safetensors.numpy import load_file, save_file

from simreduce import compress as compress_module
from simreduce.cli import main
from simreduce.compress import embedded_chunks
from simreduce.experiment.tracking import registry
from simreduce.experiment.tracking.registry import SPEC_KEY, WEIGHTS_PATH, LoggedReducer
from simreduce.reducers.precision import StoredPrecision
from simreduce.reducers.weights import STORED_PREFIX
from simreduce.vectors import vector_files
from simreduce.vectors.vector_files import VectorFileSpec

D = 6
HEAVY = ("lightning", "transformers")  # what compressing vectors must not import


@pytest.fixture
def model(project, tmp_path):
    """A simreduce reducer [N, 6] -> [N, 2] as a model folder, and its net."""
    folder = tmp_path / "model"
    return folder, write_model_folder(folder, tmp_path / "loader-ran", simreduce_parts=True, in_dim=D)


def compress(folder, input_path, output_path, *flags: str) -> None:
    main(["compress", "--model", str(folder), "--input", str(input_path), "--output", str(output_path), *flags])


def refused(capsys, folder, input_path, output_path) -> str:
    with pytest.raises(SystemExit) as exit_info:
        compress(folder, input_path, output_path)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("simreduce: error: ") and "\n" not in err
    return err


def good_rows(n: int = 5) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, D)).astype(np.float32)


@pytest.mark.parametrize(
    ("output_name", "message"),
    [
        ("reduced", "is not a .npy or .parquet file path"),
        ("reduced.txt", "is not a .npy or .parquet file path"),
        ("folder.npy/", "is a directory: pass a file path in it"),
        ("x.npy", "is the input"),
    ],
)
def test_bad_output_paths_are_refused_and_the_input_kept(model, tmp_path, capsys, output_name, message):
    folder, _ = model
    x = tmp_path / "x.npy"
    np.save(x, good_rows())
    output = tmp_path / output_name
    if output_name.endswith("/"):
        output.mkdir()
    assert message in refused(capsys, folder, x, output)
    np.testing.assert_array_equal(np.load(x), good_rows())
    assert {p.name for p in tmp_path.iterdir()} <= {"model", "mlruns", "x.npy", "folder.npy"}  # nothing written


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda x: x.mkdir(), "is a directory"),
        (lambda x: None, "does not exist"),
        (lambda x: np.save(x, np.array([{"a": 1}], dtype=object)), "not a numeric .npy array"),
        (lambda x: np.save(x, good_rows().astype(np.complex64)), "complex64 values, not real numbers"),
        (lambda x: np.save(x, good_rows()[:, :3]), "takes 6-d ones"),
    ],
    ids=["directory", "missing", "pickled-objects", "complex", "wrong-width"],
)
def test_bad_inputs_are_refused_before_anything_is_written(model, tmp_path, capsys, make_input, message):
    folder, _ = model
    x, y = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(y, np.zeros((1, 2), np.float32))  # an earlier output: kept as it was
    make_input(x)
    assert message in refused(capsys, folder, x, y)
    np.testing.assert_array_equal(np.load(y), np.zeros((1, 2), np.float32))
    assert not list(tmp_path.glob(".y.npy*"))


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, 0.0])
def test_rows_without_a_cosine_are_refused_by_index_or_dropped_on_request(model, tmp_path, capsys, bad_value):
    folder, net = model
    rows = good_rows(8)
    rows[[2, 5]] = 0.0
    rows[[2, 5], 0] = bad_value
    x, y = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x, rows)
    assert "2 vector(s) that are NaN/inf or all zero, first ['2', '5']" in refused(capsys, folder, x, y)
    assert not y.exists()

    compress(folder, x, y, "--drop-bad-rows")
    kept = np.delete(rows, [2, 5], axis=0)
    with torch.no_grad():
        np.testing.assert_allclose(np.load(y), net(torch.from_numpy(kept)).numpy(), rtol=1e-6)
    assert np.isfinite(np.load(y)).all()


def test_a_model_folder_is_served_without_any_store(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMREDUCE_ROOT", str(tmp_path / "empty-project"))
    folder = tmp_path / "model"
    net = write_model_folder(folder, tmp_path / "loader-ran", simreduce_parts=True, in_dim=D)
    np.save(tmp_path / "x.npy", good_rows())
    compress(folder, tmp_path / "x.npy", tmp_path / "y.npy")
    with torch.no_grad():
        np.testing.assert_allclose(np.load(tmp_path / "y.npy"), net(torch.from_numpy(good_rows())).numpy(), rtol=1e-6)
    assert not (tmp_path / "empty-project").exists()  # no store was made for it


def test_a_model_folder_declaring_a_huge_layer_is_refused_before_it_is_built(tmp_path, capsys):
    folder = tmp_path / "model"
    write_model_folder(folder, tmp_path / "loader-ran", simreduce_parts=True, in_dim=D)
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    mlmodel["metadata"][SPEC_KEY]["dim"] = 30_000_000
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    np.save(tmp_path / "x.npy", good_rows())
    err = refused(capsys, folder, tmp_path / "x.npy", tmp_path / "y.npy")
    assert f"declares layer 0.weight of shape [30000000, {D}], its weights file holds [2, {D}]" in err
    assert not (tmp_path / "y.npy").exists() and not (tmp_path / "loader-ran").exists()


def reduced_by(net, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


def test_a_large_input_streams_through_in_chunks(model, tmp_path, monkeypatch):
    """Chunks of 16 rows, read from the mapped file twice (check, then reduce): the output is the whole
    reduction, and no chunk handed to the reducer is larger than 16 rows."""
    folder, net = model
    monkeypatch.setattr(vector_files, "CHUNK_ROWS", 16)
    sizes = []
    real_reduce = LoggedReducer.reduce
    monkeypatch.setattr(LoggedReducer, "reduce", lambda self, x: sizes.append(len(x)) or real_reduce(self, x))
    rows = good_rows(40)
    np.save(tmp_path / "x.npy", rows)
    compress(folder, tmp_path / "x.npy", tmp_path / "y.npy")
    assert sizes == [16, 16, 8]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), reduced_by(net, rows), rtol=1e-6)


def test_parquet_in_and_out_keeps_the_ids_and_leaves_bad_rows_out(model, tmp_path):
    folder, net = model
    rows = good_rows(10)
    rows[4] = np.nan
    ids = [f"doc-{i}" for i in range(10)]
    table = pa.table({"doc_id": ids, "emb": pa.FixedSizeListArray.from_arrays(rows.reshape(-1), D)})
    pq.write_table(table, tmp_path / "x.parquet")
    flags = ["--column", "emb", "--id-column", "doc_id", "--drop-bad-rows"]
    compress(folder, tmp_path / "x.parquet", tmp_path / "y.parquet", *flags)
    out = pq.read_table(tmp_path / "y.parquet")
    assert out.column("id").to_pylist() == [i for i in ids if i != "doc-4"]
    kept = np.delete(rows, 4, axis=0)
    np.testing.assert_allclose(np.stack(out.column("embedding").to_numpy(zero_copy_only=False)), reduced_by(net, kept))


@pytest.mark.parametrize(
    ("name", "write", "flags"),
    [
        ("x.npz", lambda p, x: np.savez(p, emb=x), []),
        ("x.safetensors", lambda p, x: save_file({"emb": x, "other": x[:2].copy()}, str(p)), ["--key", "emb"]),
        ("x.fvecs", lambda p, x: np.hstack([np.full((len(x), 1), D, "<i4"), x.view("<i4")]).tofile(p), []),
    ],
)
@pytest.mark.parametrize("n_rows", [5, 1])  # one vector: no pairs, which matter for training only
def test_every_vector_format_compresses_to_row_numbered_parquet(model, tmp_path, name, write, flags, n_rows):
    folder, net = model
    write(tmp_path / name, good_rows(n_rows))
    compress(folder, tmp_path / name, tmp_path / "y.parquet", *flags)
    out = pq.read_table(tmp_path / "y.parquet")
    assert out.column("id").to_pylist() == [str(i) for i in range(n_rows)]
    np.testing.assert_allclose(
        np.stack(out.column("embedding").to_numpy(zero_copy_only=False)), reduced_by(net, good_rows(n_rows))
    )


class RunOfSource:
    """The one tag of a reducer's run that compress reads to embed words or texts: which source it trained on."""

    def __init__(self, source: str):
        self.source = source

    def run_tags(self, run_id: str) -> dict[str, str]:
        return {"source": self.source}


@pytest.mark.parametrize(
    ("source", "name", "content", "column"),
    [
        ("words", "one.txt", "hello\n", None),
        ("texts", "one.txt", "a single line of text\n", None),
        ("texts", "one.jsonl", '{"text": "a single line of text"}\n', "text"),
        ("texts", "one.csv", "text\na single line of text\n", "text"),
    ],
)
def test_one_word_or_text_is_embedded_for_compress(
    project, tmp_path, monkeypatch, tiny_llama, source, name, content, column
):
    """One word or one text has no pairs: that matters for training, not for compressing it."""
    path = tmp_path / name
    path.write_text(content)
    cfg = compose_config([f"data={source}", f"embedder.name_or_path={tiny_llama}", "embedder.name=tiny"])
    monkeypatch.setattr(registry, "run_config", lambda store, run_id: cfg)  # what the run logged as config.yaml
    chunks = list(embedded_chunks(RunOfSource(source), "run", VectorFileSpec(path, None, column, None))())
    assert [(vectors.shape, ids) for vectors, ids in chunks] == [((1, HIDDEN), ["hello" if source == "words" else "0"])]


@pytest.mark.parametrize("precision", ["int8", "int4", "int2", "int1", "pq2", "pq1", "binary", "float16"])
def test_a_model_stored_below_float32_writes_what_it_stores(project, tmp_path, capsys, precision):
    """int8 codes (its constants in the weights file), packed b-bit or product codes (their rotation and levels
    or centroids there), packed sign bits, or float16, in .npy and in parquet."""
    folder = tmp_path / "model"
    net = write_model_folder(folder, tmp_path / "loader-ran", True, in_dim=D, dim=12, precision=precision)
    tensors = load_file(str(folder / WEIGHTS_PATH))
    constants = {name.removeprefix(STORED_PREFIX): t for name, t in tensors.items() if name.startswith(STORED_PREFIX)}
    expected = StoredPrecision(precision, **constants).encode(reduced_by(net, good_rows()))
    assert expected.dtype == {"int8": np.int8, "float16": np.float16}.get(precision, np.uint8)
    np.save(tmp_path / "x.npy", good_rows())

    compress(folder, tmp_path / "x.npy", tmp_path / "y.npy")
    assert f"wrote 5 x 12 vectors as {precision} to" in capsys.readouterr().out
    written = np.load(tmp_path / "y.npy")
    assert written.dtype == expected.dtype and np.array_equal(written, expected)
    bits = {"binary": 1, "int1": 1, "int2": 2, "int4": 4, "pq2": 2, "pq1": 1}.get(precision)
    assert written.shape == ((5, -(-12 * bits // 8)) if bits else (5, 12))

    compress(folder, tmp_path / "x.npy", tmp_path / "y.parquet")
    out = pq.read_table(tmp_path / "y.parquet")
    assert out.schema.field("embedding").type.value_type == pa.from_numpy_dtype(expected.dtype)
    assert np.array_equal(np.stack(out.column("embedding").to_numpy(zero_copy_only=False)), expected)


def test_a_bad_column_is_named_by_the_flag_that_set_it(model, tmp_path, capsys):
    folder, _ = model
    table = pa.table({"emb": pa.FixedSizeListArray.from_arrays(good_rows(4).reshape(-1), D)})
    pq.write_table(table, tmp_path / "x.parquet")
    with pytest.raises(SystemExit) as exit_info:
        compress(folder, tmp_path / "x.parquet", tmp_path / "y.npy", "--column", "vec")
    assert exit_info.value.code == 2
    assert "data.column='vec' (--column) is not a column of" in capsys.readouterr().err


def test_compressing_a_file_of_vectors_imports_neither_lightning_nor_transformers(model, tmp_path):
    """They cost seconds to import and only training or embedding needs them."""
    folder, _ = model
    np.save(tmp_path / "x.npy", good_rows())
    args = ["compress", "--model", str(folder), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")]
    report = f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    code = f"import sys; from simreduce.cli import main; main({args!r}); {report}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]" and (tmp_path / "y.npy").is_file()


def test_one_vector_compresses_and_the_output_is_created_as_the_umask_says(model, tmp_path):
    folder, net = model
    x, y = tmp_path / "one.npy", tmp_path / "one-out.npy"
    np.save(x, good_rows(1))  # no pairs: that matters for training, not for compressing
    old = os.umask(0o027)
    try:
        compress(folder, x, y)
    finally:
        os.umask(old)
    assert np.load(y).shape == (1, 2)
    assert stat.S_IMODE(y.stat().st_mode) == 0o640  # as any file the user writes, not mkstemp's 0600


def test_a_full_disk_is_one_line_naming_the_output_and_leaves_no_file(model, tmp_path, capsys, monkeypatch):
    """The output written where every write finds no space (/dev/full: the kernel's ENOSPC, as a full disk gives)."""
    folder, _ = model
    x, y = tmp_path / "x.npy", tmp_path / "out" / "y.npy"
    np.save(x, good_rows(5000))
    monkeypatch.setattr(compress_module, "open", lambda path, mode: open("/dev/full", mode), raising=False)
    with pytest.raises(SystemExit) as exit_info:
        compress(folder, x, y)
    assert exit_info.value.code == 1
    assert (
        capsys.readouterr()
        .err.rstrip()
        .endswith(
            f"simreduce: error: no space left on the disk holding --output {str(y)!r} (ENOSPC): free space there, then "
            "run the same command again."
        )
    )
    assert list(y.parent.iterdir()) == []  # neither the output nor its temporary file


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_a_device_or_a_pipe_is_not_a_regular_file(model, tmp_path, capsys, special):
    folder, _ = model
    path = Path(special)
    if special == "fifo":
        path = tmp_path / "pipe.npy"
        os.mkfifo(path)
    assert "is not a regular file (a device, a pipe or a socket)" in refused(capsys, folder, path, tmp_path / "y.npy")
