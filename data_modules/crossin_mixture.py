"""CrossIn data modes and the paper's named variants (Lin et al., 2024, arXiv:2404.11932).

Modes of a training row (``x`` is a non-English language of the parallel set):

* 0 ``base``  — the English base instruction set, as is;
* 1 ``en2x``  — English instruction and input, tag ``[x]``, response in ``x``;
* 2 ``x2en``  — instruction and input in ``x``, tag ``[en]``, English response;
* 3 ``trans`` — "Translate the following sentence into English.", input the ``x`` instruction, output the
  English instruction.

Variants: ``base`` = {0}, ``en2x`` = {0, 1}, ``x2en`` = {0, 2}, ``x2x`` = {0, 1, 2}; the suffix ``+trans``
adds mode 3 (``x2x+trans`` = {0, 1, 2, 3}). A mixture is chosen by ``variant`` or by ``modes``, never both.
"""

from __future__ import annotations

import random
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from adamergex_pl.atomic_files import write_jsonl_atomic
from adamergex_pl.errors import InvalidValueError, reraise_os_error
from adamergex_pl.metrics.languages import LANGUAGES, normalize_language
from data_modules.base import check_split_options
from data_modules.instruction_format import PromptTemplate
from data_modules.sources import DataSource, load_records

BASE, EN2X, X2EN, TRANS = 0, 1, 2, 3
MODE_NAMES: dict[int, str] = {BASE: "base", EN2X: "en2x", X2EN: "x2en", TRANS: "trans"}
CROSS_LINGUAL_MODES = (EN2X, X2EN, TRANS)
VARIANTS: dict[str, tuple[int, ...]] = {
    "base": (BASE,),
    "en2x": (BASE, EN2X),
    "x2en": (BASE, X2EN),
    "x2x": (BASE, EN2X, X2EN),
}
TRANS_SUFFIX = "+trans"
FIELDS = ("instruction", "input", "output")
ENGLISH = "en"
TRANSLATION_INSTRUCTION = "Translate the following sentence into English."
Row = dict[str, Any]


def variant_names() -> list[str]:
    """Every accepted variant name: ``base``, ``en2x``, ``x2en``, ``x2x`` and each with ``+trans``."""
    return [*VARIANTS, *(name + TRANS_SUFFIX for name in VARIANTS)]


def variant_modes(variant: str) -> tuple[int, ...]:
    """The sorted modes of a named variant (case-insensitive, spaces ignored).

    Raises:
        InvalidValueError: an unknown variant.

    Example:
        >>> variant_modes("x2x+Trans")
        (0, 1, 2, 3)
    """
    if not isinstance(variant, str):
        raise InvalidValueError(f"variant={variant!r} must be a string such as 'x2x' or 'x2x+trans'")
    key = "".join(variant.split()).lower()
    trans = key.endswith(TRANS_SUFFIX)
    stem = key[: -len(TRANS_SUFFIX)] if trans else key
    if stem not in VARIANTS:
        raise InvalidValueError(
            f"variant={variant!r} is not a CrossIn variant; expected one of {', '.join(variant_names())} "
            "(or give modes: a list drawn from 0 base, 1 en2x, 2 x2en, 3 trans)"
        )
    return (*VARIANTS[stem], TRANS) if trans else VARIANTS[stem]


def _check_modes(modes: Sequence[int]) -> tuple[int, ...]:
    if isinstance(modes, (str, bytes)) or not isinstance(modes, Sequence) or not modes:
        raise InvalidValueError(
            f"modes={modes!r} must be a non-empty list drawn from 0 (base), 1 (en2x), 2 (x2en), 3 (trans), "
            "e.g. [0, 1, 2]"
        )
    for mode in modes:
        if isinstance(mode, bool) or not isinstance(mode, int) or mode not in MODE_NAMES:
            raise InvalidValueError(
                f"modes={list(modes)} contains {mode!r}; every mode is one of 0 (base), 1 (en2x), 2 (x2en), "
                "3 (trans)"
            )
    if len(set(modes)) != len(modes):
        raise InvalidValueError(f"modes={list(modes)} lists a mode twice; list each mode once")
    return tuple(sorted(modes))


def resolve_modes(variant: str | None, modes: Sequence[int] | None) -> tuple[int, ...]:
    """The sorted modes of a mixture given by exactly one of ``variant`` and ``modes``.

    Raises:
        InvalidValueError: both or neither given, an unknown variant, or a bad mode list.

    Example:
        >>> resolve_modes("en2x", None), resolve_modes(None, [2, 0])
        ((0, 1), (0, 2))
    """
    if variant is not None and modes is not None:
        raise InvalidValueError(
            f"variant={variant!r} and modes={list(modes)} are both set; give one of them (set the other to "
            f"null), e.g. variant: x2x+trans or modes: [0, 1, 2, 3]"
        )
    if variant is None and modes is None:
        raise InvalidValueError(
            f"no CrossIn mixture chosen; set variant (one of {', '.join(variant_names())}) or modes "
            "(a list drawn from 0 base, 1 en2x, 2 x2en, 3 trans)"
        )
    return variant_modes(variant) if variant is not None else _check_modes(modes)


def mode_name(mode: int) -> str:
    """``base``, ``en2x``, ``x2en`` or ``trans``."""
    return MODE_NAMES[mode]


def language_code(language: str, what: str) -> str:
    """The ISO 639-1 code of ``language`` (``"Chinese"``, ``"zh-CN"`` → ``"zh"``), refusing unknown ones."""
    try:
        return normalize_language(language)
    except (TypeError, ValueError) as err:
        raise InvalidValueError(f"{what}: {err}") from err


def instruction_record(record: dict[str, Any], where: str) -> dict[str, str]:
    """``{"instruction", "input", "output"}`` of a record, as strings (a missing input is ""); or InvalidValueError."""
    missing = [f for f in ("instruction", "output") if f not in record]
    if missing:
        raise InvalidValueError(
            f"{where} lacks field(s) {missing}; its fields are {sorted(record)}. CrossIn reads Alpaca-style "
            "records with instruction, input (optional) and output"
        )
    row = {field: "" if record.get(field) is None else record[field] for field in FIELDS}
    for field, value in row.items():
        if not isinstance(value, str):
            raise InvalidValueError(f"{where}: field {field!r} is {type(value).__name__}, expected text")
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
        >>> data.languages
        ('en', 'zh')
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
        """Read one source per language (``language`` set) and align them, on ``align_on`` or on positions.

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
        return (
            cls._by_position(raw, by_language)
            if align_on is None
            else cls._by_key(raw, by_language, align_on)
        )

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


class CrossInMixture:
    """Composes the CrossIn mixture from its sources (no tokenizer needed).

    Args:
        parallel, base, variant, modes, n, languages, align_on, language_tag, translation_instruction,
            val_fraction, seed: as in :class:`~data_modules.crossin.CrossInDataModule`.

    Raises:
        InvalidValueError: conflicting or unknown variant/modes, a mode without its source, a bad ``n``, tag or
            fraction.

    Example:
        >>> mixture = CrossInMixture(parallel=[DataSource("builtin:crossin/alpaca_en.jsonl", language="en"),
        ...                                    DataSource("builtin:crossin/alpaca_zh.jsonl", language="zh")],
        ...                          base=DataSource("builtin:crossin/base_en.jsonl"), variant="x2x", n=8)
        >>> train, val = mixture.build()
        >>> CrossInMixture.counts(train)  # doctest: +SKIP
        {'base': 12, 'en2x': 8, 'x2en': 8}
    """

    def __init__(
        self,
        parallel: list[DataSource] | None = None,
        base: DataSource | None = None,
        variant: str | None = None,
        modes: list[int] | None = None,
        n: int | Literal["all"] = "all",
        languages: list[str] | None = None,
        align_on: str | None = None,
        language_tag: str | None = "[{language}]",
        translation_instruction: str = TRANSLATION_INSTRUCTION,
        val_fraction: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.modes = resolve_modes(variant, modes)
        self.cross_modes = tuple(m for m in self.modes if m in CROSS_LINGUAL_MODES)
        if BASE in self.modes and base is None:
            raise InvalidValueError(
                "the mixture has mode 0 (base) but no base source; set base (e.g. {path: "
                "garage-bAInd/Open-Platypus}) or choose modes without 0"
            )
        if self.cross_modes and not parallel:
            names = [mode_name(m) for m in self.cross_modes]
            raise InvalidValueError(
                f"the mixture has cross-lingual modes {names} but no parallel sources; set parallel to one "
                "source per language (English and the target languages), or use variant: base"
            )
        if isinstance(n, str) and n.lower() == "all":
            n = "all"
        elif isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidValueError(f"n={n!r} must be a positive number of draws per mode, or 'all'")
        check_split_options(val_fraction=val_fraction)
        if not isinstance(translation_instruction, str) or not translation_instruction.strip():
            raise InvalidValueError("translation_instruction must be a non-empty sentence")
        self.tag = None
        if language_tag:
            self.tag = PromptTemplate(language_tag, "language_tag")
            self.tag.check_fields(("language", "name"), "a language tag")
        self.parallel_sources = list(parallel or [])
        self.base_source = base
        self.n = n
        self.languages = list(languages) if languages else None
        self.align_on = align_on
        self.translation_instruction = translation_instruction
        self.val_fraction = val_fraction
        self.seed = seed

    def build(self) -> tuple[list[Row], list[Row]]:
        """Load the sources and compose ``(train_rows, val_rows)``; raises as :meth:`ParallelInstructions.load`."""
        parallel = None
        if self.cross_modes:
            parallel = ParallelInstructions.load(self.parallel_sources, self.languages, self.align_on)
        base = None
        if BASE in self.modes:
            base = [
                instruction_record(r, f"{self.base_source.describe()} record {i}")
                for i, r in enumerate(load_records(self.base_source))
            ]
            if not base:
                raise InvalidValueError(f"base source {self.base_source.describe()} holds no records")
        elif self.base_source is not None:
            warnings.warn(
                f"base source {self.base_source.describe()} is ignored: modes {list(self.modes)} have no 0",
                stacklevel=2,
            )
        return self.compose(parallel, base)

    def compose(
        self, parallel: ParallelInstructions | None, base: Sequence[dict[str, str]] | None
    ) -> tuple[list[Row], list[Row]]:
        """The mixture of in-memory data: :meth:`build` without the loading."""
        split_rng = random.Random(f"crossin-validation-{self.seed}")
        train: list[Row] = []
        val: list[Row] = []
        if BASE in self.modes:
            held_out = self._held_out(len(base), split_rng)
            for index, record in enumerate(base):
                row = {"mode": BASE, "mode_name": mode_name(BASE), "language": ENGLISH, "index": index}
                (val if index in held_out else train).append({**row, **record})
        if self.cross_modes:
            held_out = self._held_out(len(parallel), split_rng)
            targets = [lang for lang in parallel.languages if lang != ENGLISH]
            pool = [i for i in range(len(parallel)) if i not in held_out]
            if not pool:
                raise InvalidValueError(
                    f"val_fraction={self.val_fraction} leaves no parallel item for training out of "
                    f"{len(parallel)}; lower it"
                )
            for language, index in self._draws(pool, targets):
                train.extend(self._cross_rows(parallel, language, index))
            for index in sorted(held_out):
                val.extend(self._cross_rows(parallel, split_rng.choice(targets), index))
        return train, val

    def _held_out(self, size: int, rng: random.Random) -> set[int]:
        if not self.val_fraction:
            return set()
        count = max(1, round(self.val_fraction * size))
        return set(rng.sample(range(size), min(count, size)))

    def _draws(self, pool: list[int], targets: list[str]) -> list[tuple[str, int]]:
        rng = random.Random(self.seed)
        if self.n == "all":
            return [(rng.choice(targets), index) for index in pool]
        return [(rng.choice(targets), pool[rng.randrange(len(pool))]) for _ in range(self.n)]

    def _tagged(self, text: str, language: str) -> str:
        if self.tag is None:
            return text
        tag = self.tag.render({"language": language, "name": LANGUAGES.get(language, (language,))[0]})
        return f"{text}\n{tag}" if text else tag

    def _cross_rows(self, parallel: ParallelInstructions, language: str, index: int) -> list[Row]:
        english, other = parallel.record(ENGLISH, index), parallel.record(language, index)
        rows = []
        for mode in self.cross_modes:
            if mode == EN2X:
                text = (english["instruction"], self._tagged(english["input"], language), other["output"])
            elif mode == X2EN:
                text = (other["instruction"], self._tagged(other["input"], ENGLISH), english["output"])
            else:  # TRANS
                text = (self.translation_instruction, other["instruction"], english["instruction"])
            row = {"mode": mode, "mode_name": mode_name(mode), "language": language, "index": index}
            if self.align_on is not None:
                row["key"] = parallel.keys[index]
            rows.append({**row, **dict(zip(("instruction", "input", "output"), text, strict=True))})
        return rows

    @staticmethod
    def counts(rows: Sequence[Row]) -> dict[str, int]:
        """Rows per mode name, in mode order."""
        counter = Counter(row["mode"] for row in rows)
        return {mode_name(mode): counter[mode] for mode in sorted(counter)}

    @staticmethod
    def language_counts(rows: Sequence[Row]) -> dict[str, int]:
        """Cross-lingual rows per target language (base rows are left out)."""
        counter = Counter(row["language"] for row in rows if row["mode"] != BASE)
        return dict(sorted(counter.items()))


USAGE = (
    "usage: adamergex crossin build --config CONFIG.yaml --out MIX.jsonl [--split train|val|all] [--rendered]"
)


def _parser():
    from jsonargparse import ActionConfigFile, ActionYesNo, ArgumentParser
    from lightning.pytorch import LightningDataModule

    parser = ArgumentParser(
        prog="adamergex crossin build",
        description="Write the CrossIn training mixture of a config to JSONL (see data_modules/crossin_mixture.py).",
        exit_on_error=False,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="an adamergex fit config (repeatable)")
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    # the other sections of a fit config: accepted so that the same file works, otherwise unused
    parser.add_argument("--model", type=dict | None, default=None, help="unused (the fit config's model)")
    parser.add_argument("--trainer", type=dict | None, default=None, help="unused (the fit config's trainer)")
    parser.add_argument("--seed_everything", type=int | bool | None, default=None, help="unused")
    parser.add_argument("--ckpt_path", type=str | None, default=None, help="unused")
    parser.add_argument("--out", type=str, required=True, help="the JSONL file to write")
    parser.add_argument(
        "--split", type=Literal["train", "val", "all"], default="train", help="which rows to write"
    )
    parser.add_argument(
        "--rendered",
        action=ActionYesNo,
        default=False,
        help="add the prompt and completion text of every row",
    )
    return parser


def _tokenizer_name(config: Any) -> str | None:
    data_args = config.data.init_args
    if getattr(data_args, "tokenizer", None):
        return data_args.tokenizer
    model = config.model or {}
    return (model.get("init_args") or {}).get("base_model")


def build(argv: list[str]) -> int:
    """``adamergex crossin build ...``."""
    parser = _parser()
    config = parser.parse_args(argv)
    datamodule = parser.instantiate(config).data
    if not hasattr(datamodule, "mixture"):
        raise InvalidValueError(
            f"data.class_path={config.data.class_path!r} builds no CrossIn mixture; expected "
            "data_modules.CrossInDataModule"
        )
    train, val = datamodule.mixture.build()
    rows = []
    if config.split in ("train", "all"):
        rows += [{"split": "train", **row} for row in train]
    if config.split in ("val", "all"):
        rows += [{"split": "val", **row} for row in val]
    if config.rendered:
        tokenizer = None
        if datamodule.format.prompt_format == "chat":
            from adamergex_pl.training.base_model import load_tokenizer

            name = _tokenizer_name(config)
            if name is None:
                raise InvalidValueError(
                    "--rendered with prompt_format chat needs a tokenizer; set model.init_args.base_model or "
                    "--data.init_args.tokenizer"
                )
            tokenizer = load_tokenizer(name)
        for row in rows:
            row["prompt"], row["completion"] = datamodule.format.render(row, tokenizer)
    out = Path(config.out)
    try:
        write_jsonl_atomic(out, rows)
    except Exception as err:  # a read-only folder or a full disk is one line; nothing is left behind
        reraise_os_error(err, "--out", out)
    print(
        f"wrote {len(rows)} rows to {out} (modes {list(datamodule.mixture.modes)}, seed {datamodule.seed}): "
        f"train {CrossInMixture.counts(train)}, val {CrossInMixture.counts(val)}; cross-lingual rows per "
        f"target language (train) {CrossInMixture.language_counts(train)}"
    )
    return 0


SUBCOMMANDS = {"build": build}


def main(argv: list[str]) -> int:
    """``adamergex crossin <subcommand> ...``."""
    if not argv or argv[0] in ("-h", "--help"):
        print(f"{USAGE}\n\nRun 'adamergex crossin build --help' for every option.")
        return 0 if argv else 2
    if argv[0] not in SUBCOMMANDS:
        message = f"unknown crossin subcommand {argv[0]!r}; expected one of {list(SUBCOMMANDS)}"
        print(f"adamergex: error: {message}", file=sys.stderr)
        return 2
    return SUBCOMMANDS[argv[0]](argv[1:])
