"""ROUGE-L on tokens, hand-computed for English, Chinese and Thai; the bit-parallel LCS against a plain DP."""

from __future__ import annotations

import random

import pytest

from adamergex_pl.metrics.rouge import lcs_length, rouge_l, rouge_tokens


def _lcs_dp(first: list[str], second: list[str]) -> int:
    previous = [0] * (len(second) + 1)
    for token in first:
        current = [0]
        for column, other in enumerate(second):
            current.append(
                previous[column] + 1 if token == other else max(previous[column + 1], current[column])
            )
        previous = current
    return previous[-1]


def test_english() -> None:
    # the cat sat on the mat / the cat is on the mat: 6 and 6 tokens, LCS "the cat on the mat" = 5.
    assert rouge_l("The cat sat on the mat.", "the cat is on the mat") == pytest.approx((5 / 6, 5 / 6, 5 / 6))
    # No stemming: "running" and "run" are different tokens.
    assert rouge_l("running", "run") == (0.0, 0.0, 0.0)
    # Punctuation separates tokens: "don't" -> don, t.
    assert rouge_tokens("Don't stop!") == ["don", "t", "stop"]


def test_chinese_by_character() -> None:
    # 我喜欢吃苹果 -> 我 喜 欢 吃 苹 果 (6); 我爱吃苹果 -> 我 爱 吃 苹 果 (5); LCS 我 吃 苹 果 = 4.
    # P = 4/6, R = 4/5, F1 = 2·(2/3)(4/5)/(2/3 + 4/5) = (16/15)/(22/15) = 8/11.
    precision, recall, f1 = rouge_l("我喜欢吃苹果。", "我爱吃苹果")
    assert (precision, recall, f1) == pytest.approx((4 / 6, 4 / 5, 8 / 11))
    # An English-only tokenizer would see no token at all here (and score 0).
    assert rouge_tokens("我爱吃苹果") == ["我", "爱", "吃", "苹", "果"]


def test_thai_by_code_point() -> None:
    # แมวกินปลา = แ ม ว ก ิ น ป ล า (9); แมวไม่กินปลา = แ ม ว ไ ม ่ ก ิ น ป ล า (12).
    # The whole prediction is a subsequence: LCS = 9, P = 1, R = 9/12 = 3/4, F1 = 2·(3/4)/(7/4) = 6/7.
    assert len(rouge_tokens("แมวไม่กินปลา")) == 12
    assert rouge_l("แมวกินปลา", "แมวไม่กินปลา") == pytest.approx((1.0, 3 / 4, 6 / 7))


def test_mixed_scripts_and_case() -> None:
    # Han one per character; Latin and digits by word; case folded; full-width digits become ASCII.
    assert rouge_tokens("iPhone 15在中国发布") == ["iphone", "15", "在", "中", "国", "发", "布"]
    assert rouge_tokens("２０２４年") == ["2024", "年"]
    # Other scripts keep their combining marks inside the word (Devanagari, Arabic).
    assert rouge_tokens("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]


def test_not_divided_by_reference_length() -> None:
    # The AdaMergeX release divided ROUGE-L by the reference's character length; a perfect summary scores 1.
    summary = "北京时间周一，中国宣布了一项新的经济刺激计划，以支持国内消费和就业。"
    assert rouge_l(summary, summary) == (1.0, 1.0, 1.0)


def test_empty_sides_score_zero() -> None:
    assert rouge_l("", "reference") == (0.0, 0.0, 0.0)
    assert rouge_l("prediction", "...") == (0.0, 0.0, 0.0)
    assert rouge_l("", "") == (0.0, 0.0, 0.0)


def test_bit_parallel_lcs_matches_dynamic_programming() -> None:
    rng = random.Random(0)
    for _ in range(500):
        first = [rng.choice("abcd") for _ in range(rng.randint(0, 70))]  # > 64 tokens crosses a machine word
        second = [rng.choice("abcde") for _ in range(rng.randint(0, 70))]
        assert lcs_length(first, second) == _lcs_dp(first, second)
    assert lcs_length("ABCBDAB", "BDCABA") == 4
    with pytest.raises(TypeError, match="expected a string"):
        rouge_l(None, "x")  # type: ignore[arg-type]
