"""Large-N paths on small data: mini-batch streams, lazily gathered validation batches, sampled evaluation."""

from itertools import islice

import numpy as np
import pytest
import torch
from helpers.project import compose_config, store_runs, tiny_overrides

from simreduce.evaluate.pairs import pair_similarities
from simreduce.experiment.job import run_job
from simreduce.reducers.losses import pairwise_cosine
from simreduce.vectors.data import BatchStream, RowBatches, VectorDataModule
from simreduce.vectors.sources import Vectors
from simreduce.vectors.words import top_english_words


def numbered_rows(n: int) -> torch.Tensor:
    """[n, 2] rows whose first column is the row's own index, so a batch says which rows it holds."""
    return torch.stack([torch.arange(n, dtype=torch.float32), torch.ones(n)], dim=1)


def row_ids(batch: torch.Tensor) -> list[int]:
    return batch[:, 0].long().tolist()


def test_mini_batches_shuffle_the_training_rows_once_per_epoch():
    vectors = numbered_rows(30)
    rows = torch.arange(0, 30, 3)  # 10 training rows
    stream = iter(BatchStream(vectors, rows, batch_size=4, seed=0))
    first, second = list(islice(stream, 3)), list(islice(stream, 3))
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(sum(map(row_ids, first), [])) == rows.tolist()
    assert sorted(sum(map(row_ids, second), [])) == rows.tolist()
    assert sum(map(row_ids, first), []) != sum(map(row_ids, second), [])
    again = list(islice(BatchStream(vectors, rows, batch_size=4, seed=0), 3))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_a_last_row_left_alone_waits_for_the_next_epoch():
    stream = BatchStream(numbered_rows(9), torch.arange(9), batch_size=4, seed=0)
    assert [len(b) for b in islice(stream, 6)] == [4, 4] * 3


def test_full_batch_is_gathered_once_and_moved_to_the_device_once():
    vectors = numbered_rows(12)
    rows = torch.tensor([1, 5, 7])
    stream = iter(BatchStream(vectors, rows, batch_size=1024, seed=0))
    first, second = next(stream), next(stream)
    assert first is second
    assert row_ids(first) == [1, 5, 7]
    on_device = next(iter(BatchStream(vectors, rows, batch_size=1024, seed=0, device=torch.device("meta"))))
    assert on_device.device.type == "meta" and on_device.shape == (3, 2)


def test_validation_batches_are_gathered_in_order_without_a_lone_last_row():
    batches = RowBatches(numbered_rows(20), torch.tensor([2, 3, 5, 8, 13, 19, 4]), batch_size=3)
    assert len(batches) == 2
    assert [row_ids(b) for b in batches] == [[2, 3, 5], [8, 13, 19]]
    assert len(RowBatches(numbered_rows(20), torch.arange(8), batch_size=3)) == 3
    with pytest.raises(IndexError):
        batches[2]


def test_large_frequent_word_lists_hold_words_not_symbols():
    from wordfreq import top_n_list

    assert top_english_words(512) == top_n_list("en", 512)
    words = top_english_words(5000)
    assert len(words) == len(set(words)) == 5000
    assert "°" in top_n_list("en", 5000) and "°" not in words and "😂" not in words


class CountingSource:
    """A source of 20 numbered rows that counts its loads."""

    def __init__(self):
        self.loads = 0

    def load(self) -> Vectors:
        self.loads += 1
        return Vectors([str(i) for i in range(20)], numbered_rows(20))


def test_the_data_module_reads_a_large_cache_once_per_process():
    source = CountingSource()
    module = VectorDataModule(lambda: source, name="in-memory", batch_size=8)
    module.prepare_data()
    module.setup("fit")
    module.prepare_data()  # Trainer.fit calls it again
    module.setup("fit")
    assert source.loads == 1
    assert len(module.train_idx) + len(module.val_idx) == len(module.vectors)


def test_fits_see_every_training_row_up_to_max_fit_rows_and_a_seeded_sample_above():
    everything = VectorDataModule(CountingSource, name="in-memory", max_fit_rows=16)
    everything.setup("fit")
    assert torch.equal(everything.fit_idx, everything.train_idx)  # 16 training rows of 20
    sampled = VectorDataModule(CountingSource, name="in-memory", max_fit_rows=5)
    sampled.setup("fit")
    assert len(sampled.fit_idx) == 5 and set(sampled.fit_idx.tolist()) < set(sampled.train_idx.tolist())
    assert torch.equal(sampled.fit_vectors[:, 0].long(), sampled.fit_idx)  # row i holds i
    again = VectorDataModule(CountingSource, name="in-memory", max_fit_rows=5)
    again.setup("fit")
    assert torch.equal(again.fit_idx, sampled.fit_idx)


def dense_pairs(original: torch.Tensor, reduced: torch.Tensor, train_idx: torch.Tensor, name: str):
    """The reference: every pair i<j of a set, read off the full N x N matrices."""
    n = original.shape[0]
    is_train = torch.zeros(n, dtype=torch.bool)
    is_train[train_idx] = True
    both = is_train[:, None] & is_train[None, :]
    mask = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1) & (both if name == "fit" else ~both)
    return pairwise_cosine(original.double())[mask].numpy(), pairwise_cosine(reduced.double())[mask].numpy()


@pytest.fixture
def vectors_and_split():
    generator = torch.Generator().manual_seed(0)
    original = torch.randn(300, 24, generator=generator) + 0.5
    reduced = original[:, :6] + 0.1 * torch.randn(300, 6, generator=generator)
    return original, reduced, torch.randperm(300, generator=generator)[:240].sort().values


def test_exact_pairs_in_blocks_match_the_full_matrix(vectors_and_split):
    original, reduced, train_idx = vectors_and_split
    pairs = pair_similarities(original, reduced, train_idx, max_exact_n=300, block_rows=37)
    for name in ("fit", "heldout"):
        o, r = dense_pairs(original, reduced, train_idx, name)
        assert not pairs[name].sampled
        np.testing.assert_allclose(pairs[name].original, o, atol=1e-6)
        np.testing.assert_allclose(pairs[name].reduced, r, atol=1e-6)


def test_sampled_pairs_are_seeded_counted_and_estimate_the_exact_stats(vectors_and_split):
    original, reduced, train_idx = vectors_and_split
    sampled = pair_similarities(original, reduced, train_idx, max_exact_n=100, n_sampled_pairs=10_000, seed=3)
    again = pair_similarities(original, reduced, train_idx, max_exact_n=100, n_sampled_pairs=10_000, seed=3)
    other = pair_similarities(original, reduced, train_idx, max_exact_n=100, n_sampled_pairs=10_000, seed=4)
    for name in ("fit", "heldout"):
        assert sampled[name].sampled and len(sampled[name]) == 10_000
        np.testing.assert_array_equal(sampled[name].diff, again[name].diff)
        assert not np.array_equal(sampled[name].diff, other[name].diff)
        o, r = dense_pairs(original, reduced, train_idx, name)
        exact_rmse = np.sqrt(np.mean((o - r) ** 2))
        assert np.sqrt(np.mean(sampled[name].diff.astype(np.float64) ** 2)) == pytest.approx(exact_rmse, rel=0.05)


def test_sampled_pairs_never_exceed_the_pairs_a_set_has():
    original = torch.randn(12, 5)
    pairs = pair_similarities(original, original[:, :2], torch.arange(10), max_exact_n=4, n_sampled_pairs=10_000)
    assert len(pairs["fit"]) == 10 * 9 // 2
    assert len(pairs["heldout"]) == 12 * 11 // 2 - 10 * 9 // 2


def test_mini_batch_training_and_sampled_evaluation_run_end_to_end(project, tiny_llama, words_file):
    cfg = compose_config(
        [
            *tiny_overrides(tiny_llama, words_file),
            "encoder.dim=4",
            "data.batch_size=8",
            "encoder.optimizer=adam",
            "eval.max_exact_n=20",
            "eval.n_sampled_pairs=300",
        ]
    )
    run_job(cfg)
    run = store_runs(project).iloc[0]
    assert run.status == "FINISHED"
    assert run["params.encoder.optimizer"] == "adam" and run["params.optimizer_used"] == "adam"
    assert run["metrics.train/lr"] < 1e-6  # the schedule's end
    assert run["metrics.fit/n_pairs"] == 300 and run["metrics.heldout/n_pairs"] == 300
    assert np.isfinite(run["metrics.fit/rmse"]) and np.isfinite(run["metrics.heldout/rmse"])
