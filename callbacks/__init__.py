"""Lightning callbacks of adamergex-pl, one per file, as configs name them (``class_path: callbacks.<Name>``).

Each file re-exports a callback from the wing it belongs to: :class:`AdapterSnapshot` and :class:`RunCheckpoint`
from ``adamergex_pl/training/``, :class:`SlurmRequeue` from ``adamergex_pl/slurm/``.
"""

from callbacks.adapter_snapshot import AdapterSnapshot
from callbacks.run_checkpoint import RunCheckpoint
from callbacks.slurm_requeue import SlurmRequeue

__all__ = ["AdapterSnapshot", "RunCheckpoint", "SlurmRequeue"]
