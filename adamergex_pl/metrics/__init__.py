"""Evaluation metrics of the cross-lingual task suite and of the CrossX consistency benchmark.

Pure functions, for in-memory predictions and for tests:

* MGSM: :func:`extract_final_number` (last number of the GENERATED text), :func:`parse_number`,
  :func:`numbers_equal`.
* XQuAD: :func:`squad_scores`, :func:`exact_match`, :func:`f1_score`, :func:`normalize_answer`.
* XLSum: :func:`rouge_l` (precision, recall, F1 of the token LCS; script-aware tokens).
* CrossX: :func:`consistency_scores` (per-language accuracy, ``consistency_k``, ``ac3_k``).
* Option letters: :func:`option_letter`, :func:`option_index`, :func:`index_to_letter`.

torchmetrics metrics for validation loops (every state is synced correctly under DDP):
:class:`SquadMetric`, :class:`RougeLMetric`, :class:`NumberMatchAccuracy` (per-language means, keys
``<lang>/<score>`` plus macro averages ``<score>``) and :class:`CrossLingualConsistency`. Accuracy-type
tasks (XNLI, XCOPA, PAWS-X) need no text metric: compare the extracted label with ``torchmetrics``
accuracy or a per-language mean.
"""
