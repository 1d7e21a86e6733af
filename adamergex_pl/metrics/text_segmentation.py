"""Script-aware segmentation of text into tokens for the overlap metrics (SQuAD F1, ROUGE-L).

Text is split on whitespace, and every code point of a script written without spaces (Han, Kana, Bopomofo,
Thai, Lao, Khmer, Myanmar) is a token of its own; per character, not per language, so code-mixed text works.
"""

from __future__ import annotations

import unicodedata
from bisect import bisect_right

from adamergex_pl.errors import InvalidTypeError

__all__ = ["is_unsegmented_char", "prepare_text", "segment"]

# Inclusive code point ranges of the scripts written without spaces between words, sorted by start.
_UNSEGMENTED_RANGES: tuple[tuple[int, int], ...] = (
    (0x0E00, 0x0E7F),  # Thai
    (0x0E80, 0x0EFF),  # Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x19E0, 0x19FF),  # Khmer symbols
    (0x2E80, 0x2FDF),  # CJK radicals supplement, Kangxi radicals
    (0x3005, 0x3007),  # 々 〆 〇 (iteration mark, closing mark, ideographic zero)
    (0x3021, 0x3029),  # Hangzhou numerals
    (0x3038, 0x303C),  # more Hangzhou numerals, 〻 〼
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3100, 0x312F),  # Bopomofo
    (0x3190, 0x31BF),  # Kanbun, Bopomofo extended
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK unified ideographs extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA9E0, 0xA9FF),  # Myanmar extended-B
    (0xAA60, 0xAA7F),  # Myanmar extended-A
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # half-width Katakana
    (0x20000, 0x323AF),  # CJK unified ideographs extensions B-H, compatibility supplement
)
_RANGE_STARTS = tuple(start for start, _ in _UNSEGMENTED_RANGES)


def is_unsegmented_char(char: str) -> bool:
    """Whether ``char`` belongs to a script written without spaces between words.

    Example:
        >>> is_unsegmented_char("中"), is_unsegmented_char("ก"), is_unsegmented_char("a")
        (True, True, False)
    """
    point = ord(char)
    position = bisect_right(_RANGE_STARTS, point) - 1
    return position >= 0 and point <= _UNSEGMENTED_RANGES[position][1]


def prepare_text(text: str) -> str:
    """NFKC-normalise and case-fold ``text`` (full-width Latin and digits become ASCII, ``ß`` matches ``ss``).

    Raises:
        TypeError: If ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise InvalidTypeError(f"expected a string, got {type(text).__name__} {text!r}")
    return unicodedata.normalize("NFKC", text).casefold()


def segment(text: str) -> list[str]:
    """Split ``text`` on whitespace, with every unsegmented-script character as a token of its own.

    Example:
        >>> segment("北京大学 in Beijing")
        ['北', '京', '大', '学', 'in', 'Beijing']
    """
    tokens: list[str] = []
    for word in text.split():
        start = 0
        for position, char in enumerate(word):
            if is_unsegmented_char(char):
                if position > start:
                    tokens.append(word[start:position])
                tokens.append(char)
                start = position + 1
        if start < len(word):
            tokens.append(word[start:])
    return tokens
