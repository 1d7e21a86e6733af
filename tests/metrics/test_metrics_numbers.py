"""Final-number extraction (MGSM): separators, decimals, signs, non-Latin digits, generated-text contract."""

from __future__ import annotations

from decimal import Decimal

import pytest

from adamergex_pl.metrics.numbers import (
    NumberMatchAccuracy,
    extract_final_number,
    numbers_equal,
    parse_number,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 42.", "42"),  # sentence period is not a decimal point
        ("She pays $18 per day.", "18"),
        ("So the total is 1,234 dollars", "1234"),  # comma thousands separator
        ("1,234,567", "1234567"),
        ("1 234", "1234"),  # space thousands separator
        ("1\u202f234\u202f567,5", "1234567.5"),  # French narrow no-break space and decimal comma
        ("5'000", "5000"),  # Swiss apostrophe
        ("3.5", "3.5"),
        ("It takes 0.25 hours", "0.25"),
        ("3,5", "3.5"),  # a lone comma not followed by exactly 3 digits is a decimal comma
        ("12,50 €", "12.5"),
        ("0,500", "0.5"),  # a grouped number never starts with 0
        ("1,234.56", "1234.56"),  # two kinds: the last one is the decimal separator
        ("1.234,56", "1234.56"),
        ("1 234,5", "1234.5"),
        ("-7", "-7"),
        ("x = -7 degrees", "-7"),
        ("\u22127", "-7"),  # U+2212 minus sign
        ("pages 3-5", "5"),  # hyphen between digits is a range, not a sign
        ("COVID-19", "19"),  # hyphen after a letter is not a sign
        ("答案是-5", "-5"),  # but after a Han character it is (no spaces in Chinese)
        ("温度为－3度", "-3"),  # full-width hyphen-minus
        ("12 km/h for 3 hours = 36km.", "36"),  # units glued to the number
        ("50%", "50"),
        ("1,2,3", "3"),  # a list, not one number: the last one written
        ("On 12.05.2023 she had 7 apples", "7"),
        ("On 12.05.2023", "2023"),
        ("3.5 100", "100"),
        ("12 3.5", "3.5"),
        ("x²", None),  # a superscript is not a decimal digit (unicodedata.digit would say 2)
        ("5 m²", "5"),
        ("There is no number here.", None),
        ("", None),
    ],
)
def test_latin_digits(text: str, expected: str | None) -> None:
    result = extract_final_number(text)
    assert result == (None if expected is None else Decimal(expected))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("الجواب هو ٤٢", "42"),  # Arabic-Indic
        ("١٬٢٣٤٫٥", "1234.5"),  # Arabic thousands and decimal separators
        ("پاسخ ۱۲۳ است", "123"),  # Persian (Extended Arabic-Indic)
        ("उत्तर १८ है", "18"),  # Devanagari
        ("উত্তর ২৫", "25"),  # Bengali
        ("คำตอบคือ ๑๘ บาท", "18"),  # Thai
        ("答案是１２３４。", "1234"),  # full-width
        ("答案是18。", "18"),
        ("答案是十二。", "12"),  # Chinese numerals, read only when no digit is present
        ("一共三百五十个", "350"),
        ("两千零五年", "2005"),
        ("一万二千", "12000"),
        ("二〇二三", "2023"),
        ("一亿两千万", "120000000"),
        ("他先有十个，后来又买了18个", "18"),  # digits win over Chinese numerals
    ],
)
def test_non_latin_digits(text: str, expected: str) -> None:
    assert extract_final_number(text) == Decimal(expected)


def test_language_decides_a_lone_ambiguous_separator() -> None:
    # "1.234": decimal point by default (and in English), thousands in German; "1,234" the other way round.
    assert extract_final_number("1.234") == Decimal("1.234")
    assert extract_final_number("1.234", language="en") == Decimal("1.234")
    assert extract_final_number("Es sind 1.234 Euro.", language="de") == Decimal("1234")
    assert extract_final_number("1,234", language="en") == Decimal("1234")
    assert extract_final_number("1,234", language="es") == Decimal("1.234")
    # Not ambiguous, so the language does not matter.
    assert extract_final_number("3.5", language="de") == Decimal("3.5")
    assert extract_final_number("1.234.567", language="en") == Decimal("1234567")


def test_last_number_of_the_generation_is_taken() -> None:
    generation = "She has 16 - 3 - 4 = 9 eggs. 9 * 2 = 18. The answer is 18."
    assert extract_final_number(generation) == Decimal("18")
    assert extract_final_number("First 18, then after more thought: 20") == Decimal("20")


def test_contract_generated_text_only() -> None:
    """The extractor never sees the prompt: there is no prompt-stripping helper because none is needed.

    The AdaMergeX release parsed prompt + generation, so a generation without a number scored a number taken
    from the question. Callers pass the generated tokens only; then "no number" stays "no number".
    """
    prompt = "Question: Janet has 16 eggs and eats 3. How many are left? Answer step by step."
    generation = "I am not sure how to solve this."
    assert extract_final_number(generation) is None
    assert extract_final_number(prompt + generation) == Decimal("3")  # what the contract forbids
    metric = NumberMatchAccuracy(languages=["en"])
    metric.update([generation], [3], language="en")
    assert float(metric.compute()["en/accuracy"]) == 0.0


def test_numbers_equal_compares_numerically() -> None:
    assert numbers_equal("18", "18.0")
    assert numbers_equal(Decimal("18"), 18.0)
    assert numbers_equal(extract_final_number("... = 1,234."), 1234)
    assert numbers_equal("-7", -7)
    assert numbers_equal(0.1, "0.1")  # floats are read through their shortest repr
    assert not numbers_equal("18", 19)
    assert not numbers_equal(None, 18)
    assert numbers_equal("١٨", 18)


def test_parse_number_and_errors() -> None:
    assert parse_number(" 1,234 ") == Decimal("1234")
    assert parse_number("十二") == Decimal("12")
    for text in ["1,2,3", "about 5", "", "3.5 100"]:
        with pytest.raises(ValueError, match="is not a single number"):
            parse_number(text)
    with pytest.raises(TypeError, match="generated string"):
        extract_final_number(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bool"):
        numbers_equal(True, 1)
    with pytest.raises(ValueError, match="not a finite number"):
        numbers_equal(float("nan"), 1)
    with pytest.raises(ValueError, match="not a known language"):
        extract_final_number("1.234", language="german-ish")
