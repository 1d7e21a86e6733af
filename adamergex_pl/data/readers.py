"""Reading local data files with one-line errors that name the file, the line and what is wrong.

``json.loads`` on a whole file reports "line 1" for a bad 31st line of a JSONL file, and a byte that is not
UTF-8 ends in a ``UnicodeDecodeError`` traceback. These readers report the line (and column) of the problem
and the fix instead. :func:`record_location` finds where the N-th record of a file is, for the messages of
the record checks (:mod:`adamergex_pl.data.record_checks`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adamergex_pl.errors import InvalidValueError

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
    """``(line number, JSON value)`` of each non-blank line, read one line at a time (stop early and the rest
    is never read). Raises as :func:`read_jsonl`."""
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
    """Where record ``index`` (0-based) of a local file is, for messages: ``line 31`` (JSONL: blank lines
    skipped, as the reader does), ``row 31`` (CSV, after the header), else ``record 31``."""
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
