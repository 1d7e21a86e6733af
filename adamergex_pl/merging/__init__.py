"""Structure-adaptive merging of PEFT adapters (AdaMergeX, arXiv 2402.18913), as pure functions.

``A(T,tgt) = A(T,src) ⊕ t·(A(R,tgt) ⊖ A(R,src))`` with ``⊕/⊖ = +/−`` for LoRA and ``⊙/⊘`` for (IA)³.

Example:
    >>> from adamergex_pl.merging.adapters import AdapterWeights
    >>> from adamergex_pl.merging.merge import merge_adapters
    >>> from adamergex_pl.merging.output import write_merged
    >>> task, en, de = (AdapterWeights.load(p) for p in ("xnli_en", "wiki_en", "wiki_de"))  # doctest: +SKIP
    >>> for t in (0.25, 0.5, 1.0):  # doctest: +SKIP
    ...     write_merged(merge_adapters(task, en, de, scale=t), f"xnli_de_t{t}")

Modules: :mod:`.adapters` (loading/saving, snapshot roots, hashes), :mod:`.adapter_config` (reading and
writing ``adapter_config.json``), :mod:`.lora` and :mod:`.ia3` (the maths), :mod:`.checks`, :mod:`.merge`,
:mod:`.result`, :mod:`.output` (atomic writes), :mod:`.live_model` (in-memory loading into a
``PeftModel``), :mod:`.command` (``adamergex merge``).
"""
