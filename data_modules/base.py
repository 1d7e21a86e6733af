"""The shared machinery of the text DataModules: tokenizer, dataloaders, per-language validation, resumption.

A subclass turns its sources into tokenized examples (``{"input_ids": [...], "labels": [...]}``) in
:meth:`TokenizedDataModule.build_examples`; this base class does the rest:

* a training dataloader ordered by ``(seed, epoch)`` that resumes mid-epoch (``state_dict``);
* one validation (and test) dataloader per language, sharded across DDP ranks without padding;
* ``build_evaluator()``: causal-LM loss and perplexity per language (task DataModules override it).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from typing_extensions import override

from adamergex_pl.errors import InvalidValueError
from adamergex_pl.evaluation.language_modeling import Evaluator, LanguageModelingEvaluator
from adamergex_pl.metrics.languages import normalize_language
from adamergex_pl.training.base_model import load_tokenizer
from data_modules.collate import PadCollator
from data_modules.packing import PackingCollator


class ResumableShuffleSampler(DistributedSampler):
    """Shuffles per ``(seed, epoch)``, shards across ranks, and can skip the start of one epoch.

    Args:
        dataset: the training dataset.
        num_replicas: the world size.
        rank: this process's global rank.
        seed: the shuffling seed.
        shuffle: shuffle (training) or keep the dataset order.
    """

    def __init__(
        self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True
    ):
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False
        )
        self._skip: tuple[int, int] | None = None  # (epoch, samples to skip)

    def skip_in_epoch(self, epoch: int, num_samples: int) -> None:
        """On the next pass over ``epoch``, leave out its first ``num_samples`` samples (this rank's count)."""
        self._skip = (epoch, num_samples) if num_samples > 0 else None

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        if self._skip is not None:
            epoch, count = self._skip
            self._skip = None
            if epoch == self.epoch:
                indices = indices[count:]
        return iter(indices)


class EvalShardSampler(DistributedSampler):
    """Evaluation order, sharded across ranks without the padding that would count examples twice.

    Ranks may get one example more or less than each other; evaluation needs no step-wise collectives, and
    metric states are reduced once at the end.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


def generator_for(seed: int) -> torch.Generator:
    """A CPU generator seeded for reproducible sub-sampling."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


Examples = list[dict[str, Any]]


def check_split_options(val_sources: Any = None, val_fraction: float = 0.0, **limits: int | None) -> None:
    """Refuse a ``val_fraction`` outside ``[0, 1)``, one given together with validation sources, and a sample
    limit (``max_samples=0``) that is not a positive integer or null.

    Raises:
        ValueError: naming the option and its value.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise InvalidValueError(f"val_fraction={val_fraction} must be in [0, 1)")
    if val_sources and val_fraction:
        raise InvalidValueError(
            f"val sources and val_fraction={val_fraction} conflict; give validation sources or a fraction"
        )
    for option, value in limits.items():
        if value is not None and value < 1:
            raise InvalidValueError(f"{option}={value} must be a positive integer or null")


class TokenizedDataModule(LightningDataModule):
    """Base class: subclasses implement :meth:`build_examples`.

    Args:
        tokenizer: the tokenizer's hub name, local path or ``builtin:`` name (linked to ``base_model``).
        batch_size: training batch size per device.
        eval_batch_size: validation/test batch size per device (default: ``batch_size``).
        max_length: longest tokenized example, in tokens.
        num_workers: dataloader worker processes.
        seed: seed for sub-sampling, validation carving and shuffling.
        pad_to_multiple_of: round padded lengths up to a multiple of this.
        pack_sequences: pack training examples into shared rows (``data_modules/packing.py``).

    Raises:
        ValueError: non-positive sizes.
    """

    def __init__(
        self,
        tokenizer: str | None = None,
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        max_length: int = 512,
        num_workers: int = 0,
        seed: int = 42,
        pad_to_multiple_of: int | None = None,
        pack_sequences: bool = False,
    ) -> None:
        super().__init__()
        for option, value in (("batch_size", batch_size), ("max_length", max_length)):
            if value < 1:
                raise InvalidValueError(f"{option}={value} must be a positive integer")
        if eval_batch_size is not None and eval_batch_size < 1:
            raise InvalidValueError(f"eval_batch_size={eval_batch_size} must be a positive integer or null")
        self.tokenizer_name = tokenizer
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.max_length = max_length
        self.num_workers = num_workers
        self.seed = seed
        self.pad_to_multiple_of = pad_to_multiple_of
        self.pack_sequences = pack_sequences
        self.tokenizer = None
        self.train_examples: Examples = []
        self.val_examples: dict[str, Examples] = {}
        self.test_examples: dict[str, Examples] = {}
        self._built = False
        self._resume: tuple[int, int] | None = None
        self._first: dict[str, set[int]] = {}

    # ------------------------------------------------------------------ subclass interface
    def build_examples(self) -> tuple[Examples, dict[str, Examples], dict[str, Examples]]:
        """Return ``(train, {lang: val}, {lang: test})`` tokenized examples (``self.tokenizer`` is loaded)."""
        raise NotImplementedError

    def build_evaluator(self) -> Evaluator | None:
        """The evaluator for this data: causal-LM loss and perplexity per evaluation language (``None`` without
        validation or test data)."""
        languages = self.val_languages or self.test_languages
        return LanguageModelingEvaluator(languages) if languages else None

    # ------------------------------------------------------------------ known before any data is read
    def planned_val_languages(self) -> list[str] | None:
        """The validation languages, from the arguments alone (``None`` when only the data tells): what
        ``adamergex pipeline`` checks against its languages before the first fit. Default: each ``val``
        source's ``language`` (or the module's ``language``), plus ``language`` for a ``val_fraction``."""
        if not hasattr(self, "val_sources"):
            return None
        default = getattr(self, "language", None)
        languages = [source.language or default for source in self.val_sources]
        if not languages and getattr(self, "val_fraction", 0.0):
            languages = [default]
        return [str(lang) for lang in languages]

    def metric_names(self) -> tuple[str, ...] | None:
        """The metrics :meth:`build_evaluator`'s evaluator reports per language (``<lang>/<metric>`` keys),
        from the arguments alone; ``None`` when unknown. Default: ``loss`` and ``perplexity``."""
        return ("loss", "perplexity")

    # ------------------------------------------------------------------ lifecycle
    @override
    def setup(self, stage: str) -> None:
        if self._built:
            return
        if self.tokenizer_name is None:
            raise InvalidValueError(
                f"{type(self).__name__} needs a tokenizer; set data.init_args.tokenizer (the CLI sets it from "
                "model.init_args.base_model)"
            )
        self.tokenizer = load_tokenizer(self.tokenizer_name)
        self.train_examples, self.val_examples, self.test_examples = self.build_examples()
        self._built = True

    @property
    def val_languages(self) -> list[str]:
        """Languages of the validation dataloaders, in order."""
        return list(self.val_examples)

    @property
    def test_languages(self) -> list[str]:
        return list(self.test_examples)

    def collator(self, padding_side: str = "right") -> PadCollator:
        return PadCollator(self.tokenizer.pad_token_id, padding_side, self.pad_to_multiple_of)

    def train_collator(self) -> Callable[[Examples], dict[str, Any]]:
        """How training batches are built: packed with ``pack_sequences``, else padded."""
        if self.pack_sequences:
            return PackingCollator(self.tokenizer.pad_token_id, self.pad_to_multiple_of)
        return self.collator()

    def eval_collator(self) -> Callable[[Examples], dict[str, Any]]:
        """How validation/test batches are built (default: :meth:`collator`).

        Task DataModules override it: multiple-choice tasks batch one row per option, generation tasks
        left-pad their prompts and carry the gold answers (see ``data_modules/collate.py``).
        """
        return self.collator()

    def _world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    # ------------------------------------------------------------------ dataloaders
    @override
    def train_dataloader(self) -> DataLoader:
        if not self.train_examples:
            raise InvalidValueError(f"{type(self).__name__} has no training data; set its train source")
        world_size, rank = self._world()
        sampler = ResumableShuffleSampler(self.train_examples, world_size, rank, seed=self.seed)
        if self._resume is not None:
            epoch, batches_done = self._resume
            if batches_done >= -(-len(sampler) // self.batch_size):  # saved at the end of an epoch
                epoch, batches_done = epoch + 1, 0
            sampler.set_epoch(epoch)  # before the iterator exists: workers prefetch indices at creation
            sampler.skip_in_epoch(epoch, batches_done * self.batch_size)
            self._resume = None
            # Lightning warns about mid-epoch resumption unless the dataloader is stateful; this one resumes.
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")
        return DataLoader(
            self.train_examples,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=self.train_collator(),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def eval_item_ids(self, stage: str) -> dict[str, list[int]]:
        """Each evaluation language's item ids, in order: an example's ``index``, else its position (the item
        id of per-item scores, the same on every rank and for every method).

        Args:
            stage: ``validate`` (the validation sets) or ``test``.
        """
        sets = self.test_examples if stage == "test" else self.val_examples
        return {language: [e.get("index", i) for i, e in enumerate(ex)] for language, ex in sets.items()}

    def evaluate_first(self, item_ids: dict[str, Collection[int]]) -> None:
        """Batch these items of each evaluation language before its other items, never in a batch with them.

        On one process only (sharded evaluation keeps its order). A
        :class:`~adamergex_pl.merging.merge_module.MergeModule` with a selection split chooses each merge
        method's ``t`` on the selection items, then evaluates only the chosen ``t`` on the others.

        Args:
            item_ids: ``{language: item ids}`` (ids as in :meth:`eval_item_ids`).
        """
        self._first = {language: {int(i) for i in ids} for language, ids in item_ids.items()}

    def _eval_dataloaders(self, sets: dict[str, Examples]) -> list[DataLoader]:
        world_size, rank = self._world()
        loaders = []
        for language, examples in sets.items():
            indexed = [e if "index" in e else {**e, "index": i} for i, e in enumerate(examples)]
            first = self._first.get(language) if world_size == 1 else None
            if first is None:
                order = {
                    "batch_size": self.eval_batch_size,
                    "sampler": EvalShardSampler(examples, world_size, rank),
                }
            else:  # the chosen items' batches, then the others'
                head = [p for p, e in enumerate(indexed) if e["index"] in first]
                tail = [p for p, e in enumerate(indexed) if e["index"] not in first]
                size = self.eval_batch_size
                order = {
                    "batch_sampler": [
                        part[i : i + size] for part in (head, tail) for i in range(0, len(part), size)
                    ]
                }
            # Each loader draws its worker seed from a generator of its own: without one, every iterator takes a
            # number from the global RNG, and a validation pass inside fit would shift the dropout masks of
            # every later training step (a fit that validates would train differently from one that does not).
            loaders.append(
                DataLoader(
                    indexed,
                    collate_fn=self.eval_collator(),
                    num_workers=self.num_workers,
                    generator=torch.Generator().manual_seed(self.seed),
                    **order,
                )
            )
        return loaders

    @override
    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_dataloaders(self.val_examples)

    @override
    def test_dataloader(self) -> list[DataLoader]:
        if not self.test_examples:
            raise InvalidValueError(f"{type(self).__name__} has no test data; set its test sources")
        return self._eval_dataloaders(self.test_examples)

    # ------------------------------------------------------------------ resumption
    @override
    def state_dict(self) -> dict[str, Any]:
        """Where training stands in the current epoch, so that a resumed run skips what was trained."""
        if self.trainer is None:
            return {}
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": self.trainer.current_epoch, "batches_done": progress.processed, "seed": self.seed}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "epoch" in state_dict:
            self._resume = (int(state_dict["epoch"]), int(state_dict["batches_done"]))


def check_languages(
    module: object, language: str | None, sources: dict[str, list], languages: Sequence[str] = ()
) -> None:
    """Refuse a language that :func:`~adamergex_pl.metrics.normalize_language` does not know.

    Args:
        module: the DataModule (named in the message).
        language: its ``language`` argument (``None``: it has none).
        sources: ``{"val": [DataSource, ...], "test": [...]}``; a source without a language takes ``language``.
        languages: its ``languages`` argument, where it evaluates or mixes several.

    Raises:
        ValueError: an unknown language, naming the option or source that gives it.

    Example:
        >>> check_languages(object(), None, {}, ["zh", "Spanish", "de-AT"])  # known: nothing to say
    """
    given = [("language", language)]
    given += [(f"{what} source {s.describe()}", s.language) for what, group in sources.items() for s in group]
    given += [("languages", code) for code in languages]
    for where, code in given:
        if code is None:
            continue
        try:
            normalize_language(code)
        except ValueError as err:
            raise InvalidValueError(f"{type(module).__name__} {where}: {err}") from None
