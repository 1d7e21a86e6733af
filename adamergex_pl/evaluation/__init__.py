"""Evaluation: what a validation pass computes from a model and a batch.

Modules: :mod:`.language_modeling` (the ``Evaluator`` protocol, token-weighted causal-LM loss and perplexity),
:mod:`.option_scoring` and :mod:`.shared_prompt_scoring` (ranking answer options by log-likelihood, with a
shared prompt KV cache), :mod:`.choice_evaluator` (accuracy of option scoring), :mod:`.generation` and
:mod:`.generation_evaluator` (greedy generation scored on the generated tokens only).
"""
