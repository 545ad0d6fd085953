"""Encoders that fail on rank 1 of a `trainer=ddp` job, mid-training: a crash on one rank (an error it raises, or the
process killed outright, as the kernel's out-of-memory killer does), as a test needs it."""

import os
import signal

from simreduce.reducers.cosine import CosineEncoder

FAILING_STEP = 5


class FailsOnRankOne(CosineEncoder):
    def training_step(self, batch, batch_idx: int):
        if self.trainer.global_rank == 1 and batch_idx == FAILING_STEP:
            raise RuntimeError("rank 1 failed on purpose")
        return super().training_step(batch, batch_idx)


class KilledOnRankOne(CosineEncoder):
    def training_step(self, batch, batch_idx: int):
        if self.trainer.global_rank == 1 and batch_idx == FAILING_STEP:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().training_step(batch, batch_idx)
