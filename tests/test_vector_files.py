"""`data=vectors`: every supported file format read as given and mapped (never copied whole), and every bad
file refused with one line that names the bad value."""

import json

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from helpers.project import compose_config, job_runs, run_python, store_runs
from safetensors.numpy import save_file

from simreduce.cli import main
from simreduce.experiment.callbacks import PrepareTrackingStore
from simreduce.experiment.job import run_job
from simreduce.runtime.errors import SimreduceError, exit_on_user_error
from simreduce.vectors import sources, vector_files
from simreduce.vectors.data import VectorDataModule
from simreduce.vectors.parquet_vectors import ParquetVectors
from simreduce.vectors.sources import VectorFileSource
from simreduce.vectors.vector_files import VectorFileSpec, iter_vector_chunks, open_vector_file

N, D = 40, 12


def vectors(n: int = N, d: int = D, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, d)).astype(dtype)


def write_fvecs(path, x: np.ndarray) -> None:
    widths = np.full((len(x), 1), x.shape[1], dtype="<i4")
    np.hstack([widths, x.astype("<f4").view("<i4")]).tofile(path)


def write_parquet(path, x: np.ndarray, ids: list[str] | None = None, fixed: bool = False) -> None:
    column = pa.FixedSizeListArray.from_arrays(x.reshape(-1), x.shape[1]) if fixed else pa.array(list(x))
    table = {"embedding": column, "title": [f"t{i}" for i in range(len(x))]}
    if ids is not None:
        table["doc_id"] = ids
    pq.write_table(pa.table(table), path, row_group_size=16)


WRITERS = {
    "npy": (lambda p, x: np.save(p, x), {}),
    "npz": (lambda p, x: np.savez(p, other=x[:, :2], emb=x), {"key": "emb"}),
    "safetensors": (lambda p, x: save_file({"emb": x, "other": x[:, :3].copy()}, str(p)), {"key": "emb"}),
    "parquet": (lambda p, x: write_parquet(p, x, fixed=True), {"column": "embedding"}),
    "parquet-lists": (lambda p, x: write_parquet(p, x), {"column": "embedding"}),
    "fvecs": (write_fvecs, {}),
}


def source_for(tmp_path, fmt: str, x: np.ndarray | None = None, **options) -> VectorFileSource:
    write, defaults = WRITERS[fmt]
    path = tmp_path / f"emb.{fmt.split('-')[0]}"
    write(path, vectors() if x is None else x)
    return VectorFileSource(str(path), tmp_path / "cache", **{**defaults, **options})


@pytest.mark.parametrize("fmt", list(WRITERS))
def test_every_format_gives_the_vectors_as_written(tmp_path, fmt):
    loaded = source_for(tmp_path, fmt).load()
    np.testing.assert_array_equal(loaded.vectors.numpy(), vectors())
    assert loaded.ids == [str(i) for i in range(N)]


@pytest.mark.parametrize("fmt", ["npy", "safetensors", "fvecs", "parquet"])
def test_the_vectors_are_a_mapping_of_a_file_and_the_tensor_a_view_of_it(tmp_path, monkeypatch, fmt):
    """No [N, D] copy is taken: the array is a memory map, and torch.from_numpy shares its pages."""
    source = source_for(tmp_path, fmt)
    opened = []

    def spy(*args):
        opened.append(open_vector_file(*args).vectors)
        return vector_files.VectorTable(opened[-1], None)

    monkeypatch.setattr(sources, "open_vector_file", spy)
    tensor = source.load().vectors
    (mapped,) = opened
    assert isinstance(mapped, np.memmap)
    assert tensor.data_ptr() == mapped.ctypes.data


def test_a_parquet_column_is_converted_once_and_mapped(tmp_path, monkeypatch):
    x = vectors()
    source = source_for(tmp_path, "parquet", x, id_column="doc_id")
    write_parquet(source.spec.path, x, ids=[f"doc-{i}" for i in range(N)], fixed=True)
    first = VectorFileSource(str(source.spec.path), tmp_path / "cache", column="embedding", id_column="doc_id").load()
    assert first.ids == [f"doc-{i}" for i in range(N)]
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1

    def no_reread(*args):
        raise AssertionError("the parquet file was read again")

    monkeypatch.setattr(ParquetVectors, "chunks", no_reread)
    again = VectorFileSource(str(source.spec.path), tmp_path / "cache", column="embedding").load()
    np.testing.assert_array_equal(again.vectors.numpy(), x)


def test_parquet_streams_in_chunks_with_ids(tmp_path, monkeypatch):
    monkeypatch.setattr(vector_files, "CHUNK_ROWS", 16)
    path = tmp_path / "emb.parquet"
    write_parquet(path, vectors(), ids=[f"doc-{i}" for i in range(N)])
    chunks = list(iter_vector_chunks(VectorFileSpec(path, column="embedding", id_column="doc_id")))
    assert [len(v) for v, _ in chunks] == [16, 16, 8]
    np.testing.assert_array_equal(np.concatenate([v for v, _ in chunks]), vectors())
    assert sum((ids for _, ids in chunks), []) == [f"doc-{i}" for i in range(N)]


def refused(source: VectorFileSource) -> str:
    with pytest.raises(SimreduceError) as error:
        source.ids()
        source.load()
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_file_and_unknown_extension(tmp_path):
    assert "does not exist" in refused(VectorFileSource(str(tmp_path / "nope.npy"), tmp_path))
    (tmp_path / "emb.csv").write_text("1,2\n3,4\n")
    message = refused(VectorFileSource(str(tmp_path / "emb.csv"), tmp_path))
    assert "'.csv'" in message and ".npy, .npz, .safetensors, .parquet, .fvecs" in message


def test_no_path_given(tmp_path):
    with pytest.raises(SimreduceError, match="data.path=<a file of vectors>"):
        VectorFileSource(None, tmp_path)


def test_parquet_without_the_named_column_lists_its_columns(tmp_path):
    message = refused(source_for(tmp_path, "parquet", column="vector"))
    assert "'vector'" in message and "['embedding', 'title']" in message
    assert "holds string" in refused(source_for(tmp_path, "parquet", column="title"))


def test_ragged_parquet_lists_name_the_first_bad_row(tmp_path):
    path = tmp_path / "ragged.parquet"
    rows = [list(v) for v in vectors(30)]
    rows[21] = rows[21][:5]
    pq.write_table(pa.table({"embedding": pa.array(rows)}), path, row_group_size=16)
    message = refused(VectorFileSource(str(path), tmp_path, column="embedding"))
    assert "row 21" in message and "5 values" in message


@pytest.mark.parametrize("shape", [(N,), (4, N, D)], ids=["1-D", "3-D"])
def test_arrays_that_are_not_rows_of_vectors(tmp_path, shape):
    path = tmp_path / "emb.npy"
    np.save(path, np.ones(shape, dtype=np.float32))
    assert f"{len(shape)}-D array" in refused(VectorFileSource(str(path), tmp_path))


def test_object_arrays_are_refused_without_unpickling(tmp_path, monkeypatch):
    path = tmp_path / "emb.npy"
    np.save(path, np.array([[object(), 1]], dtype=object), allow_pickle=True)
    monkeypatch.setattr("pickle.loads", lambda *a, **k: pytest.fail("a user file was unpickled"))
    assert "not a numeric .npy array" in refused(VectorFileSource(str(path), tmp_path))


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.float16])
def test_other_real_dtypes_are_cast_with_one_warning(tmp_path, caplog, dtype):
    x = vectors(dtype=dtype)
    loaded = source_for(tmp_path, "npy", x).load()
    assert loaded.vectors.dtype == torch.float32
    np.testing.assert_allclose(loaded.vectors.numpy(), x.astype(np.float32))
    assert [r.levelname for r in caplog.records if "cast to float32" in r.getMessage()] == ["WARNING"]


def bad_vectors() -> np.ndarray:
    x = vectors()
    x[[3, 5, 8, 13, 21, 34]] = 0
    x[7, 2] = np.nan
    x[9, 0] = np.inf
    return x


def test_nan_inf_and_zero_rows_are_named_and_counted(tmp_path):
    message = refused(source_for(tmp_path, "npy", bad_vectors()))
    assert "8 vector(s)" in message and "first ['3', '5', '7', '8', '9']:" in message
    assert "data.drop_bad_rows=true" in message


def test_bad_rows_are_named_by_their_ids(tmp_path):
    path = tmp_path / "emb.parquet"
    write_parquet(path, bad_vectors(), ids=[f"doc-{i}" for i in range(N)])
    message = refused(VectorFileSource(str(path), tmp_path, column="embedding", id_column="doc_id"))
    assert "'doc-3', 'doc-5', 'doc-7'" in message


def test_drop_bad_rows_leaves_them_out_with_a_warning(tmp_path, caplog):
    x = bad_vectors()
    loaded = source_for(tmp_path, "npy", x, drop_bad_rows=True).load()
    kept = [i for i in range(N) if i not in {3, 5, 7, 8, 9, 13, 21, 34}]
    assert loaded.ids == [str(i) for i in kept]
    np.testing.assert_array_equal(loaded.vectors.numpy(), x[kept])
    assert any("left out" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_fewer_than_two_rows(tmp_path):
    assert "1 vector(s)" in refused(source_for(tmp_path, "npy", vectors(1)))


def test_duplicated_ids_are_named(tmp_path):
    path = tmp_path / "emb.parquet"
    write_parquet(path, vectors(), ids=[f"doc-{i % 30}" for i in range(N)])
    message = refused(VectorFileSource(str(path), tmp_path, column="embedding", id_column="doc_id"))
    assert "repeats the ids ['doc-0', 'doc-1'" in message


@pytest.mark.parametrize("fmt", ["npz", "safetensors"])
def test_a_file_of_several_arrays_needs_a_key(tmp_path, fmt):
    message = refused(source_for(tmp_path, fmt, key=None))
    assert "'emb'" in message and "'other'" in message and "pass one" in message
    assert "data.key='nope'" in refused(source_for(tmp_path, fmt, key="nope"))


def test_an_fvecs_file_with_a_ragged_row(tmp_path):
    path = tmp_path / "emb.fvecs"
    write_fvecs(path, vectors())
    raw = np.fromfile(path, dtype="<i4")
    raw[3 * (D + 1)] = D - 1
    raw.tofile(path)
    assert "row 3 is 11 wide" in refused(VectorFileSource(str(path), tmp_path))


def test_a_bad_file_fails_the_job_with_one_line_and_exit_2(project, capsys):
    path = project / "emb.npy"
    np.save(path, bad_vectors())
    with pytest.raises(SystemExit) as exit_info, exit_on_user_error():
        run_job(compose_config(["data=vectors", f"data.path={path}", "encoder.dim=4"]))
    assert exit_info.value.code == 2
    assert "8 vector(s) that are NaN/inf or all zero" in capsys.readouterr().err
    assert store_runs(project, "simreduce-emb").empty  # no run was opened


def copies(n: int, *directions: int) -> np.ndarray:
    """`n` rows, each a positive multiple of one of the rows `directions` of `vectors()`: no other direction."""
    x = vectors()[list(directions)][np.arange(n) % len(directions)]
    return x * np.random.default_rng(1).uniform(0.5, 2, size=(n, 1)).astype(np.float32)


@pytest.mark.parametrize(("x", "found"), [(copies(300, 0), 1), (copies(300, 0, 1), 2), (-copies(300, 4), 1)])
def test_rows_of_fewer_than_three_directions_are_refused_with_their_count(tmp_path, x, found):
    path = tmp_path / "same.npy"
    np.save(path, x)
    data = VectorDataModule(VectorFileSource, "same", path=str(path), cache_dir=tmp_path, val_fraction=0.2)
    with pytest.raises(SimreduceError) as error:
        data.setup()
    message = str(error.value)
    assert "\n" not in message
    assert f"the 240 training rows of vectors 'same' hold only {found} distinct row(s)" in message
    assert "at least 3 different directions" in message


def test_three_directions_are_enough_and_a_sample_is_counted(tmp_path):
    path = tmp_path / "three.npy"
    np.save(path, copies(300, 0, 1, 2))
    VectorDataModule(VectorFileSource, "three", path=str(path), cache_dir=tmp_path).setup()
    np.save(path, copies(300, 0))
    data = VectorDataModule(VectorFileSource, "one", path=str(path), cache_dir=tmp_path, max_fit_rows=50)
    with pytest.raises(SimreduceError, match=r"the 50 training rows \(a sample of 240\) of vectors 'one' hold only 1"):
        data.setup()


def test_identical_rows_fail_the_job_before_a_run_opens(project, capsys):
    path = project / "same.npy"
    np.save(path, copies(300, 0))
    with pytest.raises(SystemExit) as exit_info, exit_on_user_error():
        run_job(compose_config(["data=vectors", f"data.path={path}", "encoder.dim=4"]))
    assert exit_info.value.code == 2 and "hold only 1 distinct row(s)" in capsys.readouterr().err
    assert store_runs(project, "simreduce-same").empty


@pytest.mark.slow
def test_a_sweep_on_identical_rows_exits_2_with_one_line_and_no_run(project):
    path = project / "same.npy"
    np.save(path, copies(300, 0))
    done = run_python(["train.py", "-m", "data=vectors", f"data.path={path}", "encoder.dim=4,8"], project)
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if "distinct row" in line]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert store_runs(project, "simreduce-same").empty


@pytest.mark.slow
def test_a_sweep_on_three_rows_copied_a_hundred_times_names_no_winner(project):
    """Three directions pass the data module's count, but every query's 10th neighbour ties with its 11th (both
    copies of it): recall@10 is NaN, not 1 by the order ties fall in, and no candidate wins."""
    path = project / "three.npy"
    np.save(path, copies(300, 0, 1, 2))
    sweep = ["train.py", "-m", "data=vectors", f"data.path={path}", "encoder.dim=4,8", "eval.precisions=[float32]"]
    done = run_python(sweep, project)
    assert done.returncode == 1, done.stderr[-3000:]
    console = done.stdout + done.stderr
    assert "Traceback" not in console and "Warning" not in console
    assert "every run of the sweep (2) has heldout/recall_at_10 NaN, so no candidate can win" in console
    runs = job_runs(store_runs(project, "simreduce-three"))
    assert list(runs.status) == ["FINISHED", "FINISHED"] and runs["metrics.heldout/recall_at_10"].isna().all()
    assert mlflow.MlflowClient().search_registered_models() == []


@pytest.mark.slow
def test_a_sweep_on_a_file_of_vectors(project):
    path = project / "my-docs.parquet"
    x = vectors(200, 24) * np.linspace(3, 0.2, 24, dtype=np.float32)
    write_parquet(path, x, ids=[f"doc-{i}" for i in range(200)])
    overrides = ["data.column=embedding", "data.id_column=doc_id", "encoder.steps=30"]
    done = run_python(
        ["train.py", "-m", "data=vectors", f"data.path={path}", "encoder.dim=4,8", *overrides], project, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = job_runs(store_runs(project, "simreduce-my-docs"))
    assert sorted(runs["tags.mlflow.runName"]) == ["cosine-d0004", "cosine-d0008"]
    assert set(runs["tags.source"]) == {"vectors"} and set(runs["tags.data_name"]) == {"my-docs"}
    assert set(runs["params.n_vectors"]) == {"200"} and set(runs["params.input_dim"]) == {"24"}
    assert (runs["metrics.fit/rmse"] > 0).all()
    assert "simreduce-vectors-my-docs" in done.stdout, done.stdout

    compress = ["compress", "--model", "models:/simreduce-vectors-my-docs/1"]
    files = [
        "--input",
        str(path),
        "--column",
        "embedding",
        "--id-column",
        "doc_id",
        "--output",
        str(project / "o.parquet"),
    ]
    main([*compress, *files])
    out = pq.read_table(project / "o.parquet")
    assert out.column("id").to_pylist() == [f"doc-{i}" for i in range(200)]
    assert out.schema.field("embedding").type.list_size in (4, 8)


@pytest.mark.slow
def test_runs_and_models_of_different_data_never_mix(project):
    """A sweep resumed after its file was rewritten (same shape, other vectors) trains again and ranks only the
    new runs; @winner never moves to a model of other data (the rewritten file's, or b/same.npy's: the same
    model name) unless select.register=always asks for it."""
    (project / "a").mkdir()
    (project / "b").mkdir()
    structured = np.linspace(3, 0.2, 24, dtype=np.float32)

    def sweep(path, *extra: str) -> str:
        args = ["train.py", "-m", "data=vectors", f"data.path={path}", "encoder=pca", "encoder.dim=4"]
        args += ["eval.precisions=[float32,int8]"]  # two runs a job, whatever the default forms
        done = run_python([*args, "tracking.sweep_id=s1", "select.target=0", *extra], project)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout + done.stderr

    np.save(project / "a" / "same.npy", vectors(200, 24) * structured)
    assert "simreduce-vectors-same version 1; models:/simreduce-vectors-same@winner moved to it" in sweep(
        project / "a" / "same.npy"
    )
    np.save(project / "a" / "same.npy", np.random.default_rng(7).normal(size=(200, 24)).astype(np.float32))
    out = sweep(project / "a" / "same.npy")
    assert "already finished this config" not in out and "finished this config on other data" in out
    assert "2 run(s) of this sweep on earlier data" in out  # the job run and its int8 child
    assert "version 2; @winner stays on version 1 (version 1 reduces other data" in out
    assert "select.register=always moves @winner across data" in out
    assert len(job_runs(store_runs(project, "simreduce-same"))) == 2  # the old run is kept, not reused

    np.save(project / "b" / "same.npy", vectors(200, 24) * structured)
    out = sweep(project / "b" / "same.npy", "tracking.sweep_id=s2", "select.register=always")
    assert "version 3; models:/simreduce-vectors-same@winner moved to it (select.register=always)" in out


def safetensors_bytes(header: dict | bytes, data: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data


EMB = {"dtype": "F32", "shape": [N, D], "data_offsets": [0, N * D * 4]}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("no-offsets.safetensors", safetensors_bytes({"emb": {"dtype": "F32", "shape": [N, D]}}), "lacks its dtype"),
        ("short.safetensors", safetensors_bytes({"emb": EMB}, b"\0" * 64), "needs 1,920 bytes"),
        ("wrong-shape.safetensors", safetensors_bytes({"emb": {**EMB, "shape": [10 * N, D]}}, b"\0" * 1920), "needs"),
        ("absurd.safetensors", (2**62).to_bytes(8, "little") + b"{}", "its header claims"),
        ("not-json.safetensors", safetensors_bytes(b"\xff\xfe{"), "its header is not JSON"),
        ("tiny.safetensors", b"\1\2", "its header claims"),
        ("empty.fvecs", b"", "not rows of [width, values] (empty, or cut short)"),
        ("cut.fvecs", (4).to_bytes(4, "little") + b"\0" * 10, "not rows of [width, values]"),
        ("cut-row.fvecs", (4).to_bytes(4, "little") + b"\0" * 24, "cut short?"),
        ("truncated.npy", None, "is not a readable .npy file"),
    ],
)
def test_a_malformed_file_is_one_line_before_anything_is_mapped(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:  # an .npy whose header promises more rows than the file holds
        np.save(path, vectors())
        path.write_bytes(path.read_bytes()[:-100])
    else:
        path.write_bytes(content)
    assert message in refused(VectorFileSource(str(path), tmp_path))


def test_a_callback_that_fails_stops_the_sweep_instead_of_warning(monkeypatch, caplog):
    def broken(config):
        raise KeyError("data_offsets")

    monkeypatch.setattr("simreduce.experiment.settings.check_settings", broken)
    with pytest.raises(SystemExit) as exit_info:
        PrepareTrackingStore().on_multirun_start(compose_config([]))
    assert exit_info.value.code == 1 and "the settings could not be checked" in caplog.text


def test_a_null_parquet_id_is_refused_not_named_none(tmp_path):
    path = tmp_path / "emb.parquet"
    write_parquet(path, vectors(), ids=[None if i == 7 else f"doc-{i}" for i in range(N)])
    message = refused(VectorFileSource(str(path), tmp_path, column="embedding", id_column="doc_id"))
    assert "is empty (null) at row(s) ['7']" in message
