"""SquadMetric, RougeLMetric, NumberMatchAccuracy: per-language means, DDP merging, dtype safety, errors."""

from __future__ import annotations

import math

import pytest
import torch

from adamergex_pl.metrics.numbers import NumberMatchAccuracy
from adamergex_pl.metrics.rouge import RougeLMetric
from adamergex_pl.metrics.squad import SquadMetric


def _floats(result: dict[str, torch.Tensor]) -> dict[str, float]:
    return {key: float(value) for key, value in result.items()}


def test_squad_metric_per_language_and_macro() -> None:
    metric = SquadMetric(languages=["en", "zh"])
    # en: EM (1, 0), F1 (1, 2/3: "barack obama" vs "obama": P 1/2, R 1).
    metric.update(["The Eiffel Tower", "Barack Obama"], ["Eiffel Tower", "Obama"], language="en")
    # zh: "北京大学" against golds ["北京", "北京大学"]: the best gold gives EM 1, F1 1.
    metric.update(["北京大学"], [["北京", "北京大学"]], language="zh")
    result = _floats(metric.compute())
    assert result["en/exact_match"] == pytest.approx(0.5)
    assert result["en/f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert result["zh/exact_match"] == 1.0 and result["zh/f1"] == 1.0
    assert result["exact_match"] == pytest.approx(0.75)  # macro: mean of the language means
    assert result["f1"] == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)


def test_language_without_examples_reports_nan_and_is_left_out_of_the_macro() -> None:
    metric = RougeLMetric(languages=["th", "vi"])
    metric.update(["แมวกินปลา"], ["แมวไม่กินปลา"], language="th")
    result = _floats(metric.compute())
    assert set(result) == {
        f"{prefix}{name}"
        for prefix in ("th/", "vi/", "")
        for name in ("rouge_l_f1", "rouge_l_precision", "rouge_l_recall")
    }
    assert result["th/rouge_l_f1"] == pytest.approx(6 / 7)
    assert math.isnan(result["vi/rouge_l_f1"])
    assert result["rouge_l_f1"] == pytest.approx(6 / 7)


def test_rouge_metric_takes_the_best_reference() -> None:
    metric = RougeLMetric(languages=["en"])
    metric.update(["a b c d"], [["x y", "a b c"]], language="en")  # best: LCS 3 of 4 and 3
    result = _floats(metric.compute())
    assert result["en/rouge_l_precision"] == pytest.approx(3 / 4)
    assert result["en/rouge_l_recall"] == pytest.approx(1.0)
    assert result["en/rouge_l_f1"] == pytest.approx(6 / 7)


def test_number_match_accuracy() -> None:
    metric = NumberMatchAccuracy(languages=["de", "zh"])
    metric.update(
        ["Also ist die Antwort 1.234.", "Das sind 18,0 Euro", "Keine Ahnung"], [1234, "18", 3], "de"
    )
    metric.update(["答案是十二。", "答案：7"], [[12, 13], "8"], "zh")
    result = _floats(metric.compute())
    assert result["de/accuracy"] == pytest.approx(2 / 3)
    assert result["de/no_number_rate"] == pytest.approx(1 / 3)
    assert result["zh/accuracy"] == pytest.approx(1 / 2)
    assert result["accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)


@pytest.mark.parametrize("metric_class", [SquadMetric, RougeLMetric, NumberMatchAccuracy])
def test_two_ranks_merged_equal_one_process(metric_class: type) -> None:
    """Simulated DDP: shard a batch stream over two instances, merge by the states' dist_reduce_fx."""
    preds = ["The answer is 12", "Paris, 75 France", "北京大学 3", "7 apples", "nothing", "the 5 cats"]
    if metric_class is NumberMatchAccuracy:
        targets: list = ["12", [75, 76], 3, "7", "3", 4]
    else:
        targets = ["12", ["Paris", "France"], "北京", "7 apples", "3", "5 cats"]
    languages = ["en", "en", "zh", "zh", "en", "en"]
    single, rank0, rank1 = (metric_class(languages=["en", "zh"]) for _ in range(3))
    for position, (pred, target, language) in enumerate(zip(preds, targets, languages, strict=True)):
        single.update([pred], [target], language=language)
        (rank0 if position % 2 == 0 else rank1).update([pred], [target], language=language)
    # What a DDP sync does with dist_reduce_fx="sum", done by hand ...
    synced = metric_class(languages=["en", "zh"])
    for name in ("score_sums", "counts"):
        setattr(synced, name, getattr(rank0, name) + getattr(rank1, name))
    synced._update_count = 1
    # ... and by torchmetrics' own merge.
    rank0.merge_state(rank1)
    expected = single.compute()
    for result in (rank0.compute(), synced.compute()):
        assert result.keys() == expected.keys()
        for key in expected:  # integer states: exactly equal, whatever the sharding
            assert torch.equal(result[key], expected[key]) or (result[key].isnan() and expected[key].isnan())


def test_states_are_integer_and_survive_bf16_true_precision() -> None:
    # Lightning's "bf16-true" calls module.to(torch.bfloat16); float metric states would become bf16, and a
    # bf16 sum stops growing at 256. Integer fixed-point states are untouched.
    metric = NumberMatchAccuracy(languages=["en"]).to(torch.bfloat16)
    assert metric.score_sums.dtype == torch.long and metric.counts.dtype == torch.long
    metric.update(["it is 1"] * 999 + ["it is 2"], [1] * 1000, language="en")
    assert float(metric.compute()["en/accuracy"]) == pytest.approx(0.999, abs=1e-12)


def test_reset_clears_the_sums() -> None:
    metric = SquadMetric(languages=["en"])
    metric.update(["a"], ["b"], language="en")
    metric.reset()
    metric.update(["b"], ["b"], language="en")
    assert float(metric.compute()["en/exact_match"]) == 1.0


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="same language"):
        SquadMetric(languages=["zh", "zh-CN"])
    with pytest.raises(ValueError, match="not a known language"):
        SquadMetric(languages=["en", "xx"])
    with pytest.raises(ValueError, match="languages is empty"):
        SquadMetric(languages=[])
    with pytest.raises(TypeError, match="list of language codes"):
        SquadMetric(languages="en")  # type: ignore[arg-type]
    metric = SquadMetric(languages=["en"])
    with pytest.raises(ValueError, match="not one of this metric's languages"):
        metric.update(["a"], ["a"], language="de")
    with pytest.raises(ValueError, match="2 predictions but 1 targets"):
        metric.update(["a", "b"], ["a"], language="en")
    with pytest.raises(TypeError, match="wrap a single prediction in a list"):
        metric.update("a", ["a"], language="en")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="decode generated token ids"):
        metric.update([[1, 2]], ["a"], language="en")  # type: ignore[list-item]
    with pytest.raises(ValueError, match="empty list"):
        metric.update(["a"], [[]], language="en")
    with pytest.raises(ValueError, match="is not a single number"):
        NumberMatchAccuracy(languages=["en"]).update(["5"], ["five"], language="en")
