"""Bad input costs the user one clear line and a non-zero exit, never a traceback or a half-written file."""

import pytest
from helpers.project import PROJECT_ROOT, compose_config, run_python, store_runs, tiny_overrides

from simreduce.experiment.callbacks import PrepareTrackingStore
from simreduce.experiment.job import run_job
from simreduce.experiment.settings import check_settings
from simreduce.runtime.errors import exit_on_user_error
from simreduce.vectors.words import clean_words


def run_expecting_user_error(overrides: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info, exit_on_user_error():
        run_job(compose_config(overrides))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err  # progress bars may come first: the error is the last line
    assert "Traceback" not in err
    last_line = err.rstrip("\n").split("\n")[-1]
    assert last_line.startswith("simreduce: error: ")
    return last_line


@pytest.fixture
def tiny(tiny_llama, words_file) -> list[str]:
    return [*tiny_overrides(tiny_llama, words_file), "encoder.dim=8"]


def test_missing_words_file(project, tiny, capsys):
    err = run_expecting_user_error([*tiny, f"data.words_file={project / 'missing.txt'}"], capsys)
    assert "missing.txt" in err and "does not exist" in err


@pytest.mark.parametrize("content", ["", "\n\n   \n", "same\nsame\n"], ids=["empty", "blank-lines", "one-word"])
def test_words_file_without_two_distinct_words(project, tiny, capsys, content):
    path = project / "words.txt"
    path.write_text(content)
    err = run_expecting_user_error([*tiny, f"data.words_file={path}"], capsys)
    assert str(path) in err and "at least 2 are needed" in err


def test_duplicates_and_blank_lines_are_dropped_with_a_warning(caplog):
    assert clean_words(["a", "", "b", "a", " b "], source="w.txt") == ["a", "b"]
    assert "dropped 1 empty line" in caplog.text and "dropped 2 repeated word" in caplog.text


def test_word_that_tokenizes_to_nothing_is_named(project, tiny, capsys):
    path = project / "words.txt"
    path.write_text("the\nof\n\u2603\n")
    err = run_expecting_user_error([*tiny, f"data.words_file={path}"], capsys)
    assert "\u2603" in err and "tokenize to nothing but special or unknown tokens" in err
    assert not list((project / ".cache").rglob("*.safetensors"))


def test_folder_that_holds_no_model(project, tiny, capsys):
    empty = project / "not-a-model"
    empty.mkdir()
    err = run_expecting_user_error([*tiny, f"embedder.name_or_path={empty}"], capsys)
    assert "cannot load model" in err and str(empty) in err


@pytest.mark.parametrize(
    ("dim", "expected"),
    [
        ("0", "must be a positive integer"),
        ("-3", "must be a positive integer"),
        ("abc", "must be a positive integer"),
        ("2.5", "must be a positive integer"),
        ("32", "not below the input width 32"),
    ],
)
def test_bad_encoder_dim(project, tiny, capsys, dim, expected):
    err = run_expecting_user_error([*tiny, f"encoder.dim={dim}"], capsys)
    assert f"encoder.dim={dim}" in err.replace("'", "") and expected in err


@pytest.mark.parametrize("n_words", ["1", "0", "-5"])
def test_too_few_words(project, tiny, capsys, n_words):
    overrides = [o for o in tiny if not o.startswith("data.words_file")]
    err = run_expecting_user_error([*overrides, f"data.n_words={n_words}"], capsys)
    assert f"data.n_words={n_words}" in err


@pytest.mark.parametrize("fraction", ["1.0", "-0.1", "1.5"])
def test_val_fraction_outside_unit_interval(project, tiny, capsys, fraction):
    err = run_expecting_user_error([*tiny, f"data.val_fraction={fraction}"], capsys)
    assert f"data.val_fraction={fraction}" in err and "outside [0, 1)" in err


def test_unwritable_mlflow_store(project, tiny, capsys):
    blocker = project / "a-file"
    blocker.write_text("not a folder")
    err = run_expecting_user_error([*tiny, f"tracking.uri=sqlite:///{blocker}/mlruns/mlflow.db"], capsys)
    assert "is not writable" in err and str(blocker) in err


# train.py run by a wrapper that says, whatever the exit, whether torch and MLflow were imported.
REPORTS_IMPORTS = f"""
import runpy, sys
sys.argv = ["train.py", *sys.argv[1:]]
try:
    runpy.run_path({str(PROJECT_ROOT / "train.py")!r}, run_name="__main__")
finally:
    print("torch imported:", "torch" in sys.modules)
    print("mlflow imported:", "mlflow" in sys.modules)
"""


@pytest.mark.slow
def test_unknown_config_option_exits_non_zero_before_torch_is_imported(tmp_path):
    proc = run_python(["-c", REPORTS_IMPORTS, "encoder=nope"], tmp_path)
    assert proc.returncode != 0
    assert "Could not find 'encoder/nope'" in proc.stderr
    assert "torch imported: False" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("mode", [["-m"], []], ids=["sweep", "single"])
def test_a_missing_word_list_fails_before_mlflow_is_imported(tmp_path, tiny_llama, mode):
    overrides = [o for o in tiny_overrides(tiny_llama, tmp_path) if not o.startswith("data.words_file")]
    args = ["-c", REPORTS_IMPORTS, *mode, *overrides, f"data.words_file={tmp_path / 'missing.txt'}"]
    proc = run_python(args, tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("simreduce: error: words file")
    assert "Traceback" not in proc.stderr
    assert "mlflow imported: False" in proc.stdout
    assert not (tmp_path / "mlruns").exists()


def expect_one_line_before_any_run(project, overrides: list[str], capsys) -> str:
    """What `train.py` does with these overrides (its store callback's checks, then the job): exit 2 with one
    line, and no MLflow run left behind."""
    cfg = compose_config(overrides)
    with pytest.raises(SystemExit) as exit_info, exit_on_user_error():
        check_settings(cfg)
        run_job(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last_line = err.rstrip("\n").split("\n")[-1]
    assert last_line.startswith("simreduce: error: ") and len(last_line) < 400
    assert store_runs(project).empty
    return last_line


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["seed=-1"], "seed=-1 is outside [0, 2**32)"),
        (["select.tolerance=-0.5"], "select.tolerance=-0.5 must be"),
        (["eval.max_exact_n=0", "eval.n_sampled_pairs=0"], "eval.max_exact_n=0 must be at least 1"),
        (["eval.recall_k=[0]"], "eval.recall_k=[0] must list positive integers"),
        (["eval.max_queries=0"], "eval.max_queries=0 must be at least 1"),
        (["eval.precisions=[float32,int3]"], "eval.precisions names 'int3', which simreduce does not store: pick"),
        (["select.target=high"], "select.target='high' must be a number"),
        (["select.register=sometimes"], "select.register='sometimes' is not one of"),
        (["select.metric=heldout/recal_at_10"], "select.metric='heldout/recal_at_10' is not a metric simreduce logs"),
        (["trainer.accelerator=gpu"], "the trainer settings do not build a Trainer"),
        (["encoder.hidden=[0]"], "encoder.hidden=[0] must hold positive integer widths"),
        (["encoder.hidden=[16,-4]"], "encoder.hidden=[16, -4] must hold positive integer widths"),
        (["encoder.lr=-1"], "encoder.lr=-1 must be a positive number"),
        (["encoder=autoencoder", "encoder.lr=0"], "encoder.lr=0 must be a positive number"),
        (["embedder.layer=99"], "embedder.layer=99 is not a hidden state of tiny (3 of them)"),
        (["data.words_file="], "data.words_file is empty"),
        (
            ["encoder=nested", f"encoder.dims=[{','.join(map(str, range(1, 65)))}]"],
            "encoder.dims lists 64 sizes, more than 16: each is a loss term every training step and a candidate run",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else " ".join(v),
)
def test_a_bad_setting_is_one_line_where_it_is_first_seen(project, tiny, capsys, overrides, expected):
    assert expected in expect_one_line_before_any_run(project, [*tiny, *overrides], capsys)


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (
            lambda p: p.write_bytes("caf\u00e9\nna\u00efve\n".encode("latin-1")),
            "is not UTF-8 text (byte 0xe9 at offset 3)",
        ),
        (lambda p: p.write_bytes(b"\x00\x01\x02binary\x00"), "holds NUL bytes"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
    ids=["latin-1", "binary", "directory"],
)
def test_a_words_file_that_is_no_text_file(project, tiny, capsys, write, expected):
    path = project / "words-input"
    write(path)
    assert expected in expect_one_line_before_any_run(project, [*tiny, f"data.words_file={path}"], capsys)


@pytest.mark.parametrize(
    ("bad_words", "expected"),
    [(["\u2603" * 50_000], "... (50000 chars)"), (["\u2603" * i for i in range(1, 21)], "and 15 more")],
    ids=["a-50-KB-line", "twenty-words"],
)
def test_an_error_naming_words_stays_short(project, tiny, capsys, bad_words, expected):
    path = project / "words.txt"
    path.write_text("\n".join(["the", "of", *bad_words]) + "\n")
    assert expected in expect_one_line_before_any_run(project, [*tiny, f"data.words_file={path}"], capsys)


def test_a_cache_folder_that_cannot_be_written(project, tiny, capsys):
    blocker = project / "a-file"
    blocker.write_text("not a folder")
    err = expect_one_line_before_any_run(project, [*tiny, f"data.cache_dir={blocker}/vectors"], capsys)
    assert "the vector cache folder" in err and "data.cache_dir=" in err


@pytest.mark.parametrize(
    "content",
    [b"SQLite format 3\x00" + b"\x00" * 100, b"not a database at all" * 100],
    ids=["truncated", "garbage"],
)
def test_a_store_that_is_no_database_fails_once_before_any_job(project, tiny, capsys, content):
    (project / "mlruns" / "mlflow.db").write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        PrepareTrackingStore().on_multirun_start(compose_config(tiny))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err
    assert err.startswith("simreduce: error: the MLflow store") and "cannot be used" in err
