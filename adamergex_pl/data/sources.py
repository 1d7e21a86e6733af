"""Where records come from: local JSON/JSONL/CSV/Parquet/text files, or a dataset on the Hugging Face hub.

A :class:`DataSource` is written in YAML as ``{path: data/train.jsonl}``, ``{path: builtin:tiny/add_en.jsonl}`` or
``{path: facebook/xnli, name: en, split: train}``. A path that ends in a known suffix, or that exists on
disk, is read locally; anything else is loaded with ``datasets.load_dataset(path, name, split=split)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adamergex_pl.assets.builtin import ASSETS_DIR, BUILTIN_PREFIX
from adamergex_pl.data import readers
from adamergex_pl.errors import InputNotFoundError, InvalidValueError

LOCAL_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".txt")


@dataclass(frozen=True)
class DataSource:
    """One split of one dataset.

    Args:
        path: ``builtin:<file>`` for data shipped with the package (e.g. ``builtin:tiny/add_en.jsonl``), a
            local ``.json`` (array of objects, or an object with a list under ``field``), ``.jsonl``,
            ``.csv``, ``.parquet`` or ``.txt`` file, or a hub dataset name such as ``facebook/xnli``.
        name: the hub dataset's configuration (e.g. ``en``, or ``20231101.es`` for ``wikimedia/wikipedia``).
        split: the hub dataset's split (local files are one split).
        language: the language of these records (validation metrics are logged under it).
        field: for a ``.json`` file holding an object, the key of the record list.
        revision: the hub dataset's git revision, e.g. ``refs/convert/parquet`` for a dataset that still ships
            a loading script on ``main`` (``datasets`` >= 4 no longer runs those scripts).
    """

    path: str
    name: str | None = None
    split: str = "train"
    language: str | None = None
    field: str | None = None
    # Added for the task suite (juletxara/mgsm and csebuetnlp/xlsum load from their Parquet export branch).
    revision: str | None = None

    @property
    def is_local(self) -> bool:
        return (
            self.path.startswith(BUILTIN_PREFIX)
            or Path(self.path).suffix in LOCAL_SUFFIXES
            or Path(self.path).expanduser().exists()
        )

    def local_path(self) -> Path:
        """The file this source reads (``builtin:<file>`` is a file shipped in ``adamergex_pl/assets``)."""
        if self.path.startswith(BUILTIN_PREFIX):
            return ASSETS_DIR / self.path[len(BUILTIN_PREFIX) :]
        return Path(self.path).expanduser()

    def describe(self) -> str:
        if self.is_local:
            return self.path
        revision = f" @{self.revision}" if self.revision else ""
        return f"{self.path}" + (f" ({self.name})" if self.name else "") + f" [{self.split}]{revision}"


def load_records(source: DataSource) -> list[dict[str, Any]]:
    """All records of ``source`` as dictionaries (a ``.txt`` file gives one record ``{"text": ...}``).

    Raises:
        FileNotFoundError: a local file that does not exist.
        ValueError: a file in an unexpected shape, a malformed line or byte that is not UTF-8 (named by its
            line, :mod:`adamergex_pl.data.readers`), or a hub dataset that cannot be loaded.
    """
    if not source.is_local:
        return _load_hub(source)
    path = source.local_path()
    if not path.is_file():
        raise InputNotFoundError(
            f"data file {source.path!r} does not exist (resolved to {path.resolve()}); expected a "
            f"{'/'.join(LOCAL_SUFFIXES)} file or a hub dataset name"
        )
    suffix = path.suffix
    if suffix == ".txt":
        return [{"text": readers.read_text(path, source.path)}]
    if suffix == ".jsonl":
        records = readers.read_jsonl(path, source.path)
    elif suffix == ".json":
        records = readers.read_json(path, source.path)
        if isinstance(records, dict):
            if source.field is None or source.field not in records:
                raise InvalidValueError(
                    f"{source.path} holds a JSON object with keys {sorted(records)[:10]}; set field: <key of the "
                    "record list>, or store a JSON array of records"
                )
            records = records[source.field]
    elif suffix == ".csv":
        records = readers.read_csv(path, source.path)
    elif suffix == ".parquet":
        records = readers.read_parquet(path, source.path)
    else:
        raise InvalidValueError(
            f"data file {source.path!r} has an unknown suffix; expected one of {LOCAL_SUFFIXES}"
        )
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise InvalidValueError(f"{source.path} must hold a list of records (objects), one per example")
    return records


def _load_hub(source: DataSource) -> list[dict[str, Any]]:
    import datasets

    try:
        dataset = datasets.load_dataset(
            source.path, source.name, split=source.split, revision=source.revision
        )
    except Exception as err:  # offline, unknown name, unknown config or split: one message for all
        raise InvalidValueError(
            f"could not load hub dataset {source.describe()}: {type(err).__name__}: {err}. For a local file, "
            f"use a path ending in one of {', '.join(LOCAL_SUFFIXES)}; offline, download the dataset first"
        ) from err
    return dataset.to_list()
