"""Checking every record of a data source against the templates that render it, before any tokenization.

Only the first record used to be checked, so a record without its completion in the middle of a file trained
with an empty completion. :func:`check_records` checks them all and names the first bad one by its place in
the file (``line 31`` of a JSONL file), the field, and how many more records share the problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from adamergex_pl.data.readers import record_location
from adamergex_pl.data.sources import DataSource
from adamergex_pl.data.templates import PromptTemplate
from adamergex_pl.errors import InvalidValueError


def check_records(
    records: Sequence[Any],
    source: DataSource,
    templates: Iterable[PromptTemplate],
    needs_value: Iterable[PromptTemplate] = (),
) -> None:
    """Refuse records that lack a field a template names, or leave a ``needs_value`` template's field null.

    Args:
        records: the source's records, in file order.
        source: where they came from (for the message: its path, and the line of a local file's record).
        templates: every template the records are rendered through (e.g. the prompt and the completion):
            :class:`PromptTemplate` objects, or anything with ``fields``, ``option`` and ``template``.
        needs_value: templates whose fields must not be null either (the completion: a null would train on
            an empty target); other templates render a null as an empty string.

    Raises:
        ValueError: naming the source, the record's line or number, the field and the template.

    Example:
        >>> from adamergex_pl.data.templates import PromptTemplate
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
