"""`encoder=pq`: faiss OPQ + PQ as a reference scored beside our reducers, at its code's bytes, never a winner."""

import sys

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.project import artifact_paths, compose_config, store_runs, store_uri

from simreduce.cli import main
from simreduce.experiment.job import run_job
from simreduce.experiment.tracking import TrackingStore
from simreduce.reducers.base import apply_net
from simreduce.reducers.product_quantizer import CENTROIDS, ProductQuantizer
from simreduce.runtime.errors import SimreduceError

D = 16


def prototypes_with_noise(n: int = 320, n_prototypes: int = 8, noise: float = 1e-3, seed: int = 0) -> torch.Tensor:
    """[n, D] rows that are `n_prototypes` directions up to `noise`: any 256-centroid codebook holds them all."""
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(size=(n_prototypes, D))
    rows = prototypes[rng.integers(n_prototypes, size=n)] * rng.uniform(0.5, 2, size=(n, 1))
    return torch.from_numpy((rows + noise * rng.normal(size=rows.shape)).astype(np.float32))


def test_the_codes_decode_to_the_directions_of_the_rows_they_code():
    x = prototypes_with_noise()
    reducer = ProductQuantizer(D, dim=4, opq_iterations=3).fit(x[:CENTROIDS])
    (candidate,) = reducer.candidates(["float32", "int8"])  # the codes are the stored form: no other precision
    assert (candidate.code_bytes, candidate.stored_form, candidate.run_name) == (4, "codes", "pq-d0004")
    decoded = apply_net(candidate.net, x)  # held-out rows too: rows 256.. were not trained on
    assert decoded.shape == x.shape and decoded.dtype == torch.float32
    cosines = torch.nn.functional.cosine_similarity(decoded, x, dim=1)
    assert cosines.min() > 0.999  # not the rows themselves (they are not unit length), their directions
    assert not torch.allclose(decoded.norm(dim=1), x.norm(dim=1), rtol=0.1)


def test_a_random_direction_loses_more_than_a_prototype():
    """The codebooks are learned from the data: rows unlike any training row decode worse."""
    x = prototypes_with_noise()
    reducer = ProductQuantizer(D, dim=4, opq_iterations=3).fit(x)
    unlike = torch.from_numpy(np.random.default_rng(1).normal(size=(64, D)).astype(np.float32))
    alike = torch.nn.functional.cosine_similarity(reducer.net(x), x, dim=1).mean()
    assert torch.nn.functional.cosine_similarity(reducer.net(unlike), unlike, dim=1).mean() < alike - 0.1


@pytest.mark.parametrize(
    ("kwargs", "rows", "named"),
    [
        ({"dim": 4, "bytes": 8}, 300, "encoder.bytes=8 differs from encoder.dim=4"),
        ({"dim": D}, 300, f"encoder.dim={D} is not below the input width"),
        ({"dim": 4}, 100, "at least 256 training rows"),
    ],
)
def test_bad_sizes_and_too_few_rows_are_one_line(kwargs, rows, named):
    with pytest.raises(SimreduceError, match=named):
        ProductQuantizer(D, **kwargs).fit(prototypes_with_noise(rows))


def test_without_faiss_the_message_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    with pytest.raises(SimreduceError, match=r"pip install -e '\.\[faiss\]'"):
        ProductQuantizer(D, dim=4)


def test_a_pq_run_is_scored_at_its_bytes_charted_and_never_the_winner(project, capsys):
    path = project / "docs.npy"
    np.save(path, prototypes_with_noise(400, n_prototypes=40, noise=0.3).numpy())
    common = ["data=vectors", f"data.path={path}", "tracking.sweep_id=s1", "trainer.accelerator=cpu"]
    run_job(compose_config([*common, "encoder=pq", "encoder.dim=2", "encoder.opq_iterations=3"]))
    run_job(compose_config([*common, "encoder.dim=4", "encoder.steps=30", "eval.precisions=[float32,int8]"]))
    runs = store_runs(project, "simreduce-docs").set_index("tags.mlflow.runName")
    pq = runs.loc["pq-d0002"]
    assert (pq["tags.reference"], pq["tags.precision"], pq["metrics.bytes_per_vector"]) == ("true", "codes", 2)
    assert pq["metrics.compression_ratio"] == D * 4 / 2
    assert 0 < pq["metrics.heldout/recall_at_10"] <= 1
    assert np.isnan(pq.get("metrics.bound_ey", np.nan))  # no reduction to a size: no Eckart-Young floor
    assert "model" not in {p.split("/")[0] for p in artifact_paths(pq.run_id)}  # a reference serves nothing
    assert runs.loc["cosine-d0004", "tags.reference"] == "false"

    # The target 0 is reached by every candidate: the cheapest would win, and pq at 2 bytes is cheaper than ours.
    main(["select", "--experiment", "simreduce-docs", "--sweep", "s1", "--target", "0", "--register", "never"])
    assert "cosine d=4 int8 wins" in capsys.readouterr().out
    summary = store_runs(project, "simreduce-docs").set_index("tags.mlflow.runName").loc["sweep-s1"]
    assert "plots/rate_distortion.png" in artifact_paths(summary.run_id)
    with TrackingStore.open(store_uri(project)).downloaded(summary.run_id, "selection/ranking.csv") as ranking:
        table = pd.read_csv(ranking).set_index("run")
    assert table.loc["pq-d0002", ["bytes", "precision", "reference", "winner"]].tolist() == [2, "codes", True, np.nan]
    assert table.loc["cosine-d0004-int8", ["bytes", "reference", "winner"]].tolist() == [4, False, "*"]


def test_rows_are_coded_a_block_at_a_time_as_they_would_be_all_at_once(monkeypatch):
    from simreduce.reducers import product_quantizer

    x = prototypes_with_noise()
    reducer = ProductQuantizer(D, dim=4, opq_iterations=3).fit(x)
    whole = reducer.net(x)
    monkeypatch.setattr(product_quantizer, "BLOCK_ROWS", 7)  # 320 rows: 45 full blocks and one of 5
    torch.testing.assert_close(reducer.net(x), whole, rtol=0, atol=1e-6)  # BLAS rounds by block size
