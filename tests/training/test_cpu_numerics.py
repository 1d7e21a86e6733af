"""Portable CPU numerics: importing the package caps PyTorch, MKL and oneDNN at AVX2 (adamergex_pl/__init__.py).

Why: an AVX-512 CPU and an AVX2-only CPU sum in different orders, and a fit turns the last-bit differences into
different adapters (the demo's Spanish accuracy moved by one item between the two kinds of machine). With the
cap, this machine's demo table equals the README's, which was recorded on an AVX2-only CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = (
    "import adamergex_pl, os, torch; torch.ones(4) @ torch.ones(4); "
    "print(torch.backends.cpu.get_cpu_capability(), os.environ.get('MKL_CBWR'))"
)


def _probe(**env: str) -> list[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def test_importing_the_package_selects_the_avx2_paths_even_after_torch():
    assert _probe() == ["AVX2", "AVX2"]
    late = "import torch, adamergex_pl; torch.ones(2).sum(); print(torch.backends.cpu.get_cpu_capability())"
    out = subprocess.run([sys.executable, "-c", late], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["AVX2"]


def test_a_users_own_choice_and_the_native_opt_out_are_kept():
    assert _probe(ATEN_CPU_CAPABILITY="default") == ["DEFAULT", "AVX2"]
    native = _probe(ADAMERGEX_NATIVE_CPU_NUMERICS="1")
    if native[0] == "AVX2":
        pytest.skip("this CPU has no path above AVX2, so the opt-out cannot differ here")
    assert native[0] != "AVX2" and native[1] == "None"
