import hashlib
import multiprocessing
import time
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from simreduce.runtime.errors import SimreduceError
from simreduce.vectors.cache import VectorCache, content_hash

KEY = {"model": "m", "revision": "r", "layer": "-1", "pooling": "mean", "dtype": "float32"}
WORDS = ["alpha", "beta", "gamma"]


def fake_embed(words: list[str]) -> torch.Tensor:
    return torch.arange(len(words) * 4, dtype=torch.float32).reshape(len(words), 4) + 1


def test_content_hash_is_the_sha256_of_the_row_major_bytes():
    vectors = torch.randn(5, 7)
    assert content_hash(vectors) == hashlib.sha256(vectors.numpy().tobytes()).hexdigest()
    assert content_hash(vectors.T) == hashlib.sha256(vectors.T.contiguous().numpy().tobytes()).hexdigest()


def test_round_trip(tmp_path):
    cache = VectorCache(tmp_path)
    built = cache.get_or_build(KEY, WORDS, fake_embed)
    assert torch.equal(cache.load(KEY, WORDS), built)
    assert not list(tmp_path.glob("*.tmp"))


def test_other_key_or_words_miss(tmp_path):
    cache = VectorCache(tmp_path)
    cache.save(KEY, WORDS, fake_embed(WORDS))
    assert cache.load({**KEY, "layer": "3"}, WORDS) is None
    assert cache.load(KEY, WORDS[:2]) is None


def test_tampered_file_is_rebuilt(tmp_path):
    cache = VectorCache(tmp_path)
    cache.save(KEY, WORDS, fake_embed(WORDS))
    path = cache.path_for(KEY, WORDS)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    tensors["vectors"][0, 0] = 99.0
    save_file(tensors, str(path), metadata=meta)
    assert cache.load(KEY, WORDS) is None
    calls = []
    rebuilt = cache.get_or_build(KEY, WORDS, lambda w: calls.append(w) or fake_embed(w))
    assert calls == [WORDS]
    assert torch.equal(rebuilt, fake_embed(WORDS))


def test_truncated_file_is_rebuilt(tmp_path):
    cache = VectorCache(tmp_path)
    cache.save(KEY, WORDS, fake_embed(WORDS))
    path = cache.path_for(KEY, WORDS)
    path.write_bytes(path.read_bytes()[:40])
    assert cache.load(KEY, WORDS) is None
    assert torch.equal(cache.get_or_build(KEY, WORDS, fake_embed), fake_embed(WORDS))


def test_nan_and_zero_vectors_are_rejected_naming_the_words(tmp_path):
    def bad(words):
        v = fake_embed(words)
        v[0, 1] = float("nan")
        v[2] = 0
        return v

    with pytest.raises(SimreduceError, match=r"\['alpha', 'gamma'\]"):
        VectorCache(tmp_path).get_or_build(KEY, WORDS, bad)
    assert not list(Path(tmp_path).glob("*.safetensors"))


def _slow_build_in_process(cache_dir: str, log: str) -> None:
    def build(words):
        with open(log, "a") as f:
            f.write("embedded\n")
        time.sleep(1.0)
        return fake_embed(words)

    VectorCache(cache_dir).get_or_build(KEY, WORDS, build)


def test_two_processes_embed_once(tmp_path):
    log = tmp_path / "builds.log"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_slow_build_in_process, args=(str(tmp_path), str(log))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)  # against a hang
    assert [p.exitcode for p in procs] == [0, 0]
    assert log.read_text().count("embedded") == 1
    assert torch.equal(VectorCache(tmp_path).load(KEY, WORDS), fake_embed(WORDS))


def _build_forever(cache_dir: str, started: str) -> None:
    def build(words):
        Path(started).touch()
        time.sleep(60)
        return fake_embed(words)

    VectorCache(cache_dir).get_or_build(KEY, WORDS, build)


def test_process_killed_while_embedding_leaves_no_cache_and_no_stuck_lock(tmp_path):
    started = tmp_path / "started"
    proc = multiprocessing.get_context("spawn").Process(target=_build_forever, args=(str(tmp_path), str(started)))
    proc.start()
    while not started.exists() and proc.is_alive():  # however long a busy machine takes to start it
        time.sleep(0.05)
    assert started.exists()
    proc.kill()
    proc.join()
    assert not list(tmp_path.glob("*.safetensors"))
    (lock,) = tmp_path.glob("*.lock")
    with FileLock(str(lock), timeout=0):  # free at once: the killed holder's lock died with it (else Timeout)
        pass
    assert torch.equal(VectorCache(tmp_path).get_or_build(KEY, WORDS, fake_embed), fake_embed(WORDS))


def test_vectors_without_a_cosine_are_refused_by_id_and_never_cached(tmp_path):
    vectors = torch.ones(4, 3)
    vectors[1, 0] = float("nan")
    vectors[3] = 0.0
    cache = VectorCache(tmp_path)
    with pytest.raises(SimreduceError, match=r"2 embedded vector\(s\) are NaN/inf or all zero, for \['b', 'd'\]"):
        cache.get_or_build({"model": "m"}, ["a", "b", "c", "d"], lambda words: vectors)
    assert not list(tmp_path.glob("*.safetensors"))
