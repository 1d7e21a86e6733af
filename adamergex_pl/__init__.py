"""adamergex-pl: Lightning-based cross-lingual transfer with AdaMergeX adapter merging and CrossIn.

The heavy classes are imported on first use, so that ``adamergex merge`` and other light commands start fast.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# Portable CPU numerics: the same float results on every x86 CPU of a pool. PyTorch's vectorized kernels, MKL's
# BLAS and oneDNN pick their code path by CPU (AVX2 on a Zen 3, AVX-512 on a Zen 4); the paths sum in different
# orders, and a fit amplifies the last-bit differences into different adapters and accuracies (the demo's
# Spanish accuracy moved by one item). Capping all three at AVX2 makes an AVX-512 CPU compute exactly what an
# AVX2-only one does (the demo table is then identical on both kinds). It must happen before torch loads its
# kernels, so it happens when the package is imported; values a user set win, and
# ADAMERGEX_NATIVE_CPU_NUMERICS=1 keeps each CPU's fastest path. CUDA is unaffected.
CPU_NUMERICS_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
if os.environ.get("ADAMERGEX_NATIVE_CPU_NUMERICS", "0") in ("", "0"):
    for _name, _value in CPU_NUMERICS_ENV.items():
        os.environ.setdefault(_name, _value)

__version__ = "0.1.0"

_LAZY = {
    "AdapterModule": "adamergex_pl.training.adapter_module",
    "MergeModule": "adamergex_pl.merging.merge_module",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'adamergex_pl' has no attribute {name!r}")
