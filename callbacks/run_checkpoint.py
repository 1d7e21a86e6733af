"""``callbacks.RunCheckpoint``: ``last.ckpt`` at a step interval and every epoch end, atomically (see
adamergex_pl/training/)."""

from adamergex_pl.training.run_checkpoint import RunCheckpoint

__all__ = ["RunCheckpoint"]
