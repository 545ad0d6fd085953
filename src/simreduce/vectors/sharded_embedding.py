"""Embedding into the vector cache over the processes of one job (`trainer=ddp`): each rank embeds its contiguous
share of the rows and rank 0 gathers the shares into the one cache file, under the key a single process uses, so a
cache made either way serves the other."""

import logging
import time
from collections.abc import Callable

import torch

from simreduce.runtime import distributed
from simreduce.runtime.errors import SimreduceError
from simreduce.vectors.cache import VectorCache

log = logging.getLogger(__name__)


def cached_vectors(
    cache: VectorCache, key: dict[str, str], ids: list[str], embed: Callable[[slice], torch.Tensor]
) -> torch.Tensor:
    """The cached [N, D] vectors of `ids`, embedded on a miss by `embed(rows)` -> [len(rows), D]: in one process all
    rows at once (`VectorCache.get_or_build`); over several, each rank its share, the model's batches sorted by
    length within it. Every rank returns all N vectors, read from the file rank 0 wrote."""
    found = distributed.world()
    if found.size == 1:
        return cache.get_or_build(key, ids, lambda _: embed(slice(None)))
    hit = cache.load(key, ids) if found.rank == 0 else None
    if distributed.agree(hit is not None):
        return hit if hit is not None else _read(cache, key, ids)
    built = _gather_on_rank_zero(_embed_share(embed, len(ids), found), len(ids), found)
    error = None
    if found.rank == 0:
        try:  # under the cache's lock: if another job wrote the file meanwhile, its vectors are the ones kept
            built = cache.get_or_build(key, ids, lambda _: built)
        except SimreduceError as e:  # a bad row, named by its id: every rank fails with the same line
            error = str(e)
    if error := distributed.agree(error):
        raise SimreduceError(error)
    return built if found.rank == 0 else _read(cache, key, ids)


def _embed_share(embed: Callable[[slice], torch.Tensor], n: int, found: distributed.World) -> torch.Tensor:
    """This rank's share of the n rows, embedded ([n_rank, D]; [0, D] for a rank with no rows); a user error on
    any rank is raised on every rank, so none waits for a share that never comes."""
    import torch.distributed as dist

    rows = distributed.share(range(n), found.rank, found.size)
    started = time.perf_counter()
    part, error = None, None
    try:
        if len(rows):
            part = embed(slice(rows.start, rows.stop))
    except SimreduceError as e:
        error = str(e)
    if part is not None:
        log.info(
            "rank %d: embedded rows %d-%d in %.1f s",
            found.rank,
            rows.start,
            rows.stop - 1,
            time.perf_counter() - started,
        )
    reports: list = [None] * found.size
    dist.all_gather_object(reports, (error, None if part is None else part.shape[1]))
    if errors := [e for e, _ in reports if e]:
        raise SimreduceError(errors[0])
    width = next(d for _, d in reports if d is not None)
    return part if part is not None else torch.empty(0, width)


def _gather_on_rank_zero(part: torch.Tensor, n: int, found: distributed.World) -> torch.Tensor | None:
    """Every rank's share [n_rank, D], in rank order, as [n, D] on rank 0 (None elsewhere)."""
    import torch.distributed as dist

    longest = -(-n // found.size)
    padded = torch.zeros(longest, part.shape[1])  # gather takes equal shapes
    padded[: len(part)] = part
    parts = [torch.empty_like(padded) for _ in range(found.size)] if found.rank == 0 else None
    dist.gather(padded, parts, dst=0)
    if found.rank != 0:
        return None
    sizes = [len(distributed.share(range(n), rank, found.size)) for rank in range(found.size)]
    return torch.cat([p[:size] for p, size in zip(parts, sizes, strict=True)])


def _read(cache: VectorCache, key: dict[str, str], ids: list[str]) -> torch.Tensor:
    vectors = cache.load(key, ids)
    if vectors is None:
        raise RuntimeError(f"rank 0 reported the vector cache written, but {cache.path_for(key, ids)} does not hold it")
    return vectors
