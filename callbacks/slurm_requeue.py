"""``callbacks.SlurmRequeue``: checkpoint and requeue a SLURM job when it is signalled (see adamergex_pl/slurm/)."""

from adamergex_pl.slurm.requeue_callback import SlurmRequeue

__all__ = ["SlurmRequeue"]
