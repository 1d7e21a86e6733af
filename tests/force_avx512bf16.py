"""Run the ``adamergex`` CLI as it runs on a CPU with AVX512-BF16, whatever this CPU has.

    python tests/force_avx512bf16.py fit --config configs/tiny/task_lora.yaml ...

bitsandbytes decides per ``Linear4bit`` at construction (``has_avx512bf16()``) whether an eval-mode no-grad
CPU forward repacks the weight for its AVX512-BF16 kernel. Patching that one function makes every layer built
in this process take the path such a CPU takes, so a test of the guard fails without it on any machine.
"""

from __future__ import annotations

import sys

import bitsandbytes.nn.modules

from adamergex_pl.cli import main

bitsandbytes.nn.modules.has_avx512bf16 = lambda: True

if __name__ == "__main__":
    sys.exit(main())
