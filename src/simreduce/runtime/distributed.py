"""One job over several processes (`trainer=ddp`, started by `torchrun` or SLURM's `srun`): which process this is,
its process group, and the few exchanges a job needs outside training: the launch time its output dir is named by,
rank 0's decisions, the shares of sharded work, and a failed rank's error. Training's own collectives are
Lightning's, over the same group (Lightning reuses a group that exists).

A job in one process initialises nothing here: `world()` is then rank 0 of 1 and every exchange returns its input.
"""

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from simreduce.runtime.errors import KnownFailure

log = logging.getLogger(__name__)

# How long a collective waits for the slowest rank (an uneven embedding shard, rank 0 writing the cache). A rank that
# dies does not cost this wait: gloo fails its peers' collectives at once, and torchrun stops the other ranks.
TIMEOUT = timedelta(minutes=30)
FAILURE_KEY = "simreduce/failed"  # in the group's store: the first failed rank's error, for rank 0's run
LAUNCH_ENV = ("WORLD_SIZE", "SLURM_NTASKS")  # set by torchrun / srun: without them this is one process
# What gloo and NCCL say on a rank whose peer is gone (killed, crashed, out of memory): the peer's side of a
# collective closed under it.
PEER_LOST = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "remote process exited")
PEER_LOST_TYPES = ("DistBackendError", "DistNetworkError")  # torch.distributed's, named: torch loads later
GLOO_SOURCE = re.compile(r"^\[[^\]]*\.cc:\d+\] ")  # `[.../gloo/transport/tcp/pair.cc:537] ` before gloo's message

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the job's `size` processes, `per_node` on each of `nodes` nodes."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    nodes: int = 1

    @property
    def per_node(self) -> int:
        return self.size // self.nodes


class RankFailed(KnownFailure):
    """Another rank failed: what a rank raises in place of the broken collective or stop signal that followed."""


def world() -> World:
    """Read from Lightning's cluster environments (SLURM's first, as Lightning picks them), so a job and its
    Trainer agree on who is who."""
    if not any(name in os.environ for name in LAUNCH_ENV):
        return World()
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if SLURMEnvironment.detect():
        env = SLURMEnvironment()
        nodes = int(os.environ.get("SLURM_NNODES", 1))
    elif TorchElasticEnvironment.detect():
        env = TorchElasticEnvironment()
        nodes = env.world_size() // int(os.environ.get("LOCAL_WORLD_SIZE", env.world_size()))
    else:
        return World()
    return World(env.global_rank(), env.local_rank(), env.world_size(), nodes)


def is_rank_zero() -> bool:
    return world().rank == 0


class _Group:
    """This process's membership, once made: the store every rank reaches, and rank 0's launch time."""

    store = None
    launch_time: datetime | None = None


def init() -> None:
    """Join this process to the job's group (a no-op in one process, or once joined): gloo for CPU tensors, and NCCL
    for CUDA ones where there is a GPU, with this rank's GPU its device."""
    import torch
    import torch.distributed as dist

    found = world()
    if found.size == 1 or dist.is_initialized():
        return
    if "MASTER_ADDR" not in os.environ:  # srun sets no address: Lightning derives it from the node list and job id
        from lightning.fabric.plugins.environments import SLURMEnvironment

        env = SLURMEnvironment()
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = env.main_address, str(env.main_port)
    store, rank, size = next(dist.rendezvous("env://", found.rank, found.size, timeout=TIMEOUT))
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(found.local_rank)
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend, store=store, rank=rank, world_size=size, timeout=TIMEOUT)
    _Group.store = store
    log.info(
        "rank %d of %d (node %d of %d) joined the job's process group",
        rank,
        size,
        found.rank // found.per_node,
        found.nodes,
    )


def agree(value: T) -> T:
    """Rank 0's `value`, on every rank: what rank 0 alone can know (its MLflow store) or decides (its clock)."""
    if world().size == 1:
        return value
    import torch.distributed as dist

    init()
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def launch_time() -> datetime:
    """When the job started, for Hydra's output and sweep dirs: now, in one process (Hydra's own `now`); over several,
    rank 0's clock at its first call, so ranks started a second apart write to the same dirs."""
    if world().size == 1:
        return datetime.now()
    if _Group.launch_time is None:
        _Group.launch_time = agree(datetime.now())
    return _Group.launch_time


def share(rows, rank: int, size: int):
    """Rank `rank`'s contiguous share of `rows` (a tensor, a list, a range) among `size` ranks: sizes differ by at
    most one, earlier ranks take the extra rows, and the shares in rank order are `rows` again."""
    base, extra = divmod(len(rows), size)
    start = rank * base + min(rank, extra)
    return rows[start : start + base + (rank < extra)]


@contextlib.contextmanager
def failures_shared() -> Iterator[None]:
    """Around a rank's part of the job. On rank 0, an error that follows another rank's failure (a broken collective,
    torchrun's stop signal) is raised as that rank's error (`RankFailed`), so its run ends FAILED naming the cause;
    on another rank, its own error is written to the group's store for rank 0 to find, then raised as it was. A rank
    that died (killed, crashed) writes nothing: a collective broken by a lost peer is raised as `RankFailed` naming
    the rank that stopped where that can be known, and where its log is."""
    try:
        yield
    except BaseException as e:
        if _Group.store is None or isinstance(e, RankFailed):
            raise
        lost = lost_peer(e)
        if world().rank != 0 and lost is None:
            with contextlib.suppress(Exception):  # the store went with rank 0: nobody is left to tell
                _Group.store.compare_set(FAILURE_KEY, "", f"rank {world().rank}: {type(e).__name__}: {e}"[:2000])
            raise
        if (found := peer_failure()) is not None:
            raise RankFailed(found) from e
        if lost is None:
            raise
        raise RankFailed(stopped_rank_message(lost, world())) from e


def lost_peer(error: BaseException) -> str | None:
    """What gloo or NCCL raised when a peer of this rank's collective went away, in short (`Read error
    [127.0.0.1]:31148: Connection reset by peer`, without gloo's source line and advice), or None."""
    while error is not None:
        text = str(error).strip()
        if marker := next((m for m in PEER_LOST if m in text), None):
            return GLOO_SOURCE.sub("", text[: text.index(marker) + len(marker)].splitlines()[-1])
        if any(kind.__name__ in PEER_LOST_TYPES for kind in type(error).__mro__):
            return (text.splitlines() or [type(error).__name__])[0][:300]
        error = error.__cause__
    return None


def stopped_rank_message(lost: str, me: World) -> str:
    """A peer gone from `me`'s collective, in one line: the rank, where only one other rank exists (else "another
    rank": the surviving process cannot tell which of them), and where its own log says why."""
    who = f"rank {1 - me.rank}" if me.size == 2 else "another rank"
    if error_file := os.environ.get("TORCHELASTIC_ERROR_FILE"):  # torchrun's: <log dir>/<attempt>/<local rank>/
        attempt = Path(error_file).parent.parent
        where = f"its output (with torchrun --redirects, {attempt}/<its local rank>/stderr.log) and torchrun's summary"
    elif job := os.environ.get("SLURM_JOB_ID"):
        where = f"the output of SLURM job {job}'s tasks (`sacct -j {job}` says how each ended)"
    else:
        where = "its output and the launcher's summary"
    return f"{who} stopped during the job, so this rank's collective failed ({lost}): see {where}."


def peer_failure() -> str | None:
    """The first failed rank's error, as it wrote it (`failures_shared`), or None."""
    try:
        return _Group.store.get(FAILURE_KEY).decode() if _Group.store.check([FAILURE_KEY]) else None
    except Exception:  # the store is unreachable: no rank's word can be had
        return None
