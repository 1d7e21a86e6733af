"""Prompt and completion templates: Python format strings over a record's fields.

``"Premise: {premise}\\nHypothesis: {hypothesis}\\nAnswer:"`` renders a record's ``premise`` and ``hypothesis``
fields; literal braces are written ``{{`` and ``}}``. A template is checked against the records before any
tokenization, so a misspelt field stops the run with the list of fields the data has.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from typing import Any

from adamergex_pl.errors import InvalidValueError


class PromptTemplate:
    """A format string with named fields.

    Args:
        template: the format string, e.g. ``"{instruction}\\n\\n### Response:\\n"``.
        option: the option it came from, quoted in error messages (e.g. ``prompt_template``).

    Raises:
        ValueError: the template is malformed, or uses positional or attribute/index fields.

    Example:
        >>> PromptTemplate("Q: {question}\\nA:").render({"question": "2+2?"})
        'Q: 2+2?\\nA:'
    """

    def __init__(self, template: str, option: str = "template") -> None:
        self.template = template
        self.option = option
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as err:
            raise InvalidValueError(f"{option}={template!r} is not a valid format string: {err}") from err
        fields = [name for _, name, _, _ in parsed if name is not None]
        bad = [f for f in fields if not f.isidentifier()]
        if bad:
            raise InvalidValueError(
                f"{option}={template!r} uses fields {bad}; use plain field names such as {{question}} "
                "(write literal braces as {{{{ and }}}})"
            )
        self.fields = tuple(dict.fromkeys(fields))

    def check_fields(self, available: Iterable[str], source: str) -> None:
        """Refuse a template that names a field the records lack.

        Raises:
            ValueError: naming the missing fields, the data source and the fields it has.
        """
        available = list(available)
        missing = [f for f in self.fields if f not in available]
        if missing:
            raise InvalidValueError(
                f"{self.option}={self.template!r} names field(s) {missing} that the records of {source} lack; "
                f"their fields are {available}"
            )

    def render(self, record: Mapping[str, Any]) -> str:
        """The template filled with ``record``'s fields (``None`` renders as an empty string)."""
        return self.template.format(**{f: "" if record.get(f) is None else record[f] for f in self.fields})
