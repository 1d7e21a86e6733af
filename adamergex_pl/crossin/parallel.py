"""Parallel instruction data: one Alpaca-style record set per language, aligned item by item.

Every language's records have the fields ``instruction``, ``input`` (optional; missing or None reads as "") and
``output``: Stanford Alpaca and its translations, or a hub dataset with one configuration per language such as
``MBZUAI/Bactrian-X`` (``{path: MBZUAI/Bactrian-X, name: zh, language: zh}``).

Alignment. Item ``i`` is the same instruction in every language. By default that is the ``i``-th record of
each source, and the sources must then hold the same number of records. A translated set that dropped or
reordered rows (Bactrian-X removed rows with an empty output in some versions) is aligned on a key field
instead (``align_on: id``): the items are the keys present in every language, in the English order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from adamergex_pl.data.sources import DataSource, load_records
from adamergex_pl.errors import InvalidValueError
from adamergex_pl.metrics.languages import normalize_language

FIELDS = ("instruction", "input", "output")
ENGLISH = "en"

__all__ = ["ENGLISH", "FIELDS", "ParallelInstructions", "language_code"]


def language_code(language: str, what: str) -> str:
    """The ISO 639-1 code of ``language`` (``"Chinese"``, ``"zh-CN"`` → ``"zh"``), refusing unknown ones."""
    try:
        return normalize_language(language)
    except (TypeError, ValueError) as err:
        raise InvalidValueError(f"{what}: {err}") from err


def instruction_record(record: dict[str, Any], where: str) -> dict[str, str]:
    """``{"instruction", "input", "output"}`` of a record, as strings (a missing or None input is "").

    Raises:
        InvalidValueError: the record lacks ``instruction`` or ``output``, or a field is not text.
    """
    missing = [f for f in ("instruction", "output") if f not in record]
    if missing:
        raise InvalidValueError(
            f"{where} lacks field(s) {missing}; its fields are {sorted(record)}. CrossIn reads Alpaca-style "
            "records with instruction, input (optional) and output"
        )
    row = {}
    for field in FIELDS:
        value = record.get(field)
        value = "" if value is None else value
        if not isinstance(value, str):
            raise InvalidValueError(f"{where}: field {field!r} is {type(value).__name__}, expected text")
        row[field] = value
    return row


@dataclass(frozen=True)
class ParallelInstructions:
    """Instruction records aligned across languages: ``record(language, i)`` is item ``i`` in ``language``.

    Args:
        records: per language code, the aligned records (every list has the same length).
        keys: per item, its alignment key (the ``align_on`` value, or the record position).

    Example:
        >>> data = ParallelInstructions.load([DataSource("builtin:crossin/alpaca_en.jsonl", language="en"),
        ...                                   DataSource("builtin:crossin/alpaca_zh.jsonl", language="zh")])
        >>> data.languages, len(data), data.record("zh", 0)["instruction"][:4]  # doctest: +SKIP
        (('en', 'zh'), 20, '给出三个保持')
    """

    records: dict[str, list[dict[str, str]]]
    keys: list[Any]

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self.records)

    def __len__(self) -> int:
        return len(self.keys)

    def record(self, language: str, index: int) -> dict[str, str]:
        """Item ``index`` in ``language``: ``{"instruction", "input", "output"}``."""
        return self.records[language][index]

    @classmethod
    def load(
        cls,
        sources: Sequence[DataSource],
        languages: Sequence[str] | None = None,
        align_on: str | None = None,
    ) -> ParallelInstructions:
        """Read one source per language and align them.

        Args:
            sources: one source per language, each with its ``language`` set.
            languages: keep only these languages (default: every source's); must include English.
            align_on: align items on this record field instead of on record positions.

        Raises:
            InvalidValueError: a source without a language, two sources of one language, no English or no other
                language, unequal lengths without ``align_on``, or missing/duplicate keys.
            InputNotFoundError: a missing file.
        """
        by_language: dict[str, DataSource] = {}
        for source in sources:
            if not source.language:
                raise InvalidValueError(
                    f"parallel source {source.describe()} has no language; give each parallel source its "
                    "language, e.g. {path: data/alpaca_zh.jsonl, language: zh}"
                )
            code = language_code(source.language, f"parallel source {source.describe()}")
            if code in by_language:
                raise InvalidValueError(
                    f"two parallel sources have language {code!r} ({by_language[code].describe()} and "
                    f"{source.describe()}); give one source per language"
                )
            by_language[code] = source
        wanted = [language_code(lang, "languages") for lang in languages] if languages else list(by_language)
        absent = [lang for lang in wanted if lang not in by_language]
        if absent:
            raise InvalidValueError(
                f"languages={list(languages or [])} names {absent} but the parallel sources cover "
                f"{sorted(by_language)}; add a source per language or drop it from languages"
            )
        if ENGLISH not in wanted or len(wanted) < 2:
            raise InvalidValueError(
                f"CrossIn needs English and at least one other language in the parallel data, got {wanted}; "
                "add an English source (language: en) and one per target language"
            )
        wanted = [ENGLISH, *(lang for lang in dict.fromkeys(wanted) if lang != ENGLISH)]
        raw = {lang: load_records(by_language[lang]) for lang in wanted}
        for lang, rows in raw.items():
            if not rows:
                raise InvalidValueError(f"parallel source {by_language[lang].describe()} holds no records")
        if align_on is None:
            return cls._by_position(raw, by_language)
        return cls._by_key(raw, by_language, align_on)

    @classmethod
    def _by_position(cls, raw: dict[str, list[dict]], sources: dict[str, DataSource]) -> ParallelInstructions:
        sizes = {lang: len(rows) for lang, rows in raw.items()}
        if len(set(sizes.values())) > 1:
            raise InvalidValueError(
                f"the parallel sources hold different numbers of records {sizes}, so items cannot be aligned by "
                "position; align them on a shared key field instead (align_on: id), or fix the data"
            )
        records = {
            lang: [
                instruction_record(r, f"{sources[lang].describe()} record {i}") for i, r in enumerate(rows)
            ]
            for lang, rows in raw.items()
        }
        return cls(records, list(range(sizes[ENGLISH])))

    @classmethod
    def _by_key(
        cls, raw: dict[str, list[dict]], sources: dict[str, DataSource], align_on: str
    ) -> ParallelInstructions:
        keyed: dict[str, dict[Any, dict]] = {}
        for lang, rows in raw.items():
            table: dict[Any, dict] = {}
            for position, record in enumerate(rows):
                where = f"{sources[lang].describe()} record {position}"
                if align_on not in record:
                    raise InvalidValueError(
                        f"{where} has no field align_on={align_on!r}; its fields are {sorted(record)}"
                    )
                key = record[align_on]
                if key in table:
                    raise InvalidValueError(
                        f"{sources[lang].describe()} holds {align_on}={key!r} twice; alignment keys must be unique"
                    )
                table[key] = instruction_record(record, where)
            keyed[lang] = table
        keys = [key for key in keyed[ENGLISH] if all(key in table for table in keyed.values())]
        if not keys:
            raise InvalidValueError(
                f"no {align_on} value is present in every language {list(keyed)}; check align_on and the sources"
            )
        return cls({lang: [table[key] for key in keys] for lang, table in keyed.items()}, keys)
