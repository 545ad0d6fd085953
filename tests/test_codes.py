"""b-bit codes end to end, and how queries meet the stored vectors: a run's metrics come from what compress
writes, read back with the tables logged beside the model; `eval.queries` says which side is stored."""

from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.project import compose_config, store_runs, store_uri
from safetensors.numpy import load_file

from simreduce.cli import main
from simreduce.evaluate.neighbours import retrieval_recall
from simreduce.evaluate.pairs import side_similarities
from simreduce.evaluate.scoring import EvalSettings, OriginalSide, score_reduction
from simreduce.experiment.config import load_data
from simreduce.experiment.job import run_job
from simreduce.experiment.tracking.registry import WEIGHTS_FILE
from simreduce.reducers.base import build_mlp
from simreduce.reducers.precision import StoredPrecision
from simreduce.reducers.weights import STORED_PREFIX
from simreduce.runtime.errors import SimreduceError

D = 24


def clustered(n: int = 300, seed: int = 0) -> torch.Tensor:
    """[n, D] rows around 30 directions: neighbourhoods worth finding."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(30, D, generator=g)
    return centres[torch.randint(30, (n,), generator=g)] + 0.5 * torch.randn(n, D, generator=g)


def scores(queries: str, stored: torch.Tensor, reduced: torch.Tensor, vectors: torch.Tensor) -> dict[str, float]:
    settings = EvalSettings(max_queries=40, queries=queries)
    original = OriginalSide(vectors, torch.arange(240), torch.arange(240, 300), settings)
    return score_reduction(original, stored, bytes_per_vector=2, unstored=reduced).metrics


def test_float_queries_search_the_stored_vectors_with_the_query_as_reduced():
    vectors = clustered()
    reduced = vectors @ torch.randn(D, 12, generator=torch.Generator().manual_seed(1))
    stored = StoredPrecision.calibrated("int1", reduced, torch.arange(240)).comparable(reduced)
    on_float, on_stored = scores("float", stored, reduced, vectors), scores("stored", stored, reduced, vectors)

    queries = torch.arange(240, 300)[:40]  # the held-out rows, all 60 of them above max_queries: a sample
    settings = EvalSettings(max_queries=40)
    sampled = OriginalSide(vectors, torch.arange(240), torch.arange(240, 300), settings).queries["heldout"]
    assert len(sampled) == len(queries)
    expected_float = retrieval_recall(vectors, stored, sampled, [10], query_vectors=reduced)[10]
    expected_stored = retrieval_recall(vectors, stored, sampled, [10])[10]
    assert on_float["heldout/recall_at_10"] == pytest.approx(expected_float)
    assert on_stored["heldout/recall_at_10"] == pytest.approx(expected_stored)
    assert on_float["heldout/recall_at_10"] > on_stored["heldout/recall_at_10"]  # one side quantised, not two

    # A pair i < j under float queries: float row i against stored row j, the similarity a search reports.
    unit_float, unit_stored = F.normalize(reduced.double(), dim=1), F.normalize(stored.double(), dim=1)
    i, j = torch.triu_indices(240, 240, offset=1)
    by_hand = (unit_float[i] * unit_stored[j]).sum(dim=1).float().numpy()
    np.testing.assert_allclose(side_similarities(stored, torch.arange(240), queries=reduced)["fit"], by_hand, atol=1e-6)
    assert on_float["fit/rmse"] != on_stored["fit/rmse"]
    assert on_float["fit/knn_recall_at_10"] == on_stored["fit/knn_recall_at_10"]  # the stored set's own neighbours


@pytest.mark.parametrize("max_exact_n", [10_000, 50])  # every pair, and sampled pairs
def test_float_queries_change_nothing_for_vectors_stored_as_they_are(max_exact_n):
    vectors = clustered()
    reduced = vectors @ torch.randn(D, 12, generator=torch.Generator().manual_seed(1))
    assert scores("float", reduced, reduced, vectors) == scores("stored", reduced, reduced, vectors)


def test_an_unknown_query_mode_is_refused_in_one_line():
    with pytest.raises(SimreduceError, match="eval.queries='both' must be one of float, stored"):
        EvalSettings(queries="both")


def test_compress_writes_codes_that_decode_with_the_logged_tables_to_the_scored_similarities(project, tmp_path):
    """A run of int2 and pq1 candidates: compress's packed codes, read with the rotation and levels or centroids
    from the model's weights file (no simreduce), and the float queries the logged map gives, reproduce the run's fit
    pair similarities and its held-out recall@10."""
    path = project / "docs.npy"
    np.save(path, clustered().numpy())
    overrides = ["data=vectors", f"data.path={path}", "encoder=pca", "encoder.dim=12", "eval.precisions=[int2,pq1]"]
    cfg = compose_config([*overrides, "tracking.log_model=true", "eval.max_queries=40"])
    run_job(cfg)
    runs = store_runs(project, "simreduce-docs").set_index("tags.mlflow.runName")
    assert set(runs.index) == {"pca-d0012", "pca-d0012-int2", "pca-d0012-pq1"}
    assert (runs["tags.queries"] == "float").all()
    datamodule = load_data(cfg.data)
    vectors = datamodule.vectors
    for name, bits in (("int2", 2), ("pq1", 1)):
        run = runs.loc[f"pca-d0012-{name}"]
        width = -(-12 * bits // 8)  # pq1: 12 values a byte per 8, the second byte's 4 padded
        assert run["metrics.bytes_per_vector"] == width
        out = tmp_path / f"{name}.npy"
        main(["compress", "--tracking-uri", store_uri(project), "--model", f"runs:/{run.run_id}/model",
              "--input", str(path), "--output", str(out)])  # fmt: skip
        codes = np.load(out)
        assert codes.dtype == np.uint8 and codes.shape == (300, width)

        folder = mlflow.artifacts.download_artifacts(f"runs:/{run.run_id}/model", dst_path=str(tmp_path / name))
        (weights,) = Path(folder).rglob(WEIGHTS_FILE)  # a code model's weights artifact
        tensors = load_file(weights)
        rotation = tensors[f"{STORED_PREFIX}rotation"]
        if name == "pq1":  # each byte: the number of one of its 8 values' 256 centroids
            codebooks = tensors[f"{STORED_PREFIX}codebooks"]
            parts = np.stack([codebooks[m, codes[:, m]] for m in range(width)], axis=1).reshape(300, -1)
        else:  # 4 codes a byte, the first in the highest bits, each a level of its dimension
            per_value = np.unpackbits(codes, axis=1).reshape(300, -1, bits) @ (2 ** np.arange(bits - 1, -1, -1))
            parts = tensors[f"{STORED_PREFIX}levels"][np.arange(12), per_value[:, :12]]
        decoded = torch.from_numpy(parts[:, :12] @ rotation.T)
        net = build_mlp(D, [], 12, out_bias=True)
        net.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items() if not k.startswith(STORED_PREFIX)})
        with torch.no_grad():
            queries = net(vectors)

        logged = mlflow.artifacts.download_artifacts(f"runs:/{run.run_id}/diffs/fit.npy", dst_path=str(tmp_path))
        original = mlflow.artifacts.download_artifacts(
            f"runs:/{run.run_id}/similarities/fit_original.npy", dst_path=str(tmp_path)
        )
        scored = np.load(original) - np.load(logged)  # the fit pairs' similarities the metrics came from
        ours = side_similarities(decoded, datamodule.train_idx, queries=queries)["fit"]
        np.testing.assert_allclose(ours, scored, atol=1e-5)
        held_out = OriginalSide(vectors, datamodule.train_idx, datamodule.val_idx, EvalSettings(max_queries=40))
        recall = retrieval_recall(vectors, decoded, held_out.queries["heldout"], [10], query_vectors=queries)[10]
        assert recall == pytest.approx(run["metrics.heldout/recall_at_10"])
