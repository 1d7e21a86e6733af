"""Lightning callbacks of adamergex-pl, one per file."""

from callbacks.adapter_snapshot import AdapterSnapshot
from callbacks.slurm_requeue import SlurmRequeue

__all__ = ["AdapterSnapshot", "SlurmRequeue"]
