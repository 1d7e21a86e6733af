"""``callbacks.AdapterSnapshot``: PEFT adapter snapshots at every epoch end (see adamergex_pl/training/)."""

from adamergex_pl.training.adapter_snapshot import AdapterSnapshot

__all__ = ["AdapterSnapshot"]
