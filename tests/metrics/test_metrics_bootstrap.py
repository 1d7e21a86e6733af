"""Bootstrap intervals, paired comparisons, the selection/test split and the interval format."""

from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pytest
import torch

import adamergex_pl.metrics.bootstrap as bootstrap_module
import adamergex_pl.metrics.bootstrap as interval_format_module
from adamergex_pl.errors import InvalidTypeError, InvalidValueError
from adamergex_pl.metrics.bootstrap import (
    Interval,
    PairedComparison,
    bootstrap_interval,
    format_with_interval,
    paired_bootstrap,
    selection_split,
)


def _continuous(n: int, seed: int = 7) -> list[float]:
    return torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).tolist()


# ------------------------------------------------------------------ bootstrap_interval: known cases
def test_all_correct_items_give_one_one() -> None:
    assert bootstrap_interval([1] * 30) == Interval(mean=1.0, n=30, ci_low=1.0, ci_high=1.0)


def test_all_wrong_items_give_zero_zero() -> None:
    assert bootstrap_interval([0] * 30) == Interval(mean=0.0, n=30, ci_low=0.0, ci_high=0.0)


def test_all_equal_continuous_scores_give_a_zero_width_interval_at_that_value() -> None:
    result = bootstrap_interval([0.1] * 7)  # 7 · 0.1 / 7 is not exactly 0.1 in floating point
    assert (result.mean, result.ci_low, result.ci_high) == (0.1, 0.1, 0.1)


def test_one_item_gives_a_zero_width_interval() -> None:
    assert bootstrap_interval([0.42]) == Interval(mean=0.42, n=1, ci_low=0.42, ci_high=0.42)


def test_half_correct_items_match_the_normal_approximation() -> None:
    result = bootstrap_interval([1] * 50 + [0] * 50)
    assert result.mean == 0.5 and result.n == 100
    assert result.ci_low < 0.5 < result.ci_high
    assert abs((result.ci_high - 0.5) - (0.5 - result.ci_low)) <= 0.01  # symmetric
    normal_width = 2 * 1.96 * math.sqrt(0.25 / 100)  # 0.196
    assert abs((result.ci_high - result.ci_low) - normal_width) <= 0.15 * normal_width


def test_width_follows_the_confidence_level() -> None:
    scores = [1] * 50 + [0] * 50
    widths = [
        bootstrap_interval(scores, confidence=c).ci_high - bootstrap_interval(scores, confidence=c).ci_low
        for c in (0.5, 0.8, 0.95, 0.99)
    ]
    assert widths == sorted(widths) and widths[0] < widths[-1]


def test_large_n_interval_matches_the_normal_approximation() -> None:
    scores = (torch.rand(10_000, generator=torch.Generator().manual_seed(3)) < 0.3).double()
    result = bootstrap_interval(scores)
    p = result.mean
    normal_half_width = 1.96 * math.sqrt(p * (1 - p) / 10_000)
    assert result.ci_low == pytest.approx(p - normal_half_width, abs=0.15 * normal_half_width)
    assert result.ci_high == pytest.approx(p + normal_half_width, abs=0.15 * normal_half_width)


def test_percentile_convention_is_numpy_linear_quantiles_of_one_seeded_index_matrix() -> None:
    """Pins the documented recipe: randint index matrix from Generator(seed), type-7 quantiles."""
    scores = _continuous(37)
    resamples, seed, confidence = 500, 11, 0.9
    index = torch.randint(0, 37, (resamples, 37), generator=torch.Generator().manual_seed(seed))
    means = torch.tensor(scores, dtype=torch.float64)[index].mean(dim=1).numpy()
    expected = np.quantile(means, [0.05, 0.95], method="linear")
    result = bootstrap_interval(scores, confidence=confidence, resamples=resamples, seed=seed)
    assert result.mean == pytest.approx(sum(scores) / 37, abs=1e-15)
    assert result.ci_low == pytest.approx(expected[0], abs=1e-12)
    assert result.ci_high == pytest.approx(expected[1], abs=1e-12)


def test_seeded_results_repeat_and_differ_across_seeds() -> None:
    scores = _continuous(200)
    first = bootstrap_interval(scores, seed=5)
    assert bootstrap_interval(scores, seed=5) == first
    as_tensor = torch.tensor(scores, dtype=torch.float64)
    assert bootstrap_interval(as_tensor, seed=5) == first  # a list and a tensor agree
    other = bootstrap_interval(scores, seed=6)
    assert other.mean == first.mean
    assert (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)


def test_inputs_as_bools_tensors_and_numpy_arrays_agree() -> None:
    flags = [True, False, True, True, False, False, True, False]
    reference = bootstrap_interval([float(f) for f in flags])
    assert bootstrap_interval(flags) == reference
    assert bootstrap_interval(torch.tensor(flags)) == reference
    assert bootstrap_interval(np.array(flags)) == reference
    assert bootstrap_interval(np.array(flags, dtype=np.int64)) == reference


# ------------------------------------------------------------------ paired_bootstrap
def test_a_method_better_on_most_items_has_a_positive_significant_difference() -> None:
    baseline = [0] * 60 + [1] * 40
    method = [1] * 30 + [0] * 30 + [1] * 35 + [0] * 5  # wins 30 items, loses 5
    result = paired_bootstrap(method, baseline)
    assert result.difference == pytest.approx(0.25)
    assert result.n == 100
    assert 0 < result.ci_low < result.difference < result.ci_high
    assert result.p_value < 0.05


def test_identical_scores_give_zero_difference_and_p_one() -> None:
    scores = _continuous(50)
    assert paired_bootstrap(scores, scores) == PairedComparison(
        difference=0.0, n=50, ci_low=0.0, ci_high=0.0, p_value=1.0
    )


def test_swapping_the_arguments_flips_the_sign() -> None:
    method, baseline = _continuous(80, seed=1), _continuous(80, seed=2)
    forward = paired_bootstrap(method, baseline, seed=3)
    backward = paired_bootstrap(baseline, method, seed=3)
    assert backward.difference == pytest.approx(-forward.difference, abs=1e-15)
    assert backward.ci_low == pytest.approx(-forward.ci_high, abs=1e-12)
    assert backward.ci_high == pytest.approx(-forward.ci_low, abs=1e-12)
    assert backward.p_value == forward.p_value


def test_p_value_is_the_doubled_share_on_the_other_side_of_zero_with_plus_one() -> None:
    method, baseline = _continuous(40, seed=4), _continuous(40, seed=5)
    resamples, seed = 999, 2
    difference = torch.tensor(method, dtype=torch.float64) - torch.tensor(baseline, dtype=torch.float64)
    index = torch.randint(0, 40, (resamples, 40), generator=torch.Generator().manual_seed(seed))
    means = difference[index].mean(dim=1)
    observed = sum(method) / 40 - sum(baseline) / 40
    count = int((means <= 0).sum()) if observed > 0 else int((means >= 0).sum())
    result = paired_bootstrap(method, baseline, resamples=resamples, seed=seed)
    assert 0 < count < resamples  # a case where the estimator is not at its floor or its cap
    assert result.p_value == pytest.approx(min(1.0, 2 * (count + 1) / (resamples + 1)))


def test_a_difference_without_variation_has_the_smallest_p_value() -> None:
    result = paired_bootstrap([1.0] * 10, [0.0] * 10, resamples=2000)
    assert (result.difference, result.ci_low, result.ci_high) == (1.0, 1.0, 1.0)
    assert result.p_value == pytest.approx(2 / 2001)


def test_a_noisy_null_difference_is_not_significant() -> None:
    baseline = [1, 0] * 50
    method = [0, 1] * 50  # same accuracy, every item flipped
    result = paired_bootstrap(method, baseline)
    assert result.difference == 0.0 and result.p_value == 1.0
    assert result.ci_low < 0 < result.ci_high


# ------------------------------------------------------------------ rows
def test_as_dict_rows_are_json_ready_and_merge_into_one_row() -> None:
    interval = bootstrap_interval([1, 0, 1, 1, 0] * 4)
    paired = paired_bootstrap([1, 0, 1, 1, 0] * 4, [0, 0, 1, 0, 0] * 4)
    row = {**interval.as_dict(), **paired.as_dict()}
    assert list(row) == [
        "value", "n", "ci_low", "ci_high", "diff_vs_zero_shot", "diff_ci_low", "diff_ci_high", "p_value"
    ]  # fmt: skip
    assert row["n"] == 20 and isinstance(row["n"], int)
    assert all(type(v) is float for k, v in row.items() if k != "n")
    assert json.loads(json.dumps(row)) == row
    assert "diff_vs_arimerge" in paired.as_dict(baseline="arimerge")
    with pytest.raises(InvalidValueError, match="baseline="):
        paired.as_dict(baseline="zero shot")


# ------------------------------------------------------------------ refusals
def test_empty_scores_are_refused() -> None:
    with pytest.raises(InvalidValueError, match="scores is empty"):
        bootstrap_interval([])


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(InvalidValueError, match="method_scores has 3 items but baseline_scores has 2"):
        paired_bootstrap([1, 0, 1], [1, 0])


@pytest.mark.parametrize("confidence", [0, 1, 1.5, -0.1, float("nan"), True, "0.95"])
def test_bad_confidence_is_refused(confidence: object) -> None:
    with pytest.raises(InvalidValueError, match=r"confidence=.*strictly between 0 and 1"):
        bootstrap_interval([1, 0], confidence=confidence)  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="confidence="):
        paired_bootstrap([1, 0], [0, 1], confidence=confidence)  # type: ignore[arg-type]


@pytest.mark.parametrize("resamples", [0, -5, 2.5, True, "2000"])
def test_bad_resamples_are_refused(resamples: object) -> None:
    with pytest.raises(InvalidValueError, match=r"resamples=.*positive integer"):
        bootstrap_interval([1, 0], resamples=resamples)  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="resamples="):
        paired_bootstrap([1, 0], [0, 1], resamples=resamples)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [-1, 2**63, 1.0, None])
def test_bad_seeds_are_refused(seed: object) -> None:
    with pytest.raises(InvalidValueError, match="seed="):
        bootstrap_interval([1, 0], seed=seed)  # type: ignore[arg-type]


def test_non_finite_and_malformed_scores_are_refused() -> None:
    with pytest.raises(InvalidValueError, match=r"scores\[1\] is nan"):
        bootstrap_interval([1.0, float("nan"), 0.0])
    with pytest.raises(InvalidValueError, match=r"baseline_scores\[0\] is inf"):
        paired_bootstrap([1.0], [float("inf")])
    with pytest.raises(InvalidValueError, match="shape"):
        bootstrap_interval(torch.ones(2, 3))
    with pytest.raises(InvalidTypeError, match="every per-item score must be a number"):
        bootstrap_interval([1, "0"])  # type: ignore[list-item]
    with pytest.raises(InvalidTypeError, match="list of numbers"):
        bootstrap_interval("1010")  # type: ignore[arg-type]


# ------------------------------------------------------------------ selection_split
def test_selection_split_is_a_seeded_partition() -> None:
    selection, test = selection_split(100, 0.3, seed=0)
    assert len(selection) == 30 and len(test) == 70
    assert sorted(selection + test) == list(range(100))
    assert selection == sorted(selection) and test == sorted(test)
    assert selection_split(100, 0.3, seed=0) == (selection, test)
    assert selection_split(100, 0.3, seed=1)[0] != selection
    assert selection != list(range(30))  # shuffled, not the first items


def test_selection_split_rounds_the_selection_size() -> None:
    assert len(selection_split(10, 0.25, seed=0)[0]) == 3  # 2.5 rounds half up
    assert len(selection_split(3, 0.5, seed=0)[0]) == 2


@pytest.mark.parametrize("fraction", [0, 1, 1.2, -0.5, float("nan"), True])
def test_selection_split_refuses_fractions_outside_zero_one(fraction: object) -> None:
    with pytest.raises(InvalidValueError, match=r"fraction=.*strictly between 0 and 1"):
        selection_split(100, fraction, seed=0)  # type: ignore[arg-type]


def test_selection_split_refuses_an_empty_part() -> None:
    with pytest.raises(InvalidValueError, match="leaves the selection part empty"):
        selection_split(10, 0.01, seed=0)
    with pytest.raises(InvalidValueError, match="leaves the test part empty"):
        selection_split(10, 0.99, seed=0)
    with pytest.raises(InvalidValueError, match="leaves the"):
        selection_split(1, 0.5, seed=0)
    with pytest.raises(InvalidValueError, match="n_items="):
        selection_split(-3, 0.5, seed=0)


# ------------------------------------------------------------------ format_with_interval
def test_format_with_interval() -> None:
    assert format_with_interval(0.1864, 0.0981, 0.2876) == "0.186 [0.098, 0.288]"
    assert format_with_interval(0.5, 0.25, 0.75, digits=1) == "0.5 [0.2, 0.8]"  # round half to even
    assert format_with_interval(-0.0004, -0.0123, 0.011) == "0.000 [-0.012, 0.011]"  # no "-0.000"
    assert format_with_interval(float("nan"), None, None) == "nan"
    assert format_with_interval(np.float64(0.25), torch.tensor(0.125), 0.5) == "0.250 [0.125, 0.500]"
    interval = bootstrap_interval([1, 0] * 10)
    text = format_with_interval(interval.mean, interval.ci_low, interval.ci_high)
    assert text.startswith("0.500 [")


def test_format_with_interval_refusals() -> None:
    with pytest.raises(InvalidValueError, match="both ends"):
        format_with_interval(0.5, 0.1, None)
    with pytest.raises(InvalidValueError, match="digits="):
        format_with_interval(0.5, 0.1, 0.9, digits=-1)
    with pytest.raises(InvalidValueError, match=r"value='0\.5'"):
        format_with_interval("0.5", None, None)  # type: ignore[arg-type]


# ------------------------------------------------------------------ doctests
@pytest.mark.parametrize("module", [bootstrap_module, interval_format_module])
def test_docstring_examples_run(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
