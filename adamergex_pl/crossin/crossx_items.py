"""CrossX benchmark items (SeaEval's Cross-MMLU, Cross-LogiQA, Cross-XQuAD): one question in several languages.

File format (SeaEval, ``SeaEval/SeaEval_datasets`` configs ``cross_mmlu``, ``cross_logiqa``, ``cross_xquad``,
and the reconstructed copies in ``shared/anchor_data/crossin/SeaEval_datasets_reconstructed/``): a list of
items, each ``{"id": ..., "<Language>": {"question", "choices", "answer", "context"?}, ...}`` where
``<Language>`` is an English language name (``English``, ``Chinese``, ``Vietnamese``, ``Spanish``,
``Indonesian``, ``Malay``, ``Filipino``) or a code, ``choices`` are strings ``"(A) ..."`` and ``answer`` is
the gold choice string (or its letter). Cross-LogiQA and Cross-XQuAD add a ``context`` passage.

Item ``i`` is the ``i``-th record of the file in every language; its gold option must be the same letter in
every language (the benchmark is built that way, and consistency is meaningless otherwise). A language that
an item lacks (missing key or null) is a missing cell, which the consistency metric leaves out.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from adamergex_pl.crossin.parallel import language_code
from adamergex_pl.data.sources import DataSource, load_records
from adamergex_pl.errors import InvalidValueError
from adamergex_pl.metrics.options import option_index

_TAGGED = re.compile(r"^\(([A-Z])\)\s?(.*)$", re.DOTALL)

__all__ = ["CrossXQuestion", "load_crossx_items"]


@dataclass(frozen=True)
class CrossXQuestion:
    """One item in one language.

    Args:
        question: the question.
        choices: the choice strings as stored, e.g. ``"(A) responsible"``.
        answer: the 0-based index of the gold choice.
        context: the passage (Cross-LogiQA, Cross-XQuAD), or "".
    """

    question: str
    choices: tuple[str, ...]
    answer: int
    context: str = ""

    def option_fields(self, k: int) -> dict[str, str]:
        """Fields of choice ``k`` for an option template: ``letter`` ``B``, ``tag`` ``(B)``, ``text`` (the choice
        without its tag) and ``choice`` (as stored)."""
        letter = string.ascii_uppercase[k]
        match = _TAGGED.match(self.choices[k])
        text = match.group(2) if match and match.group(1) == letter else self.choices[k]
        return {"letter": letter, "tag": f"({letter})", "text": text, "choice": self.choices[k]}

    def prompt_fields(self) -> dict[str, str]:
        """Fields for a prompt template: ``question``, ``context`` (the passage and a blank line, or ""),
        ``choices`` (one per line)."""
        return {
            "question": self.question,
            "context": f"{self.context}\n\n" if self.context else "",
            "choices": "\n".join(self.choices),
        }


def _question(cell: dict[str, Any], where: str) -> CrossXQuestion:
    missing = [f for f in ("question", "choices", "answer") if f not in cell]
    if missing:
        raise InvalidValueError(f"{where} lacks {missing}; a CrossX cell has question, choices, answer")
    choices = cell["choices"]
    if isinstance(choices, str) or not isinstance(choices, Sequence) or not 2 <= len(choices) <= 26:
        raise InvalidValueError(f"{where}: choices must be a list of 2 to 26 strings, got {choices!r}")
    answer = cell["answer"]
    if answer in choices:
        gold = list(choices).index(answer)
    else:
        try:
            gold = option_index(str(answer), len(choices))
        except ValueError as err:
            raise InvalidValueError(
                f"{where}: answer {answer!r} is neither one of its choices nor an option letter"
            ) from err
    return CrossXQuestion(
        str(cell["question"]), tuple(map(str, choices)), gold, str(cell.get("context") or "")
    )


def load_crossx_items(source: DataSource, languages: Sequence[str]) -> list[dict[str, CrossXQuestion]]:
    """The items of a CrossX file in ``languages``: per item, its questions keyed by language code.

    Args:
        source: the benchmark file or hub dataset (SeaEval format, see the module docstring).
        languages: language codes to keep (e.g. ``["en", "zh", "vi", "es"]``).

    Returns:
        One dict per item, in file order (the item index), without the languages the item lacks.

    Raises:
        InvalidValueError: an unknown language key, a malformed cell, a gold letter that differs between
            languages, or a requested language that no item has.
        InputNotFoundError: a missing file.
    """
    records = load_records(source)
    if not records:
        raise InvalidValueError(f"CrossX benchmark {source.describe()} holds no items")
    wanted = set(languages)
    items: list[dict[str, CrossXQuestion]] = []
    seen: set[str] = set()
    for position, record in enumerate(records):
        item: dict[str, CrossXQuestion] = {}
        for key, cell in record.items():
            if key == "id" or not isinstance(cell, dict):
                continue  # the id, or a language this item lacks (null in a hub dataset)
            code = language_code(key, f"{source.describe()} item {position}")
            seen.add(code)
            if code in wanted:
                item[code] = _question(cell, f"{source.describe()} item {position} ({key})")
        golds = {q.answer for q in item.values()}
        if len(golds) > 1:
            letters = {lang: string.ascii_uppercase[q.answer] for lang, q in item.items()}
            raise InvalidValueError(
                f"{source.describe()} item {position} (id {record.get('id')!r}) has different gold options per "
                f"language {letters}; CrossX items must share their gold option"
            )
        items.append(item)
    absent = [lang for lang in languages if lang not in seen]
    if absent:
        raise InvalidValueError(
            f"CrossX benchmark {source.describe()} has no items in {absent}; its languages are {sorted(seen)}"
        )
    return items
