"""compress's codes served by a faiss index (`--faiss-index`): raw queries in, the stored rows the yardstick ranks
first out, with faiss alone; the index's own inner-product ranking measured against the yardstick's."""

import faiss
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.models import write_model_folder
from helpers.project import compose_config, store_runs, store_uri
from torch import nn

from simreduce.cli import main
from simreduce.evaluate.neighbours import kept_share, true_neighbours
from simreduce.evaluate.scoring import EvalSettings, OriginalSide
from simreduce.experiment.config import load_data
from simreduce.experiment.job import run_job
from simreduce.reducers.base import build_mlp
from simreduce.reducers.faiss_index import add_codes, faiss_index, search_by_cosine
from simreduce.reducers.precision import PRECISIONS, StoredPrecision
from simreduce.runtime.errors import SimreduceError

D, DIM, N = 24, 13, 300  # 13 values: every packed form pads its last byte


def clustered(n: int = N, seed: int = 0) -> torch.Tensor:
    """[n, D] rows around 30 directions: neighbourhoods worth finding."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(30, D, generator=g)
    return centres[torch.randint(30, (n,), generator=g)] + 0.5 * torch.randn(n, D, generator=g)


def linear_map(seed: int = 1) -> nn.Sequential:
    """A linear map with a bias, as PCA's: the pre-transform must apply both."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, DIM))


def yardstick(net: nn.Module, stored: StoredPrecision, vectors: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """[n, N] what a candidate's metrics compare: the reduced query's cosine with each stored row decoded."""
    with torch.no_grad():
        decoded = torch.from_numpy(stored.decode(stored.encode(net(vectors).numpy()), DIM))
        return F.normalize(net(queries), dim=1) @ F.normalize(decoded, dim=1).T


@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_index_decodes_the_codes_to_the_vectors_the_yardstick_compares(precision):
    """Every stored form: faiss's chain turns a raw query into the coordinates of its quantizer, whose decoded
    codes give exactly the cosines the run was scored on; re-ranked by them, faiss returns the yardstick's order."""
    vectors, net = clustered(), linear_map()
    with torch.no_grad():
        stored = StoredPrecision.calibrated(precision, net(vectors), torch.arange(240))
    index = faiss_index(net, stored, DIM, "the model")
    add_codes(index, stored.encode(net(vectors).detach().numpy()), precision)
    assert index.ntotal == N
    queries = vectors[250:260]
    expected = yardstick(net, stored, vectors, queries)

    cosines, rows = search_by_cosine(index, queries.numpy(), k=N, k_factor=1)  # every row: the whole ranking
    atol = 1e-3 if precision == "float16" else 1e-5  # faiss rounds the normalised vector to float16, we the reduced
    np.testing.assert_allclose(cosines, expected.sort(dim=1, descending=True).values.numpy(), atol=atol)
    found = np.take_along_axis(expected.numpy(), rows, axis=1)
    np.testing.assert_allclose(found, cosines, atol=atol)  # each row returned is the row with that cosine


def test_the_index_ranks_float_and_sign_codes_as_the_yardstick_does():
    """Where every decoded vector has one norm (float forms, normalised in the chain; binary's ±1), faiss's own
    inner-product search is the yardstick's ranking, with no re-ranking."""
    vectors, net = clustered(), linear_map()
    queries = vectors[250:260]
    for precision in ("float32", "binary"):
        with torch.no_grad():
            stored = StoredPrecision.calibrated(precision, net(vectors))
        index = faiss_index(net, stored, DIM, "the model")
        add_codes(index, stored.encode(net(vectors).detach().numpy()), precision)
        _, rows = index.search(queries.numpy(), 10)
        expected = yardstick(net, stored, vectors, queries)
        found = np.take_along_axis(expected.numpy(), rows, axis=1)
        np.testing.assert_allclose(found, expected.topk(10, dim=1).values.numpy(), atol=1e-5)


def test_compress_writes_a_faiss_index_that_finds_the_neighbours_the_run_counted(project, tmp_path):
    """A logged int2 candidate: `compress --faiss-index` writes the codes and an index holding them; read back with
    faiss alone and searched with the raw held-out vectors (re-ranked by cosine), it finds exactly as many true
    neighbours as the run's heldout/recall_at_10 says; faiss's own inner-product ranking is measured beside it."""
    path = project / "docs.npy"
    np.save(path, clustered().numpy())
    overrides = ["data=vectors", f"data.path={path}", "encoder=pca", "encoder.dim=12", "eval.precisions=[int2]"]
    cfg = compose_config([*overrides, "tracking.log_model=true", "eval.max_queries=40"])
    run_job(cfg)
    run = store_runs(project, "simreduce-docs").set_index("tags.mlflow.runName").loc["pca-d0012-int2"]
    out, index_path = tmp_path / "codes.npy", tmp_path / "corpus.faiss"
    main(["compress", "--tracking-uri", store_uri(project), "--model", f"runs:/{run.run_id}/model",
          "--input", str(path), "--output", str(out), "--faiss-index", str(index_path)])  # fmt: skip

    index = faiss.read_index(str(index_path))
    assert index.ntotal == N and index.d == D  # raw 24-d queries in
    codes = np.load(out)
    inner = faiss.downcast_index(index.index)
    assert inner.sa_code_size() == codes.shape[1] == 3  # 12 values at 2 bits: the bytes compress wrote
    datamodule = load_data(cfg.data)
    vectors = datamodule.vectors
    held_out = OriginalSide(vectors, datamodule.train_idx, datamodule.val_idx, EvalSettings(max_queries=40))
    queries = held_out.queries["heldout"]
    truth = true_neighbours(vectors, queries, 11)  # 11: whether each query's true top 10 is determined

    def recall(rows: np.ndarray) -> float:
        """The yardstick's: each query's 10 nearest other rows (its own row, stored too, left out)."""
        found = [[r for r in row if r != q][:10] for q, row in zip(queries.tolist(), rows, strict=True)]
        return kept_share(truth, torch.tensor(found), 10)

    _, reranked = search_by_cosine(index, vectors[queries].numpy(), k=11, k_factor=N // 11)
    assert recall(reranked) == pytest.approx(run["metrics.heldout/recall_at_10"])
    _, own = index.search(vectors[queries].numpy(), 11)
    assert recall(own) > 0.5  # faiss's inner product over the decoded codes: close, not the same (see the module)


def test_a_map_faiss_cannot_apply_is_refused_in_one_line():
    with pytest.raises(SimreduceError, match=r"needs a linear map, but the model is an MLP \(3 layers\)"):
        faiss_index(build_mlp(D, [8], DIM), StoredPrecision("float32"), DIM, "the model")


def test_a_model_folder_is_served_and_a_bad_index_path_refused_before_anything_is_written(capsys, tmp_path):
    folder = tmp_path / "model"
    write_model_folder(folder, tmp_path / "loader-ran", simreduce_parts=True, in_dim=6)
    np.save(tmp_path / "in.npy", np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32))
    main(["compress", "--model", str(folder), "--input", str(tmp_path / "in.npy"), "--output",
          str(tmp_path / "out.npy"), "--faiss-index", str(tmp_path / "index.faiss")])  # fmt: skip
    assert faiss.read_index(str(tmp_path / "index.faiss")).ntotal == 5  # a linear map: served

    with pytest.raises(SystemExit) as ended:
        main(["compress", "--model", str(folder), "--input", str(tmp_path / "in.npy"), "--output",
              str(tmp_path / "out2.npy"), "--faiss-index", str(tmp_path / "index.txt")])  # fmt: skip
    assert ended.value.code == 2
    assert "is not a .faiss or .index file path" in capsys.readouterr().err
    assert not (tmp_path / "out2.npy").exists()
