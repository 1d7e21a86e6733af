"""Structure-adaptive merging of PEFT adapters (AdaMergeX, arXiv 2402.18913), as pure functions.

``A(T,tgt) = A(T,src) ⊕ t·(A(R,tgt) ⊖ A(R,src))`` with ``⊕/⊖ = +/−`` for LoRA and ``⊙/⊘`` for (IA)³.

Example:
    >>> from adamergex_pl.merging import AdapterWeights, merge_adapters, write_merged
    >>> task, en, de = (AdapterWeights.load(p) for p in ("xnli_en", "wiki_en", "wiki_de"))  # doctest: +SKIP
    >>> for t in (0.25, 0.5, 1.0):  # doctest: +SKIP
    ...     write_merged(merge_adapters(task, en, de, scale=t), f"xnli_de_t{t}")

Modules: :mod:`.adapters` (loading/saving, snapshot roots, hashes), :mod:`.adapter_config` (reading and
writing ``adapter_config.json``), :mod:`.lora` and :mod:`.ia3` (the maths), :mod:`.checks`, :mod:`.merge`,
:mod:`.result`, :mod:`.output` (atomic writes), :mod:`.live_model` (in-memory loading into a
``PeftModel``), :mod:`.command` (``adamergex merge``).
"""

from adamergex_pl.merging.adapters import AdapterWeights, resolve_adapter_dir, sha256_file
from adamergex_pl.merging.checks import check_mergeable
from adamergex_pl.merging.ia3 import ia3_adamergex, ia3_arimerge, ia3_product
from adamergex_pl.merging.live_model import add_to_peft_model
from adamergex_pl.merging.lora import combine_factors, concat_factors, lora_delta, truncate_factors
from adamergex_pl.merging.merge import (
    FORMULA_METHODS,
    IA3_MODES,
    LORA_MODES,
    combine_adapters,
    merge_adapters,
)
from adamergex_pl.merging.output import MERGE_RECORD_FILE, write_merged
from adamergex_pl.merging.result import MergeResult

__all__ = [
    "FORMULA_METHODS",
    "IA3_MODES",
    "LORA_MODES",
    "MERGE_RECORD_FILE",
    "AdapterWeights",
    "MergeResult",
    "add_to_peft_model",
    "check_mergeable",
    "combine_adapters",
    "combine_factors",
    "concat_factors",
    "ia3_adamergex",
    "ia3_arimerge",
    "ia3_product",
    "lora_delta",
    "merge_adapters",
    "resolve_adapter_dir",
    "sha256_file",
    "truncate_factors",
    "write_merged",
]
