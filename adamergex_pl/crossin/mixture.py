"""The CrossIn training mixture: an English base set plus cross-lingual rows drawn from parallel data.

CrossIn (Lin et al., 2024, arXiv:2404.11932), for modes ``M`` (see :mod:`adamergex_pl.crossin.modes`), parallel
items ``0..N-1`` in English and the target languages ``X`` (every non-English language), and a seed:

* mode 0 adds every row of the English base set;
* ``n`` draws, each a target language ``x ~ Uniform(X)`` then an item ``i ~ Uniform{0..N-1}`` (with
  replacement), both from ``random.Random(seed)`` in that order; draw ``(x, i)`` gives one row per selected
  cross-lingual mode, so every such mode has exactly ``n`` rows and the modes share their draws (``en2x`` and
  ``x2en`` of one seed see the same items):
  * 1 en→x: English instruction, English input + "\\n" + tag ``[x]``, output in ``x``;
  * 2 x→en: instruction in ``x``, input in ``x`` + "\\n" + tag ``[en]``, English output;
  * 3 translation: ``Translate the following sentence into English.``, input the ``x`` instruction, output
    the English instruction (no tag).
* ``n: all`` takes every item once (in item order) with one drawn language each, instead of ``N`` draws
  with replacement (which would leave about a third of the items out).

An empty input becomes the tag alone (no leading newline). ``language_tag: null`` leaves inputs untagged.

Validation (``val_fraction > 0``): that fraction of the parallel items and of the base rows is held out
first, with its own stream ``random.Random(f"crossin-validation-{seed}")``; the draws then come from the
remaining items only, so no item index (and no base row) is in both splits. Held-out items give one row per
selected mode each, with a drawn language. With ``val_fraction: 0`` the draws run over every item, as the
paper describes (its own random stream is not published, so its exact rows cannot be reproduced).

``X`` is ordered as the languages are given (``languages``, else the parallel sources' order, English
removed); the order decides which language a draw picks, so keep it fixed to reproduce a mixture.
"""

from __future__ import annotations

import random
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from adamergex_pl.crossin.modes import BASE, CROSS_LINGUAL_MODES, EN2X, X2EN, mode_name, resolve_modes
from adamergex_pl.crossin.parallel import ENGLISH, ParallelInstructions, instruction_record
from adamergex_pl.data.sources import DataSource, load_records
from adamergex_pl.data.templates import PromptTemplate
from adamergex_pl.errors import InvalidValueError
from adamergex_pl.metrics.languages import LANGUAGES

TRANSLATION_INSTRUCTION = "Translate the following sentence into English."
Row = dict[str, Any]


class CrossInMixture:
    """Composes the CrossIn mixture from its sources (no tokenizer needed).

    Args:
        parallel: one Alpaca-style source per language, each with ``language`` (English and at least one
            other), aligned item by item; e.g. ``{path: MBZUAI/Bactrian-X, name: zh, language: zh}``.
        base: the English base instruction set (mode 0), e.g. ``{path: garage-bAInd/Open-Platypus}``.
        variant: ``base``, ``en2x``, ``x2en``, ``x2x``, optionally ``+trans`` (exclusive with ``modes``).
        modes: the modes as numbers, 0 base, 1 en2x, 2 x2en, 3 trans (exclusive with ``variant``).
        n: rows per cross-lingual mode: a positive number of draws, or ``all`` (every item once).
        languages: the parallel languages to use (default: every parallel source's); English is required.
        align_on: align parallel items on this field (e.g. ``id``) instead of on record positions.
        language_tag: format of the tag appended to the input, over ``{language}`` (``zh``) and ``{name}``
            (``Chinese``); null for no tag.
        translation_instruction: the instruction of mode-3 rows.
        val_fraction: hold out this fraction of the parallel items and of the base rows for validation.
        seed: seed of the draws and of the validation split.

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
        if not 0.0 <= val_fraction < 1.0:
            raise InvalidValueError(f"val_fraction={val_fraction} must be in [0, 1)")
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

    # ------------------------------------------------------------------ building
    def build(self) -> tuple[list[Row], list[Row]]:
        """Load the sources and compose ``(train_rows, val_rows)``.

        Raises:
            InvalidValueError: sources that do not fit (see :meth:`ParallelInstructions.load`).
            InputNotFoundError: a missing file.
        """
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
        """The mixture of in-memory data (``build`` without the loading); see the module docstring."""
        split_rng = random.Random(f"crossin-validation-{self.seed}")
        train: list[Row] = []
        val: list[Row] = []
        if BASE in self.modes:
            held_out = self._held_out(len(base), split_rng)
            for index, record in enumerate(base):
                row = {
                    "mode": BASE,
                    "mode_name": mode_name(BASE),
                    "language": ENGLISH,
                    "index": index,
                    **record,
                }
                (val if index in held_out else train).append(row)
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
        draws = []
        for _ in range(self.n):
            language = rng.choice(targets)
            draws.append((language, pool[rng.randrange(len(pool))]))
        return draws

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

    # ------------------------------------------------------------------ reporting
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
