"""Make bitsandbytes take the code paths of a CPU with, or without, AVX512-BF16, whatever this CPU has.

    python tests/cpu_kind.py avx512_bf16 fit --config configs/tiny/task_lora.yaml ...     # the adamergex CLI
    python tests/cpu_kind.py no_avx512_bf16 fit --config configs/tiny/task_lora.yaml ...

bitsandbytes asks ``has_avx512bf16()`` in two places, and CI's machine answers one way only:

* ``Linear4bit.__init__`` sets ``support_avx512bf16_for_cpu`` from it: an eval-mode no-grad CPU forward then
  repacks the weight for the BF16 kernel (the hazard ``adamergex_pl.training.base_model`` guards against);
* the CPU backend, on import, registers its BF16 ``gemv_4bit`` kernel only if it says yes: single-row 4-bit
  products (one token, batch 1: greedy decoding) then run in bfloat16; without it they take bitsandbytes'
  default float path.

``no_avx512_bf16`` answers no for the whole process, before bitsandbytes is imported, so both places take the
path of a CPU without it (the default path is plain torch: it runs anywhere). ``avx512_bf16`` forces only the
first place, after import: the BF16 kernel itself would be an illegal instruction on a CPU without it, and the
repacking it leads to is plain torch.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

KINDS = ("avx512_bf16", "no_avx512_bf16")


class _AnswerNo(importlib.abc.MetaPathFinder):
    """Patches ``bitsandbytes.functional.has_avx512bf16`` as the module is executed: the backends and
    ``bitsandbytes.nn.modules`` import it from there afterwards, within ``import bitsandbytes``."""

    def find_spec(self, name, path, target=None):
        if name != "bitsandbytes.functional":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module) -> None:
            run(module)
            module.has_avx512bf16 = lambda: False

        spec.loader.exec_module = exec_module
        return spec


def force(kind: str) -> None:
    """Make this process's bitsandbytes behave as on a CPU of ``kind`` (one of :data:`KINDS`)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; expected one of {KINDS}")
    if kind == "no_avx512_bf16":
        if "bitsandbytes" in sys.modules:
            raise RuntimeError("no_avx512_bf16 must be forced before bitsandbytes is imported")
        sys.meta_path.insert(0, _AnswerNo())
        return
    import bitsandbytes.nn.modules

    bitsandbytes.nn.modules.has_avx512bf16 = lambda: True


if __name__ == "__main__":
    force(sys.argv[1])
    sys.argv[1:2] = []
    from adamergex_pl.cli import main

    sys.exit(main())
