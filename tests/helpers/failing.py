"""An encoder that fails on rank 1 of a `trainer=ddp` job, mid-training: a crash on one rank, as a test needs it."""

from simreduce.reducers.cosine import CosineEncoder

FAILING_STEP = 5


class FailsOnRankOne(CosineEncoder):
    def training_step(self, batch, batch_idx: int):
        if self.trainer.global_rank == 1 and batch_idx == FAILING_STEP:
            raise RuntimeError("rank 1 failed on purpose")
        return super().training_step(batch, batch_idx)
