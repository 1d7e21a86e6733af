"""Lightning callbacks of adamergex-pl, one per file."""

from callbacks.adapter_snapshot import AdapterSnapshot

__all__ = ["AdapterSnapshot"]
