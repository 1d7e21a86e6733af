"""CrossIn instruction tuning data (:mod:`data_modules.crossin_mixture`), with the loss on responses only.

Validation dataloaders are the mixture's modes (``base``, ``en2x``, ``x2en``, ``trans``), logged as
``val/<mode>/loss`` and ``val/<mode>/perplexity``. ``adamergex crossin build --config <the same config> --out
mix.jsonl`` writes the mixture for inspection.
"""

from __future__ import annotations

import random
from typing import Any, Literal

from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from adamergex_pl.errors import InvalidValueError
from data_modules.base import Examples, TokenizedDataModule, check_languages, check_split_options
from data_modules.crossin_mixture import TRANSLATION_INSTRUCTION, CrossInMixture, Row
from data_modules.instruction_format import InstructionFormat, PromptFormat
from data_modules.sources import DataSource


class CrossInDataModule(TokenizedDataModule):
    """CrossIn's cross-lingual instruction mixture (arXiv:2404.11932) as a DataModule.

    Args:
        parallel: one Alpaca-style source per language, each with its ``language`` (English and the targets),
            aligned item by item, e.g. ``{path: MBZUAI/Bactrian-X, name: zh, language: zh}``.
        base: the English base instruction set of mode 0, e.g. ``{path: garage-bAInd/Open-Platypus}``.
        variant: ``base``, ``en2x``, ``x2en``, ``x2x``, optionally ``+trans``; exclusive with ``modes``.
        modes: the modes as numbers, 0 base, 1 en2x, 2 x2en, 3 trans; exclusive with ``variant``.
        n: rows per cross-lingual mode: a number of seeded draws (the paper: 3000, 6000, 15000) or ``all``.
        languages: parallel languages to use (default: all parallel sources'); must include ``en``.
        align_on: align parallel items on this record field (``id`` for Bactrian-X) instead of positions.
        language_tag: the tag appended to inputs after a newline, over ``{language}`` and ``{name}``; null: none.
        translation_instruction: the instruction of translation rows (mode 3).
        prompt_format: ``alpaca``, ``plain`` or ``chat`` (the tokenizer's chat template).
        val_fraction: hold out this fraction of parallel items and base rows for validation.
        max_val_samples: keep at most this many validation rows per mode (seeded).
        **loader: :class:`~data_modules.base.TokenizedDataModule`'s loader options (``tokenizer``,
            ``batch_size``, ...).
        max_length: longest example in tokens (longer ones are cut; rows left without response are dropped).
        seed: seed of the draws, of the validation split and of the shuffling (the paper: 0).

    Raises:
        InvalidValueError: variant and modes both (or neither) given, an unknown variant or mode, a mode
            without its source, a bad ``n``, tag, prompt format or fraction.

    Example:
        .. code-block:: yaml

            data:
              class_path: data_modules.CrossInDataModule
              init_args:
                parallel: [{path: MBZUAI/Bactrian-X, name: en, language: en},
                           {path: MBZUAI/Bactrian-X, name: zh, language: zh}]
                align_on: id
                base: {path: garage-bAInd/Open-Platypus}
                variant: x2x+trans
                n: 6000
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
        prompt_format: PromptFormat = "alpaca",
        val_fraction: float = 0.0,
        max_val_samples: int | None = None,
        max_length: int = 4096,
        seed: int = 0,
        **loader: Any,
    ) -> None:
        super().__init__(max_length=max_length, seed=seed, **loader)
        check_languages(
            self, None, {"parallel": list(parallel or []), "base": [base] if base else []}, languages or []
        )
        self.mixture = CrossInMixture(
            parallel=parallel,
            base=base,
            variant=variant,
            modes=modes,
            n=n,
            languages=languages,
            align_on=align_on,
            language_tag=language_tag,
            translation_instruction=translation_instruction,
            val_fraction=val_fraction,
            seed=seed,
        )
        self.format = InstructionFormat(prompt_format)
        check_split_options(max_val_samples=max_val_samples)
        self.max_val_samples = max_val_samples
        self.train_rows: list[Row] = []
        self.val_rows: list[Row] = []

    def check_local_records(self) -> None:
        """Compose the mixture once, without tokenizing, when all its sources are local files (the pipeline
        does, before its first fit), so that a record without instruction or output is refused early.

        Raises:
            ValueError: a record without a field CrossIn needs, or data that do not align.
        """
        sources = [
            *self.mixture.parallel_sources,
            *([self.mixture.base_source] if self.mixture.base_source else []),
        ]
        if sources and all(source.is_local for source in sources):
            self.mixture.build()

    def _tokenize(self, rows: list[Row], what: str) -> Examples:
        examples, dropped = self.format.tokenize(rows, self.tokenizer, self.max_length)
        if dropped:
            rank_zero_info(
                f"CrossIn {what}: dropped {dropped} of {len(rows)} rows whose prompt alone reaches "
                f"max_length={self.max_length}"
            )
        if rows and not examples:
            raise InvalidValueError(
                f"CrossIn {what}: no rows left after dropping the {dropped} whose prompt alone reaches "
                f"max_length={self.max_length}; raise max_length"
            )
        return examples

    @override
    def build_examples(self) -> tuple[Examples, dict[str, Examples], dict[str, Examples]]:
        self.train_rows, self.val_rows = self.mixture.build()
        counts = CrossInMixture.counts(self.train_rows)
        rank_zero_info(f"CrossIn mixture (modes {list(self.mixture.modes)}): {counts} training rows")
        train = self._tokenize(self.train_rows, "training data")
        val: dict[str, Examples] = {}
        for name in CrossInMixture.counts(self.val_rows):
            rows = [row for row in self.val_rows if row["mode_name"] == name]
            if self.max_val_samples is not None and len(rows) > self.max_val_samples:
                keep = sorted(random.Random(self.seed).sample(range(len(rows)), self.max_val_samples))
                rows = [rows[i] for i in keep]
            val[name] = self._tokenize(rows, f"validation data ({name})")
        return train, val, {}
