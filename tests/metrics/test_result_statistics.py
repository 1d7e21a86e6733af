"""Results a researcher can trust: per-item scores, ``n``, bootstrap intervals and paired comparisons.

The known case: 11 of 59 items correct (the demo's zero-shot transfer to Spanish). Its 95% percentile interval
is computed here a second time, independently, from the definition in ``adamergex_pl/metrics/bootstrap.py``
(one ``torch.randint`` index matrix, numpy's type-7 quantiles), and pinned: 6/59 to 17/59 with seed 0. The
paired comparison's direction is checked end to end: evaluators scored by a scripted option scorer, their
per-item scores through ``MergeResults`` into the rows, ``results.json`` and the table.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adamergex_pl.evaluation.choice_evaluator import ChoiceEvaluator
from adamergex_pl.evaluation.language_modeling import LanguageModelingEvaluator
from adamergex_pl.merging.merge_results import MergeResults
from adamergex_pl.metrics.item_scores import ItemScoreMetric, ItemScores
from adamergex_pl.results.statistics import RATIO_NOTE, Result, StatisticsOptions, tidy_rows
from data_modules.collate import TaskCollator

KNOWN = [1.0] * 11 + [0.0] * 48  # 11 of 59 correct


def _reference_interval(scores: list[float], seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    values = np.asarray(scores)
    index = torch.randint(
        0, len(values), (resamples, len(values)), generator=torch.Generator().manual_seed(seed)
    )
    means = values[index.numpy()].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975], method="linear")
    return float(low), float(high)


def _items(scores, ids=None) -> ItemScores:
    ids = torch.arange(len(scores)) if ids is None else torch.as_tensor(ids)
    return ItemScores(ids, torch.tensor(scores, dtype=torch.float64))


def test_the_interval_of_a_known_case_is_pinned_and_matches_the_definition():
    rows = tidy_rows(
        [Result("zero_shot", None, "es", "accuracy", 11 / 59, _items(KNOWN))], "demo", StatisticsOptions()
    )
    (row,) = rows
    low, high = _reference_interval(KNOWN)
    assert (row["n"], row["split"]) == (59, "all")
    assert row["ci_low"] == pytest.approx(low, abs=1e-12) and row["ci_high"] == pytest.approx(high, abs=1e-12)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(
        (6 / 59, 17 / 59), abs=1e-12
    )  # pinned: 6 to 17 of 59
    assert row["ci_low"] < row["value"] < row["ci_high"]
    other_seed = tidy_rows([Result("zero_shot", None, "es", "accuracy", 11 / 59, _items(KNOWN))], "demo",
                           StatisticsOptions(seed=1))[0]  # fmt: skip
    assert (other_seed["ci_low"], other_seed["ci_high"]) != (row["ci_low"], row["ci_high"])


class _Scripted(ChoiceEvaluator):
    """A choice evaluator whose option scores are scripted per item id (no model): ``answer(id) -> option``."""

    def __init__(self, answer) -> None:
        super().__init__("count", ["en", "es"], num_options=2)
        self.answer = answer

    def option_scores(self, model, batch):
        chosen = torch.tensor([self.answer(int(i)) for i in batch["index"]])
        return torch.nn.functional.one_hot(chosen, 2).float()


def _evaluate(evaluator: ChoiceEvaluator, n: int = 40) -> ChoiceEvaluator:
    collate = TaskCollator("choice", pad_token_id=0)
    examples = [{"prompt_ids": [1, 5], "option_ids": [[7], [8]], "label": 0, "index": i} for i in range(n)]
    for language in ("en", "es"):
        for start in range(0, n, 8):
            evaluator.update(None, collate(examples[start : start + 8]), language)
    return evaluator


def test_paired_comparison_direction_end_to_end(tmp_path):
    evaluators = {  # gold is option 0 for every item
        "zero_shot": _evaluate(_Scripted(lambda i: i % 2)),  # right on the even items: 0.5
        "adamergex": _evaluate(_Scripted(lambda i: 0 if i % 2 == 0 or i % 5 in (1, 3) else 1)),  # 0.7
        "arimerge": _evaluate(_Scripted(lambda i: 1 if i % 4 == 0 else i % 2)),  # loses a quarter: 0.25
    }
    results = MergeResults(tmp_path, ["en", "es"], "count", src_lang="en")
    for method, evaluator in evaluators.items():
        items = evaluator.item_scores()
        for key, value in evaluator.compute().items():
            results.add(method, None if method == "zero_shot" else 1.0, key, float(value), items.get(key))
    results.write()
    rows = {
        (r["method"], r["language"]): r for r in json.loads((tmp_path / "results.json").read_text())["rows"]
    }
    better, worse, base = rows["adamergex", "es"], rows["arimerge", "es"], rows["zero_shot", "es"]
    assert (better["value"], worse["value"], base["value"]) == pytest.approx((0.7, 0.25, 0.5))
    assert better["n"] == worse["n"] == base["n"] == 40
    assert better["diff_vs_zero_shot"] == pytest.approx(0.2) and better["diff_ci_low"] > 0
    assert worse["diff_vs_zero_shot"] == pytest.approx(-0.25) and worse["diff_ci_high"] < 0
    assert better["p_value"] < 0.05 and worse["p_value"] < 0.05
    assert base["diff_vs_zero_shot"] is None  # the baseline is not compared with itself
    assert ("count/accuracy", "") not in {
        (r["metric"], r["language"]) for r in rows.values()
    }  # no macro mean
    table = (tmp_path / "results.md").read_text()
    assert "| adamergex | 1 | 0.700 [" in table and "+0.200 [" in table and "-0.250 [" in table
    assert table.count("| method |") == 1  # one metric, one table


def test_a_token_weighted_loss_has_n_but_no_interval(tiny_llama_path):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny_llama_path).eval()
    evaluator = LanguageModelingEvaluator(["en"])
    batch = {
        "input_ids": torch.tensor([[1, 5, 6, 7], [1, 8, 9, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
        "labels": torch.tensor([[-100, 5, 6, 7], [-100, 8, 9, -100]]),
        "index": torch.tensor([3, 4]),
    }
    evaluator.update(model, batch, "en")
    computed, items = evaluator.compute(), evaluator.item_scores()
    loss = items["en/loss"]
    assert loss.ids.tolist() == [3, 4] and loss.weights.tolist() == [3.0, 2.0] and not loss.is_mean
    assert loss.value() == pytest.approx(float(computed["en/loss"]), rel=1e-6)
    assert items["en/perplexity"].value() == pytest.approx(float(computed["en/perplexity"]), rel=1e-6)
    (row,) = tidy_rows([Result("zero_shot", None, "en", "loss", float(computed["en/loss"]), loss)], "t",
                       StatisticsOptions())  # fmt: skip
    assert (row["n"], row["ci_low"], row["ci_high"], row["note"]) == (2, None, None, RATIO_NOTE)


def test_a_selection_split_chooses_t_on_held_out_items_and_reports_on_the_rest(tmp_path):
    options = StatisticsOptions(selection_fraction=0.25, seed=3)
    results = MergeResults(tmp_path, ["es"], "count", src_lang="en", statistics=options)
    rng = np.random.default_rng(0)
    for method, scale in (("zero_shot", None), ("adamergex", 0.5), ("adamergex", 1.0)):
        scores = (rng.random(40) < (0.3 if scale is None else 0.3 + scale / 4)).astype(float).tolist()
        results.add(method, scale, "count/es/accuracy", float(np.mean(scores)), _items(scores))
    rows = results.rows
    assert {r["split"] for r in rows} == {"selection", "test"}
    assert all(r["n"] == (10 if r["split"] == "selection" else 30) for r in rows)
    chosen = results.best_merges("accuracy", src_lang="en")["es"]
    selection = {
        r["scale"]: r["value"] for r in rows if r["split"] == "selection" and r["method"] == "adamergex"
    }
    assert chosen[1] == max(selection, key=selection.get)  # chosen on the selection items
    table = results.table()
    assert "es (n=30)" in table and "chosen on 10 held-out selection items" in table
    with pytest.raises(ValueError, match=r"selection_fraction=1.5 must be strictly between 0 and 1"):
        StatisticsOptions(selection_fraction=1.5)


def test_item_records_of_two_shards_merge_like_ddp_ranks_and_repeats_count_once():
    full, even, odd = (ItemScoreMetric(["en", "es"], ["accuracy"]) for _ in range(3))
    for i in range(10):
        for metric in (full, even if i % 2 == 0 else odd):
            metric.update("es", [i], [[float(i % 3 == 0)]])
    odd.update("es", [1], [[0.0]])  # a padded repeat of item 1
    even.merge_state(odd)
    for metric in (full, even):
        ids, scores = metric.per_language()["es"]
        assert ids.tolist() == list(range(10)) and scores[:, 0].tolist() == [
            float(i % 3 == 0) for i in range(10)
        ]
    even.reset()
    assert even.per_language() == {}


def test_non_finite_item_scores_stay_non_finite_and_choice_accuracy_on_them_is_nan(monkeypatch):
    metric = ItemScoreMetric(["es"], ["loss"])
    metric.update("es", [0, 1, 2, 3], [[0.5], [float("nan")], [float("inf")], [-float("inf")]])
    _, scores = metric.per_language()["es"]
    assert scores[0, 0] == 0.5 and scores[1, 0].isnan() and scores[2, 0] == float("inf")
    assert scores[3, 0] == -float("inf")

    evaluator = ChoiceEvaluator("xnli", ["en", "es"], num_options=3)
    logits = {"en": torch.tensor([[0.0, 2.0, 1.0]]), "es": torch.tensor([[0.0, float("nan"), 1.0]])}
    for language in ("en", "es"):
        monkeypatch.setattr(evaluator, "option_scores", lambda model, batch, s=logits[language]: s)
        evaluator.update(None, {"label": torch.tensor([1]), "index": torch.tensor([0])}, language)
    values = evaluator.compute()
    assert values["xnli/en/accuracy"] == 1.0 and values["xnli/es/accuracy"].isnan()
    assert values["xnli/accuracy"].isnan()  # a mean over a NaN is NaN
    assert evaluator.item_scores()["xnli/es/accuracy"].values[0].isnan()


def test_with_a_selection_split_the_table_has_one_line_per_method_at_each_languages_chosen_t():
    from adamergex_pl.results.tables import comparison_table

    def row(method, scale, language, split, value):
        return {"method": method, "scale": scale, "language": language, "metric": "acc", "split": split,
                "value": value, "n": 4}  # fmt: skip

    rows = [
        row("zero_shot", None, lang, split, 0.5) for lang in ("en", "es") for split in ("selection", "test")
    ]
    chosen = {"en": 0.5, "es": 1.0}
    for lang in ("en", "es"):
        for t in (0.5, 1.0):
            rows.append(row("adamergex", t, lang, "selection", 0.9 if t == chosen[lang] else 0.1))
        rows.append(row("adamergex", chosen[lang], lang, "test", 0.7))
    table = comparison_table(rows, "acc", ["en", "es"], "en", ["adamergex"])
    assert "| adamergex | en 0.5 · es 1 | 0.7000 | 0.7000 |" in table and table.count("| adamergex |") == 1
    assert "*" not in table.split("\n\n")[1]  # every value is the chosen one: nothing to mark
