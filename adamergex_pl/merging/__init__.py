"""Structure-adaptive merging of PEFT adapters (AdaMergeX, arXiv 2402.18913), as pure functions.

``A(T,tgt) = A(T,src) ⊕ t·(A(R,tgt) ⊖ A(R,src))`` with ``⊕/⊖ = +/−`` for LoRA and ``⊙/⊘`` for (IA)³.
"""
