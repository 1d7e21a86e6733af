"""Evaluation metrics of the cross-lingual task suite and of the CrossX consistency benchmark.

Pure functions and torchmetrics metrics (per-language means, DDP-synced) per benchmark:
:mod:`~adamergex_pl.metrics.numbers` (MGSM), :mod:`~adamergex_pl.metrics.squad` (XQuAD),
:mod:`~adamergex_pl.metrics.rouge` (XLSum), :mod:`~adamergex_pl.metrics.consistency` (CrossX),
:mod:`~adamergex_pl.metrics.options` (option letters); intervals in :mod:`~adamergex_pl.metrics.bootstrap`.
"""
