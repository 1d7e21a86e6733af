"""adamergex-pl: Lightning-based cross-lingual transfer with AdaMergeX adapter merging and CrossIn.

The heavy classes are imported on first use, so that ``adamergex merge`` and other light commands start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "AdapterModule": "adamergex_pl.adapter_module",
    "MergeModule": "adamergex_pl.merge_module",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'adamergex_pl' has no attribute {name!r}")
