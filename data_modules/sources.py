"""Where records come from (:class:`DataSource`), their readers and record checks.

The readers report a bad line of a local file by line and column with the fix, instead of a traceback.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import quote

from adamergex_pl.assets.builtin import ASSETS_DIR, BUILTIN_PREFIX
from adamergex_pl.errors import InputNotFoundError, InvalidValueError
from data_modules.instruction_format import PromptTemplate

_UTF8_FIX = "save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"


def _not_utf8(label: str, raw: bytes, err: UnicodeDecodeError, line: int | None = None) -> InvalidValueError:
    if line is None:  # a whole file: find the line of the bad byte
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
    else:
        column = err.start + 1
    return InvalidValueError(
        f"{label}, line {line}, column {column}: byte 0x{raw[err.start]:02x} is not UTF-8 text; {_UTF8_FIX}"
    )


def read_text(path: Path, label: str) -> str:
    """The whole file as UTF-8 text.

    Raises:
        ValueError: a byte that is not UTF-8, named by line and column.
    """
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _not_utf8(label, raw, err) from None


def read_jsonl(path: Path, label: str) -> list[Any]:
    """The JSON value of every non-blank line of a JSONL file.

    Raises:
        ValueError: a line that is not UTF-8 or not valid JSON, named by its line number (and column).

    Example:
        >>> import pathlib, tempfile
        >>> bad = pathlib.Path(tempfile.mkdtemp()) / "bad.jsonl"
        >>> _ = bad.write_text('{"a": 1}\\n{"a": 2\\n')
        >>> try:
        ...     read_jsonl(bad, "bad.jsonl")
        ... except ValueError as err:
        ...     print(str(err).split(";")[0])
        bad.jsonl, line 2, column 8: not valid JSON (Expecting ',' delimiter)
    """
    return [value for _, value in iter_jsonl(path, label)]


def iter_jsonl(path: Path, label: str) -> Iterator[tuple[int, Any]]:
    """``(line number, JSON value)`` of each non-blank line, read lazily; raises as :func:`read_jsonl`."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _not_utf8(label, raw, err, line=number) from None
            if not line.strip():
                continue
            try:
                yield number, json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as err:
                raise InvalidValueError(
                    f"{label}, line {number}, column {err.colno}: not valid JSON ({err.msg}); each line must be "
                    "one JSON object"
                ) from None


def read_json(path: Path, label: str) -> Any:
    """The JSON value of a ``.json`` file.

    Raises:
        ValueError: not UTF-8 or not valid JSON, named by line and column.
    """
    try:
        return json.loads(read_text(path, label))
    except json.JSONDecodeError as err:
        raise InvalidValueError(
            f"{label}, line {err.lineno}, column {err.colno}: not valid JSON ({err.msg}); a .json data file holds "
            "an array of records (or a JSONL file one record per line: name it .jsonl)"
        ) from None


def read_csv(path: Path, label: str) -> list[dict[str, Any]]:
    """The rows of a CSV file with a header line, as dictionaries.

    Raises:
        ValueError: not UTF-8 text, or a malformed row, named by its line.
    """
    text = read_text(path, label)
    reader = csv.DictReader(text.splitlines(keepends=True))
    try:
        return list(reader)
    except csv.Error as err:
        raise InvalidValueError(f"{label}, line {reader.line_num}: not valid CSV ({err})") from None


def read_parquet(path: Path, label: str) -> list[dict[str, Any]]:
    """The rows of a Parquet file.

    Raises:
        ValueError: the file is not a readable Parquet file (truncated, or another format).
    """
    import pyarrow
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except pyarrow.ArrowException as err:
        raise InvalidValueError(f"{label} is not a readable Parquet file ({err}); re-export it") from None


def record_location(path: Path, index: int) -> str:
    """Where record ``index`` of a local file is: ``line 31`` (JSONL), ``row 31`` (CSV), else ``record 31``."""
    if path.suffix == ".jsonl":
        seen = -1
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                seen += bool(raw.strip())
                if seen == index:
                    return f"line {number}"
    elif path.suffix == ".csv":
        return f"row {index + 1}"
    return f"record {index + 1}"


def check_records(
    records: Sequence[Any],
    source: DataSource,
    templates: Iterable[PromptTemplate],
    needs_value: Iterable[PromptTemplate] = (),
) -> None:
    """Refuse records that lack a field a template names, or leave a ``needs_value`` template's field null.

    ``templates`` are all the records are rendered through; ``needs_value`` those whose fields must not be null
    (the completion: a null would train on an empty target).

    Raises:
        ValueError: Naming the source, the record's line or number, the field and the template.

    Example:
        >>> from data_modules.instruction_format import PromptTemplate
        >>> templates = [PromptTemplate("{prompt}", "prompt_template"), PromptTemplate("{completion}", "completion")]
        >>> records = [{"prompt": "1+1", "completion": "2"}, {"prompt": "2+2"}]
        >>> try:
        ...     check_records(records, DataSource("x.json"), templates)
        ... except ValueError as err:
        ...     print(str(err).split(" (")[0])
        x.json, record 2: lacks field 'completion' that completion='{completion}' names
    """
    templates, needs_value = list(templates), list(needs_value)
    first, count = None, 0
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            problem = f"is a {type(record).__name__}, not an object with fields"
        else:
            problem = record_problem(record, templates, needs_value)
        if problem is not None:
            count += 1
            first = first or (index, problem)
    if first is None:
        return
    index, problem = first
    where = record_location(source.local_path(), index) if source.is_local else f"record {index + 1}"
    more = f" ({count - 1} more records have problems too)" if count > 1 else ""
    raise InvalidValueError(f"{source.describe()}, {where}: {problem}{more}; fix the record or drop it")


def record_problem(
    record: dict, templates: list[PromptTemplate], needs_value: list[PromptTemplate] = ()
) -> str | None:
    for template in templates:
        for name in template.fields:
            if name not in record:
                return (
                    f"lacks field {name!r} that {template.option}={template.template!r} names (the record has "
                    f"{sorted(record)})"
                )
    for template in needs_value:
        for name in template.fields:
            if record[name] is None:
                return f"field {name!r} is null, but {template.option}={template.template!r} needs a value"
    return None


LOCAL_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".txt")
MIRROR_ENV = "ADAMERGEX_DATASET_MIRROR"
PARQUET_EXPORT = "refs/convert/parquet"
# seeded reading: records a shuffle buffer of a streamed dataset holds, and the byte chunks of a JSONL file
STREAM_SHUFFLE_BUFFER = 1_000
JSONL_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class DataSource:
    """One split of one dataset.

    Args:
        path: ``builtin:<file>``; a local data file (:data:`LOCAL_SUFFIXES`) or dataset folder; or a hub id.
        name: The dataset's configuration (e.g. ``en``), as listed under ``configs`` in its dataset card.
        split: The dataset's split (a local file is one split).
        language: The language of these records (validation metrics are logged under it).
        field: For a ``.json`` file holding an object, the key of the record list.
        revision: The hub dataset's git revision; on ``refs/convert/parquet`` ``name`` is read as ``data_dir``.
        data_dir: A relative folder inside the dataset repository to read instead of its configurations' files.

    With ``$ADAMERGEX_DATASET_MIRROR`` set, a hub id ``<org>/<name>`` loads from that folder's ``<org>/<name>/``
    (``<org>/<name>@<revision, '/' as %2F>/`` for another ``revision``) when it exists.
    """

    path: str
    name: str | None = None
    split: str = "train"
    language: str | None = None
    field: str | None = None
    revision: str | None = None
    data_dir: str | None = None

    @property
    def is_local(self) -> bool:
        """A file (or folder) on disk: shipped with the package, a known suffix, or an existing path."""
        return self.is_file or Path(self.path).expanduser().exists()

    @property
    def is_file(self) -> bool:
        return (
            self.path.startswith(BUILTIN_PREFIX)
            or Path(self.path).suffix in LOCAL_SUFFIXES
            or Path(self.path).expanduser().is_file()
        )

    def local_path(self) -> Path:
        """The file this source reads (``builtin:<file>`` is a file shipped in ``adamergex_pl/assets``)."""
        if self.path.startswith(BUILTIN_PREFIX):
            return ASSETS_DIR / self.path[len(BUILTIN_PREFIX) :]
        return Path(self.path).expanduser()

    def describe(self) -> str:
        if self.is_file:
            return self.path
        text = self.path + (f" ({self.name})" if self.name else "")
        text += (f" data_dir={self.data_dir}" if self.data_dir else "") + f" [{self.split}]"
        return text + (f" @{self.revision}" if self.revision else "")

    def resolve(self) -> ResolvedSource:
        """Where and how this source is loaded (a file, a folder, or a hub repository), checked.

        Raises:
            ValueError: a malformed ``data_dir`` or ``split``, or a combination that cannot be loaded.
        """
        if self.is_file:
            return ResolvedSource("file", str(self.local_path()))
        if not self.split or not self.split.strip():
            raise InvalidValueError(
                f"{self.path}: split={self.split!r}; expected a split name such as train, validation or test"
            )
        name, data_dir = self.name, self.data_dir
        if data_dir is not None:
            parts = PurePosixPath(data_dir.replace("\\", "/")).parts
            if not data_dir.strip() or PurePosixPath(data_dir).is_absolute() or ".." in parts:
                raise InvalidValueError(
                    f"{self.path}: data_dir={data_dir!r}; expected a folder inside the dataset repository, "
                    "relative and without '..' (e.g. data_dir: spanish)"
                )
        if self.revision == PARQUET_EXPORT and name is not None:
            if data_dir is not None and data_dir.strip("/") != name:
                raise InvalidValueError(
                    f"{self.path}: name={name!r} and data_dir={data_dir!r} on revision {PARQUET_EXPORT}, where a "
                    "configuration is the folder of its files; give one of them"
                )
            name, data_dir = None, name
        local = Path(self.path).expanduser()
        if local.is_dir():
            if self.revision not in (None, "main", PARQUET_EXPORT):
                raise InvalidValueError(
                    f"{self.path} is a local folder, which has no revision {self.revision!r}; drop revision (or "
                    f"keep {PARQUET_EXPORT} for a copy of that branch, to read name as data_dir)"
                )
            return ResolvedSource("directory", str(local), name, data_dir)
        mirror = os.environ.get(MIRROR_ENV)
        if mirror and _is_hub_id(self.path):
            folder = mirror_folder(mirror, self.path, self.revision)
            if folder.is_dir():
                return ResolvedSource("directory", str(folder), name, data_dir, mirror=True)
        return ResolvedSource("hub", self.path, name, data_dir, self.revision)


@dataclass(frozen=True)
class ResolvedSource:
    """What :meth:`DataSource.resolve` found: ``kind`` is ``file``, ``directory`` or ``hub``."""

    kind: Literal["file", "directory", "hub"]
    target: str
    name: str | None = None
    data_dir: str | None = None
    revision: str | None = None
    mirror: bool = False


@dataclass
class ReadCounter:
    """``rows`` decoded (or pulled from a stream) and ``emitted`` records handed out by readers."""

    rows: int = 0
    emitted: int = 0


def mirror_folder(root: str | os.PathLike, hub_id: str, revision: str | None = None) -> Path:
    """The folder of ``hub_id`` (at ``revision``) in a dataset mirror rooted at ``root`` (see :class:`DataSource`)."""
    folder = Path(root).expanduser() / hub_id
    if revision not in (None, "main"):
        folder = folder.with_name(f"{folder.name}@{quote(revision, safe='')}")
    return folder


def _is_hub_id(path: str) -> bool:
    parts = path.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not path.startswith((".", "~")) and "\\" not in path


def load_records(source: DataSource) -> list[dict[str, Any]]:
    """All records of ``source`` as dictionaries (a ``.txt`` file gives one record ``{"text": ...}``).

    Raises:
        FileNotFoundError: A local file that does not exist.
        ValueError: A file in an unexpected shape, a malformed line or byte, or an unloadable dataset.
    """
    resolved = source.resolve()
    if resolved.kind != "file":
        return _load_dataset(source, resolved, streaming=False).to_list()
    path = _existing_file(source)
    suffix = path.suffix
    if suffix == ".parquet":
        return read_parquet(path, source.path)
    if suffix == ".jsonl":
        return list(_jsonl_lines(source, path))
    return _whole_file(source, path)


def iter_records(
    source: DataSource, seed: int | None = None, counter: ReadCounter | None = None
) -> Iterator[dict[str, Any]]:
    """The records of ``source`` one at a time, read incrementally: stop iterating and the rest is never read.

    ``seed=None`` gives file order. A seed gives an order that depends only on it (not on the DDP rank): Parquet
    row groups or 1 MiB JSONL byte ranges in a seeded order, each shuffled; a folder or hub dataset streamed
    through a seeded shuffle buffer of ``STREAM_SHUFFLE_BUFFER`` records; other files read whole and shuffled.

    Raises:
        FileNotFoundError: A local file that does not exist.
        ValueError: A file in an unexpected shape, or a dataset that cannot be loaded.
    """
    counter = counter if counter is not None else ReadCounter()
    for record in _records(source, seed, counter):
        counter.emitted += 1
        yield record


def _records(source: DataSource, seed: int | None, counter: ReadCounter) -> Iterator[dict[str, Any]]:
    resolved = source.resolve()
    if resolved.kind != "file":
        dataset = _load_dataset(source, resolved, streaming=True)
        if seed is not None:  # count the rows the shuffle buffer pulls, not only those it hands out
            dataset = _shuffled_stream(dataset.map(_counting(counter)), seed)
        for record in _hub_iteration(source, resolved, dataset):
            if seed is None:
                counter.rows += 1
            yield record
        return
    path = _existing_file(source)
    if path.suffix == ".parquet":
        yield from _parquet_records(source, path, seed, counter)
    elif path.suffix == ".jsonl" and seed is not None:
        yield from _jsonl_chunks(source, path, seed, counter)
    elif path.suffix == ".jsonl":
        for record in _jsonl_lines(source, path):
            counter.rows += 1
            yield record
    else:
        records = _whole_file(source, path)
        counter.rows += len(records)
        if seed is not None:
            random.Random(seed).shuffle(records)
        yield from records


def _counting(counter: ReadCounter):
    def count(record: dict[str, Any]) -> dict[str, Any]:
        counter.rows += 1
        return record

    return count


def _shuffled_stream(dataset, seed: int):
    """A streamed dataset in a seeded order: shuffled shards through a seeded buffer, one shard at a time
    (interleaved shards are read in threads that sleep 5 s whenever a stream is left early)."""
    reshard = getattr(dataset, "reshard", None)  # datasets >= 5: one shard per row group instead of per file
    if reshard is not None:
        with contextlib.suppress(NotImplementedError):
            dataset = reshard()
    try:
        return dataset.shuffle(seed=seed, buffer_size=STREAM_SHUFFLE_BUFFER, max_buffer_input_shards=1)
    except TypeError:  # datasets without max_buffer_input_shards
        return dataset.shuffle(seed=seed, buffer_size=STREAM_SHUFFLE_BUFFER)


def _hub_iteration(source: DataSource, resolved: ResolvedSource, dataset) -> Iterator[dict[str, Any]]:
    iterator = iter(dataset)
    try:
        while True:
            try:
                record = next(iterator)
            except StopIteration:
                return
            except Exception as err:  # a streamed file that cannot be read, a connection lost mid-way
                raise _load_error(source, resolved, err) from err
            yield record
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()  # release the stream's open files now, not at interpreter shutdown


def _existing_file(source: DataSource) -> Path:
    path = source.local_path()
    if not path.is_file():
        raise InputNotFoundError(
            f"data file {source.path!r} does not exist (resolved to {path.resolve()}); expected a "
            f"{'/'.join(LOCAL_SUFFIXES)} file, a dataset folder or a hub dataset id"
        )
    if path.suffix not in LOCAL_SUFFIXES:
        raise InvalidValueError(
            f"data file {source.path!r} has an unknown suffix; expected one of {LOCAL_SUFFIXES}"
        )
    return path


def _whole_file(source: DataSource, path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix
    if suffix == ".txt":
        return [{"text": read_text(path, source.path)}]
    if suffix == ".json":
        records = read_json(path, source.path)
        if isinstance(records, dict):
            if source.field is None or source.field not in records:
                raise InvalidValueError(
                    f"{source.path} holds a JSON object with keys {sorted(records)[:10]}; set field: <key of the "
                    "record list>, or store a JSON array of records"
                )
            records = records[source.field]
    else:  # .csv
        records = read_csv(path, source.path)
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise InvalidValueError(f"{source.path} must hold a list of records (objects), one per example")
    return records


def _json_record(source: DataSource, line: bytes | str, where: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise InvalidValueError(
            f"{source.path} {where} is not valid JSON ({err}); expected one object per line"
        ) from err
    if not isinstance(record, dict):
        raise InvalidValueError(
            f"{source.path} {where} holds {type(record).__name__}; expected one object per line"
        )
    return record


def _jsonl_lines(source: DataSource, path: Path) -> Iterator[dict[str, Any]]:
    for number, record in iter_jsonl(path, source.path):
        if not isinstance(record, dict):
            raise InvalidValueError(
                f"{source.path}, line {number}: holds a {type(record).__name__}, not an object; each line must "
                "be one JSON object"
            )
        yield record


def _jsonl_chunks(
    source: DataSource, path: Path, seed: int, counter: ReadCounter
) -> Iterator[dict[str, Any]]:
    """Lines of a JSONL file by byte ranges in a seeded order; a line belongs to the range it starts in."""
    size = path.stat().st_size
    starts = list(range(0, size, JSONL_CHUNK_BYTES))
    rng = random.Random(seed)
    rng.shuffle(starts)
    with path.open("rb") as handle:
        for start in starts:
            end = start + JSONL_CHUNK_BYTES
            if start:
                handle.seek(start - 1)
                handle.readline()  # the end of the line that byte start-1 belongs to
            else:
                handle.seek(0)
            lines = []
            while handle.tell() < min(end, size):
                line = handle.readline()
                if line.strip():
                    lines.append(line)
            counter.rows += len(lines)
            rng.shuffle(lines)
            for line in lines:
                yield _json_record(source, line, f"byte range {start}-{end}")


def _parquet_records(
    source: DataSource, path: Path, seed: int | None, counter: ReadCounter
) -> Iterator[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except pa.ArrowException as err:
        raise InvalidValueError(f"{source.path} is not a readable Parquet file: {err}") from err
    with parquet:
        if seed is None:
            for batch in parquet.iter_batches(batch_size=1024):
                counter.rows += batch.num_rows
                yield from batch.to_pylist()
            return
        rng = random.Random(seed)
        groups = list(range(parquet.num_row_groups))
        rng.shuffle(groups)
        for group in groups:
            rows = parquet.read_row_group(group).to_pylist()
            counter.rows += len(rows)
            rng.shuffle(rows)
            yield from rows


def _load_dataset(source: DataSource, resolved: ResolvedSource, streaming: bool):
    import datasets

    kwargs: dict[str, Any] = {"split": source.split, "streaming": streaming}
    if resolved.data_dir is not None:
        kwargs["data_dir"] = resolved.data_dir
    if resolved.kind == "hub" and resolved.revision is not None:
        kwargs["revision"] = resolved.revision
    try:
        return datasets.load_dataset(resolved.target, resolved.name, **kwargs)
    except Exception as err:  # offline, unknown name, unknown config or split: one message for all
        raise _load_error(source, resolved, err) from err


def _load_error(source: DataSource, resolved: ResolvedSource, err: Exception) -> InvalidValueError:
    reason = " ".join(f"{type(err).__name__}: {err}".split())
    if len(reason) > 400:
        reason = reason[:400] + " ..."
    if resolved.kind == "directory":
        where = f"the mirror folder {resolved.target}" if resolved.mirror else "that folder"
        return InvalidValueError(
            f"could not load dataset {source.describe()} from {where}: {reason}. Check name, data_dir and split "
            "against the folder's dataset card (README.md configs) and its file names"
        )
    mirror = os.environ.get(MIRROR_ENV)
    hint = (
        f"{MIRROR_ENV}={mirror} has no folder {mirror_folder(mirror, source.path, source.revision)}"
        if mirror
        else f"offline, download the dataset first or set {MIRROR_ENV} to a folder holding <org>/<name>/"
    )
    return InvalidValueError(
        f"could not load hub dataset {source.describe()}: {reason}. For a local file, use a path ending in one "
        f"of {', '.join(LOCAL_SUFFIXES)}; {hint}"
    )
