"""Final-number extraction and numeric comparison for MGSM-style answers.

:func:`extract_final_number` reads GENERATED text only and takes its LAST number. Digits are any Unicode
decimal digit (``unicodedata.decimal``: "5 m²" is not 52). A minus directly before the digits counts unless it
follows a digit or a letter of a space-delimited script ("3-5" is a range, "COVID-19" gives 19).

A number is a run of digit groups joined by single separators (``.``, ``,``, ``'``, ``’``, spaces, ``٫``, ``٬``):

1. A decimal separator is ``.`` or ``,``, at most once, last; spaces and apostrophes only group thousands.
2. Grouping: a first group of 1-3 digits not starting with 0, then groups of exactly 3 digits, one separator.
3. With two kinds of separators (``1,234.5``, ``1.234,5``) the last is decimal; a repeated one groups thousands.
4. A lone ``.`` or ``,`` before exactly three digits groups thousands if it is the language's grouping separator
   (``1,234`` is 1234 by default, ``1.234`` for :data:`DECIMAL_COMMA_LANGUAGES`); otherwise it is decimal.
5. Any other run (``1,2,3``, ``12.05.2023``) is split at its weakest separator and the last piece read again.

Chinese/Japanese integers (两千零五 = 2005) are read only when the generation has no digit. Not handled:
fractions, scientific notation, spelled numbers, ``.5`` (gives 5), colloquial 三百五 (read as 305).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import ClassVar

from adamergex_pl.errors import InvalidTypeError, InvalidValueError
from adamergex_pl.metrics.languages import normalize_language
from adamergex_pl.metrics.per_language_mean import PerLanguageMeanMetric
from adamergex_pl.metrics.references import check_predictions, reference_lists
from adamergex_pl.metrics.text_segmentation import is_unsegmented_char

# Languages whose conventional decimal separator is a comma (ISO 639-1); all others use a point.
# fmt: off
DECIMAL_COMMA_LANGUAGES: frozenset[str] = frozenset({
    "az", "bg", "de", "el", "es", "et", "fr", "id", "it", "ky",
    "nl", "pl", "pt", "ru", "sr", "tr", "uk", "uz", "vi",
})
# fmt: on

_SEPARATOR_MAP = {
    "\u00a0": " ",  # no-break space
    "\u2007": " ",  # figure space
    "\u2009": " ",  # thin space
    "\u202f": " ",  # narrow no-break space (French grouping)
    "\u2019": "'",  # right single quotation mark (Swiss grouping)
    "\u066b": ".",  # Arabic decimal separator
    "\u066c": ",",  # Arabic thousands separator
    "\uff0e": ".",  # full-width full stop
    "\u2212": "-",  # minus sign
    "\uff0d": "-",  # full-width hyphen-minus
}
_RUN = re.compile(r"[0-9]+(?:[.,' ][0-9]+)*")
_SPLIT_ORDER = (" ", "'", ",", ".")  # weakest separator first

_CJK_DIGITS = {"〇": 0, "零": 0, "一": 1, "二": 2, "两": 2, "兩": 2, "三": 3, "四": 4}
_CJK_DIGITS.update({"五": 5, "六": 6, "七": 7, "八": 8, "九": 9})
_CJK_SMALL_UNITS = {"十": 10, "百": 100, "千": 1000}
_CJK_LARGE_UNITS = {"万": 10**4, "萬": 10**4, "亿": 10**8, "億": 10**8}
_CJK_RUN = re.compile("[" + "".join([*_CJK_DIGITS, *_CJK_SMALL_UNITS, *_CJK_LARGE_UNITS]) + "]+")


def _normalize_digits(text: str) -> str:
    """Map decimal digits to ASCII and separator/sign variants to ASCII, one character for one."""
    chars = []
    for char in text:
        value = unicodedata.decimal(char, None)
        chars.append(str(value) if value is not None else _SEPARATOR_MAP.get(char, char))
    return "".join(chars)


def _grouped(groups: list[str]) -> bool:
    first, rest = groups[0], groups[1:]
    return 1 <= len(first) <= 3 and first[0] != "0" and all(len(group) == 3 for group in rest)


def _read_run(run: str, decimal_comma: bool) -> Decimal | None:
    """The value of a whole run by rules 1-4 of the module docstring, or None if it is not one number."""
    parts = re.split(r"([.,' ])", run)
    groups, seps = parts[0::2], parts[1::2]
    if not seps:
        return Decimal(run)
    kinds = set(seps)
    if len(kinds) == 1 and len(seps) > 1:  # one separator repeated: thousands only
        return Decimal("".join(groups)) if _grouped(groups) else None
    if len(kinds) == 1:  # a lone separator
        sep = seps[0]
        if sep in " '":
            return Decimal("".join(groups)) if _grouped(groups) else None
        grouping_sep = "." if decimal_comma else ","
        if sep == grouping_sep and _grouped(groups):
            return Decimal("".join(groups))
        return Decimal(f"{groups[0]}.{groups[1]}")
    *group_seps, decimal_sep = seps
    if decimal_sep not in ".," or len(set(group_seps)) != 1 or group_seps[0] == decimal_sep:
        return None
    if not _grouped(groups[:-1]):
        return None
    return Decimal("".join(groups[:-1]) + "." + groups[-1])


def _read_last_number(run: str, decimal_comma: bool) -> tuple[Decimal, int]:
    """The last number in a run (rule 5) and its offset in the run."""
    value = _read_run(run, decimal_comma)
    if value is not None:
        return value, 0
    for sep in _SPLIT_ORDER:
        if sep in run:
            offset = run.rindex(sep) + 1
            value, inner = _read_last_number(run[offset:], decimal_comma)
            return value, offset + inner
    raise AssertionError(f"unreachable: a run without separators is always a number: {run!r}")


def _read_cjk(run: str) -> int:
    if not any(char in _CJK_SMALL_UNITS or char in _CJK_LARGE_UNITS for char in run):
        return int("".join(str(_CJK_DIGITS[char]) for char in run))  # digit by digit: 二〇二三
    total = myriads = section = digit = 0  # completed 亿 blocks, completed 万 blocks, current < 10^4
    for char in run:
        if char in _CJK_DIGITS:
            digit = _CJK_DIGITS[char]
        elif char in _CJK_SMALL_UNITS:
            section += (digit or 1) * _CJK_SMALL_UNITS[char]  # 十二: an omitted leading 一
            digit = 0
        elif _CJK_LARGE_UNITS[char] == 10**4:
            myriads += ((section + digit) or 1) * 10**4
            section = digit = 0
        else:
            total = (total + myriads + section + digit or 1) * 10**8
            myriads = section = digit = 0
    return total + myriads + section + digit


def _joins(char: str) -> bool:
    """Whether a ``-`` after ``char`` is a hyphen: after a digit or a letter of a space-delimited script."""
    return char.isalnum() and not is_unsegmented_char(char)


def _decimal_comma(language: str | None) -> bool:
    return language is not None and normalize_language(language) in DECIMAL_COMMA_LANGUAGES


def extract_final_number(text: str, language: str | None = None) -> Decimal | None:
    """The last number in generated text, or None if it holds none.

    ``language`` decides how a lone ``1.234`` / ``1,234`` is read (rule 4). Returns an exact ``Decimal``.

    Raises:
        TypeError: If ``text`` is not a string.
        ValueError: If ``language`` is unknown.

    Example:
        >>> extract_final_number("3 boxes of 12 eggs: 3 × 12 = 36. The answer is 36.")
        Decimal('36')
        >>> extract_final_number("Die Antwort ist 1.234,5 €", language="de"), extract_final_number("٤٢")
        (Decimal('1234.5'), Decimal('42'))
    """
    if not isinstance(text, str):
        raise InvalidTypeError(f"text must be the generated string, got {type(text).__name__} {text!r}")
    decimal_comma = _decimal_comma(language)
    normalized = _normalize_digits(text)
    runs = list(_RUN.finditer(normalized))
    if not runs:
        cjk_runs = _CJK_RUN.findall(text)
        return Decimal(_read_cjk(cjk_runs[-1])) if cjk_runs else None
    last = runs[-1]
    value, offset = _read_last_number(last.group(), decimal_comma)
    start = last.start() + offset
    signed = start > 0 and normalized[start - 1] == "-" and (start == 1 or not _joins(normalized[start - 2]))
    return -value if signed else value


def parse_number(text: str, language: str | None = None) -> Decimal:
    """Read a string that is exactly one number (a gold answer, or an extracted answer kept as text).

    Raises:
        TypeError: If ``text`` is not a string.
        ValueError: If ``text`` is not exactly one number.

    Example:
        >>> parse_number(" 1,234 "), parse_number("18.0")
        (Decimal('1234'), Decimal('18.0'))
    """
    if not isinstance(text, str):
        raise InvalidTypeError(f"expected a string holding one number, got {type(text).__name__} {text!r}")
    stripped = text.strip()
    normalized = _normalize_digits(stripped)
    body = normalized[1:] if normalized.startswith("-") else normalized
    whole_run = _RUN.fullmatch(body) is not None and _read_run(body, _decimal_comma(language)) is not None
    whole_cjk = _CJK_RUN.fullmatch(stripped) is not None
    if not (whole_run or whole_cjk):
        raise InvalidValueError(
            f"{text!r} is not a single number; expected digits with optional sign, thousands separators and "
            "decimal part, such as '1,234.5' or '-7' (use extract_final_number for free text)"
        )
    value = extract_final_number(stripped, language)
    if value is None:  # pragma: no cover - excluded by the checks above
        raise AssertionError(f"unreachable: {text!r} matched a number pattern but gave no number")
    return value


def _as_decimal(value: object, role: str, language: str | None) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise InvalidTypeError(
            f"{role}={value!r} must be a number (int, float, Decimal) or a string holding one number, "
            f"not {type(value).__name__}"
        )
    if isinstance(value, str):
        return parse_number(value, language)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidValueError(f"{role}={value!r} is not a finite number")
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation as error:  # pragma: no cover - every int/Decimal/finite float converts
        raise InvalidValueError(f"{role}={value!r} is not a number") from error
    if not number.is_finite():
        raise InvalidValueError(f"{role}={value!r} is not a finite number")
    return number


def numbers_equal(
    pred: str | int | float | Decimal | None, gold: str | int | float | Decimal, language: str | None = None
) -> bool:
    """Whether a predicted number equals the gold number, compared as exact decimals.

    ``"18"``, ``18``, ``18.0`` and ``Decimal("18.00")`` are equal; floats are read through their shortest repr.
    There is no tolerance: MGSM answers are integers. A ``pred`` of None (no number generated) is wrong.

    Raises:
        TypeError: If an argument has another type (bools are refused).
        ValueError: If a string is not exactly one number, or a value is NaN or infinite.

    Example:
        >>> numbers_equal("18", 18.0), numbers_equal(None, 18), numbers_equal(Decimal("1234"), "1,234")
        (True, False, True)
    """
    gold_number = _as_decimal(gold, "gold", language)
    if pred is None:
        return False
    return _as_decimal(pred, "pred", language) == gold_number


GoldNumber = str | int | float | Decimal


def _is_gold_number(value: object) -> bool:
    return isinstance(value, (str, int, float, Decimal)) and not isinstance(value, bool)


class NumberMatchAccuracy(PerLanguageMeanMetric):
    """Fraction of generations whose last number equals the gold number, per language and macro-averaged.

    ``compute()`` returns ``<lang>/accuracy``, ``<lang>/no_number_rate`` and their macro averages.

    Args:
        languages: Language labels this metric will see.
        **kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> metric = NumberMatchAccuracy(languages=["de"])
        >>> generations = ["Also 3 + 4 = 7. Die Antwort ist 1.234.", "keine Ahnung"]
        >>> metric.update(generations, [1234, "5"], language="de")
        >>> {key: float(value) for key, value in metric.compute().items() if key.startswith("de/")}
        {'de/accuracy': 0.5, 'de/no_number_rate': 0.5}
    """

    score_names: ClassVar[tuple[str, ...]] = ("accuracy", "no_number_rate")

    def score_items(
        self, preds: Sequence[str], targets: Sequence[GoldNumber | Sequence[GoldNumber]], language: str
    ) -> list[tuple[float, ...]]:
        """Score a batch of generations of one language: ``(correct, no_number)`` per generation.

        Raises:
            TypeError: If an input has the wrong type.
            ValueError: If lengths differ, a gold string is not one number, or the language is not the metric's.
        """
        position = self._language_position(language)
        preds = check_predictions(preds)
        golds = reference_lists(preds, targets, _is_gold_number, "a number or a string holding one number")
        code = self.language_codes[position]
        rows = []
        for pred, gold_numbers in zip(preds, golds, strict=True):
            number = extract_final_number(pred, code)
            correct = any(numbers_equal(number, gold, code) for gold in gold_numbers)
            rows.append((float(correct), float(number is None)))
        return rows
