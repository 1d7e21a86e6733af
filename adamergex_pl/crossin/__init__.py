"""CrossIn (arXiv:2404.11932): the CrossX consistency evaluator and the ``adamergex crossin`` command.

The data side lives in ``data_modules``: :class:`data_modules.CrossInDataModule` (the cross-lingual instruction
mixture) and :class:`data_modules.CrossXDataModule` (Cross-MMLU, Cross-LogiQA, Cross-XQuAD). The metrics are
:class:`adamergex_pl.metrics.CrossLingualConsistency`.
"""

from adamergex_pl.crossin.crossx_evaluator import CrossXEvaluator

__all__ = ["CrossXEvaluator"]
