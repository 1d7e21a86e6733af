"""Tiny local copies of the hub datasets the recipes read, laid out and typed as the hub serves them.

``write_hub_fixtures(root)`` writes one folder per hub repository under ``root`` (``root/<org>/<name>/``, and
``root/<org>/<name>@refs%2Fconvert%2Fparquet/`` for a Parquet export branch) and returns ``{hub id: folder}``
(a branch's key is ``<org>/<name>@<revision>``). Every folder holds what ``datasets.load_dataset`` reads
from the hub repository, with the same configuration, split and field names, dtypes and label encodings:

==========================================  ==================================================================
``facebook/xnli``                           dataset card + ``<lang>/<split>-00000-of-00001.parquet``; label
                                            ``ClassLabel`` (int64) 0 entailment / 1 neutral / 2 contradiction
``cambridgeltl/xcopa``                      card + ``<lang>/{validation,test}-*.parquet``; label, idx int32
``pkavumba/balanced-copa``                  no card, ``data/{train,test}.csv`` (the csv builder infers dtypes)
``google-research-datasets/paws-x``         card + ``<lang>/<split>-*.parquet``; id int32, label ``ClassLabel``
                                            0/1 with some ``-1`` (unlabelled) rows and one empty sentence2
``juletxara/mgsm``                          card + ``<lang>/{train,test}-*.parquet``; answer_number int32,
                                            ``answer`` / ``equation_solution`` null in test
``openai/gsm8k``                            card, configs ``main`` and ``socratic``; answers end in ``#### N``
``google/xquad``                            card, configs ``xquad.<lang>``, ``validation``; ``answers`` a struct
                                            of lists ``{text: [...], answer_start: [int32 ...]}``
``rajpurkar/squad``                         card, config ``plain_text``, ``train`` / ``validation`` (+ title)
``csebuetnlp/xlsum@refs/convert/parquet``   no card, ``<config>/<split>/0000.parquet`` for all 45 configs
``wikimedia/wikipedia``                     card, configs ``20231101.<lang>``, ``train``; id, url, title, text;
                                            row groups of 10 articles (so streaming reshards by row group)
==========================================  ==================================================================

The repositories' file names follow the hub's usual layouts (``push_to_hub`` for cards with ``configs``, the
Parquet converter's for ``refs/convert/parquet``); they were not compared file by file with each repository.

Use it offline in one of two ways (see :class:`data_modules.sources.DataSource`):

* ``ADAMERGEX_DATASET_MIRROR=<root>``: every ``DataSource`` whose path is a hub id found under ``<root>`` loads
  from there, so configs and the task table run unchanged (``adamergex`` subprocesses inherit the variable);
* a folder as the path: ``DataSource(str(folders["facebook/xnli"]), name="de", split="test")``.

From a shell (for a rehearsal of a recipe)::

    python tests/hub_fixtures.py /tmp/hub-mirror          # prints: export ADAMERGEX_DATASET_MIRROR=/tmp/hub-mirror
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from data_modules.sources import MIRROR_ENV, PARQUET_EXPORT, mirror_folder  # noqa: E402
from data_modules.tasks.mgsm import LANGUAGES as MGSM_LANGUAGES  # noqa: E402
from data_modules.tasks.pawsx import LANGUAGES as PAWSX_LANGUAGES  # noqa: E402
from data_modules.tasks.xcopa import LANGUAGES as XCOPA_LANGUAGES  # noqa: E402
from data_modules.tasks.xlsum import CONFIGS as XLSUM_CONFIGS  # noqa: E402
from data_modules.tasks.xnli import LABELS as XNLI_LABELS  # noqa: E402
from data_modules.tasks.xnli import LANGUAGES as XNLI_LANGUAGES  # noqa: E402
from data_modules.tasks.xquad import LANGUAGES as XQUAD_LANGUAGES  # noqa: E402

WIKIPEDIA_DUMP = "20231101"
WIKIPEDIA_LANGUAGES = (
    "ar",
    "de",
    "el",
    "en",
    "es",
    "fr",
    "hi",
    "ja",
    "ko",
    "ru",
    "sw",
    "th",
    "tr",
    "vi",
    "zh",
)
# rows per split of each fixture (the real splits are far larger; the names and dtypes are what matter)
SIZES = {
    "xnli": {"train": 9, "validation": 6, "test": 12},
    "xcopa": {"validation": 4, "test": 8},
    "copa": {"train": 8, "test": 4},
    "pawsx": {"train": 10, "validation": 6, "test": 12},
    "mgsm": {"train": 4, "test": 6},
    "gsm8k": {"train": 8, "test": 4},
    "xquad": {"validation": 8},
    "squad": {"train": 8, "validation": 4},
    "xlsum": {"train": 4, "validation": 2, "test": 5},
}
PAWSX_UNLABELLED = (3, 7)  # rows of every PAWS-X test split with label -1 (as the hub marks missing labels)
PAWSX_EMPTY_SENTENCE2 = 5  # the row of every PAWS-X test split whose sentence2 is empty


def write_hub_fixtures(root: str | Path, wikipedia_articles: int = 40) -> dict[str, Path]:
    """Write every fixture repository under ``root``; returns ``{hub id: folder}``.

    Args:
        root: the mirror's root folder (created if missing); point ``ADAMERGEX_DATASET_MIRROR`` at it.
        wikipedia_articles: articles per Wikipedia language.
    """
    import datasets

    root = Path(root)
    v, label = datasets.Value, datasets.ClassLabel
    written: dict[str, Path] = {}

    def card_repo(hub_id, features, configs: dict[str, dict[str, int]], row, row_group_size=None):
        written[hub_id] = _write_card_repo(
            mirror_folder(root, hub_id), datasets.Features(features), configs, row, row_group_size
        )

    card_repo(
        "facebook/xnli",
        {"premise": v("string"), "hypothesis": v("string"), "label": label(names=list(XNLI_LABELS))},
        {lang: SIZES["xnli"] for lang in XNLI_LANGUAGES},
        _xnli_row,
    )  # fmt: skip
    copa = {name: v("string") for name in ("premise", "choice1", "choice2", "question")}
    card_repo(
        "cambridgeltl/xcopa",
        {**copa, "label": v("int32"), "idx": v("int32"), "changed": v("bool")},
        {lang: SIZES["xcopa"] for lang in XCOPA_LANGUAGES},
        _xcopa_row,
    )
    written["pkavumba/balanced-copa"] = _write_csv_repo(
        mirror_folder(root, "pkavumba/balanced-copa"), SIZES["copa"], _balanced_copa_row
    )
    card_repo(
        "google-research-datasets/paws-x",
        {"id": v("int32"), "sentence1": v("string"), "sentence2": v("string"), "label": label(names=["0", "1"])},
        {lang: SIZES["pawsx"] for lang in PAWSX_LANGUAGES},
        _pawsx_row,
    )  # fmt: skip
    card_repo(
        "juletxara/mgsm",
        {"question": v("string"), "answer": v("string"), "answer_number": v("int32"), "equation_solution": v("string")},
        {lang: SIZES["mgsm"] for lang in MGSM_LANGUAGES},
        _mgsm_row,
    )  # fmt: skip
    card_repo(
        "openai/gsm8k",
        {"question": v("string"), "answer": v("string")},
        {"main": SIZES["gsm8k"], "socratic": SIZES["gsm8k"]},
        _gsm8k_row,
    )
    answers = datasets.Sequence({"text": v("string"), "answer_start": v("int32")})
    squad = {"id": v("string"), "context": v("string"), "question": v("string"), "answers": answers}
    card_repo(
        "google/xquad", squad, {f"xquad.{lang}": SIZES["xquad"] for lang in XQUAD_LANGUAGES}, _squad_row
    )
    card_repo(
        "rajpurkar/squad",
        {"id": v("string"), "title": v("string"), **{k: f for k, f in squad.items() if k != "id"}},
        {"plain_text": SIZES["squad"]},
        _squad_row,
    )
    xlsum = datasets.Features({name: v("string") for name in ("id", "url", "title", "summary", "text")})
    written[f"csebuetnlp/xlsum@{PARQUET_EXPORT}"] = _write_parquet_export(
        mirror_folder(root, "csebuetnlp/xlsum", PARQUET_EXPORT),
        xlsum,
        {config: SIZES["xlsum"] for config in XLSUM_CONFIGS.values()},
        _xlsum_row,
    )
    card_repo(
        "wikimedia/wikipedia",
        {name: v("string") for name in ("id", "url", "title", "text")},
        {f"{WIKIPEDIA_DUMP}.{lang}": {"train": wikipedia_articles} for lang in WIKIPEDIA_LANGUAGES},
        _wikipedia_row,
        row_group_size=10,
    )
    return written


# ---------------------------------------------------------------------------------------------- writers
def _table(features, rows: list[dict[str, Any]]):
    import datasets

    return datasets.Dataset.from_list(rows, features=features).data.table  # carries the features' metadata


def _write_parquet(path: Path, features, rows: list[dict[str, Any]], row_group_size: int | None = None):
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = _table(features, rows)
    pq.write_table(table, path, row_group_size=row_group_size)
    return table


def _write_card_repo(
    folder: Path,
    features,
    configs: dict[str, dict[str, int]],
    row: Callable[[str, str, int], dict[str, Any]],
    row_group_size: int | None,
) -> Path:
    """A repository as ``push_to_hub`` leaves it: a dataset card whose YAML lists each configuration's
    features, splits and data files, and ``<config>/<split>-00000-of-00001.parquet``."""
    import yaml

    info, card_configs = [], []
    for config, splits in configs.items():
        split_info = []
        for split, size in splits.items():
            rows = [row(config, split, i) for i in range(size)]
            table = _write_parquet(
                folder / config / f"{split}-00000-of-00001.parquet", features, rows, row_group_size
            )
            split_info.append({"name": split, "num_bytes": table.nbytes, "num_examples": size})
        info.append({"config_name": config, "features": features._to_yaml_list(), "splits": split_info})
        card_configs.append(
            {
                "config_name": config,
                "data_files": [{"split": split, "path": f"{config}/{split}-*"} for split in splits],
            }
        )
    card = yaml.safe_dump(
        {"dataset_info": info, "configs": card_configs}, sort_keys=False, allow_unicode=True
    )
    (folder / "README.md").write_text(
        f"---\n{card}---\n\nLocal fixture of {folder.name}.\n", encoding="utf-8"
    )
    return folder


def _write_parquet_export(
    folder: Path, features, configs: dict[str, dict[str, int]], row: Callable[[str, str, int], dict[str, Any]]
) -> Path:
    """A ``refs/convert/parquet`` branch: no dataset card, ``<config>/<split>/0000.parquet``."""
    for config, splits in configs.items():
        for split, size in splits.items():
            _write_parquet(
                folder / config / split / "0000.parquet",
                features,
                [row(config, split, i) for i in range(size)],
            )
    return folder


def _write_csv_repo(
    folder: Path, splits: dict[str, int], row: Callable[[str, str, int], dict[str, Any]]
) -> Path:
    """A repository of CSV files with split names in the file names and no dataset card."""
    for split, size in splits.items():
        rows = [row("default", split, i) for i in range(size)]
        path = folder / "data" / f"{split}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return folder


# ---------------------------------------------------------------------------------------------- rows
def _lang(config: str) -> str:
    return config.rsplit(".", 1)[-1]


def _xnli_row(config: str, split: str, i: int) -> dict[str, Any]:
    return {
        "premise": f"[{config}] {split} premise {i}: the train left the station at {i + 6} o'clock.",
        "hypothesis": f"[{config}] hypothesis {i}: "
        + ("a train left.", "it was late.", "no train left.")[i % 3],
        "label": i % 3,  # parallel across languages, as XNLI's test set is
    }


def _xcopa_row(config: str, split: str, i: int) -> dict[str, Any]:
    return {
        "premise": f"[{config}] {split} premise {i}: the glass fell off the table.",
        "choice1": f"[{config}] it broke ({i}).",
        "choice2": f"[{config}] it sang ({i}).",
        "question": ("effect", "cause")[i % 2],
        "label": i % 2,
        "idx": i + 1,
        "changed": False,
    }


def _balanced_copa_row(config: str, split: str, i: int) -> dict[str, Any]:
    return {
        "id": i + 1,
        "premise": f"{split} premise {i}: my body cast a shadow over the grass.",
        "choice1": f"the sun was rising ({i}).",
        "choice2": f"the grass was cut ({i}).",
        "question": ("cause", "effect")[i % 2],
        "label": i % 2,
        "mirrored": i >= SIZES["copa"][split] // 2,
    }


def _pawsx_row(config: str, split: str, i: int) -> dict[str, Any]:
    label = i % 2
    sentence2 = f"[{config}] {split} sentence {i} " + ("says something else.", "in other words.")[label]
    if split == "test" and i in PAWSX_UNLABELLED:
        label = -1
    if split == "test" and i == PAWSX_EMPTY_SENTENCE2:
        sentence2 = ""
    return {
        "id": i + 1,
        "sentence1": f"[{config}] {split} sentence {i}.",
        "sentence2": sentence2,
        "label": label,
    }


def _mgsm_row(config: str, split: str, i: int) -> dict[str, Any]:
    a, b = i + 2, 3 * i + 1
    question = f"[{config}] Lena has {a} apples and buys {b} more. How many apples does she have?"
    if split == "test":  # MGSM's test split has no worked answers
        return {"question": question, "answer": None, "answer_number": a + b, "equation_solution": None}
    return {
        "question": question,
        "answer": f"Step-by-Step Answer: {a} + {b} = {a + b}. The answer is {a + b}.",
        "answer_number": a + b,
        "equation_solution": f"{a} + {b} = {a + b}",
    }


def _gsm8k_row(config: str, split: str, i: int) -> dict[str, Any]:
    a, b = i + 3, 2 * i + 5
    steps = f"She has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} marbles."
    if config == "socratic":
        steps = f"How many marbles does she have? ** {steps}"
    return {
        "question": f"Sam has {a} marbles and finds {b}. How many now?",
        "answer": f"{steps}\n#### {a + b}",
    }


def _squad_row(config: str, split: str, i: int) -> dict[str, Any]:
    answer = f"river {i}"
    context = f"[{config}] The {answer} rises in the mountains and flows {i + 100} km to the sea."
    start = context.index(answer)
    row = {
        "id": f"{config}-{split}-{i:04d}",
        "context": context,
        "question": f"[{config}] What rises in the mountains ({i})?",
        "answers": {"text": [answer, f"The {answer}"], "answer_start": [start, start - 4]},
    }
    if config == "plain_text":
        row["title"] = f"River_{i}"
    return row


def _xlsum_row(config: str, split: str, i: int) -> dict[str, Any]:
    return {
        "id": f"{config}-{split}-{i}",
        "url": f"https://www.bbc.com/{config}/articles/{split}-{i}",
        "title": f"[{config}] headline {i}",
        "summary": f"[{config}] The council approved the new bridge {i}.",
        "text": f"[{config}] {split} article {i}. "
        + "The council met and approved the bridge. " * (2 + i % 3),
    }


def _wikipedia_row(config: str, split: str, i: int) -> dict[str, Any]:
    lang = _lang(config)
    title = f"Article {i} ({lang})"
    sentence = f"{title} is entry {i} of the {lang} fixture, sentence number"
    return {
        "id": str(1000 + i),
        "url": f"https://{lang}.wikipedia.org/wiki?curid={1000 + i}",
        "title": title,
        "text": " ".join(f"{sentence} {k}." for k in range(3 + i % 7)),
    }


def fixture_ids(folders: Iterable[str]) -> list[str]:
    """Hub ids of a ``write_hub_fixtures`` result, without the ``@revision`` suffixes."""
    return sorted({key.split("@", 1)[0] for key in folders})


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("root", type=Path, help="folder to write the mirror into")
    parser.add_argument("--wikipedia-articles", type=int, default=40)
    args = parser.parse_args()
    for hub_id, folder in write_hub_fixtures(args.root, args.wikipedia_articles).items():
        print(f"{hub_id:45s} {folder}")
    print(f"export {MIRROR_ENV}={args.root.resolve()}")
