"""Prompt formats of Alpaca-style rows (``instruction``, ``input``, ``output``), tokenized with the prompt masked.

* ``alpaca``: the Stanford Alpaca prompt ("### Input:" only for a non-empty input), response after "### Response:\n";
* ``plain``: the instruction, a blank line, the input (if any), a blank line, the response;
* ``chat``: the tokenizer's chat template, instruction (and input) as the user turn.

Labels are ``-100`` on the prompt; the completion ends with EOS (``chat``: unless the template's turn end is EOS).
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from adamergex_pl.errors import InvalidValueError
from data_modules.collate import IGNORE_INDEX


class PromptTemplate:
    """A format string with named fields.

    Args:
        template: The format string, e.g. ``"{instruction}\\n\\n### Response:\\n"``.
        option: The option it came from, quoted in error messages (e.g. ``prompt_template``).

    Raises:
        ValueError: The template is malformed, or uses positional or attribute/index fields.

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


PromptFormat = Literal["alpaca", "plain", "chat"]
PROMPT_FORMATS = ("alpaca", "plain", "chat")
ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)


def chat_prompt(tokenizer: Any, content: str) -> str:
    """``content`` as the user turn of the tokenizer's chat template, followed by the generation prompt.

    Raises:
        InvalidValueError: the tokenizer has no chat template.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidValueError(
            f"prompt_format='chat' needs a tokenizer with a chat template, and {tokenizer.name_or_path!r} has "
            "none; use prompt_format alpaca or plain, or an instruction-tuned model's tokenizer"
        )
    messages = [{"role": "user", "content": content}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


class InstructionFormat:
    """Renders and tokenizes instruction rows in one of the prompt formats of the module docstring.

    Args:
        prompt_format: ``alpaca``, ``plain`` or ``chat``.

    Raises:
        InvalidValueError: an unknown format.

    Example:
        >>> prompt, completion = InstructionFormat("plain").render(
        ...     {"instruction": "Add.", "input": "2 + 3\\n[zh]", "output": "五"})
        >>> prompt, completion
        ('Add.\\n\\n2 + 3\\n[zh]\\n\\n', '五')
    """

    def __init__(self, prompt_format: PromptFormat = "alpaca") -> None:
        if prompt_format not in PROMPT_FORMATS:
            raise InvalidValueError(
                f"prompt_format={prompt_format!r} is not supported; expected one of {', '.join(PROMPT_FORMATS)}"
            )
        self.prompt_format = prompt_format

    @staticmethod
    def user_text(row: dict[str, str]) -> str:
        """The instruction, and the input after a blank line when there is one."""
        return f"{row['instruction']}\n\n{row['input']}" if row["input"] else row["instruction"]

    def render(self, row: dict[str, str], tokenizer: Any = None) -> tuple[str, str]:
        """``(prompt, completion)`` text of a row (``chat`` needs the tokenizer).

        Raises:
            InvalidValueError: ``chat`` without a tokenizer or chat template, or one inconsistent with a response.
        """
        if self.prompt_format == "alpaca":
            template = ALPACA_WITH_INPUT if row["input"] else ALPACA_NO_INPUT
            return template.format(instruction=row["instruction"], input=row["input"]), row["output"]
        if self.prompt_format == "plain":
            return f"{self.user_text(row)}\n\n", row["output"]
        if tokenizer is None:
            raise InvalidValueError(
                "prompt_format='chat' renders through a tokenizer's chat template; give one"
            )
        prompt = chat_prompt(tokenizer, self.user_text(row))
        messages = [
            {"role": "user", "content": self.user_text(row)},
            {"role": "assistant", "content": row["output"]},
        ]
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        if not full.startswith(prompt):
            raise InvalidValueError(
                f"the chat template of {tokenizer.name_or_path!r} renders the user turn differently once the "
                "response is added, so the prompt cannot be masked; use prompt_format alpaca or plain"
            )
        return prompt, full[len(prompt) :]

    def tokenize(
        self, rows: Sequence[dict[str, Any]], tokenizer: Any, max_length: int
    ) -> tuple[list[dict[str, list[int]]], int]:
        """Prompt-masked examples truncated to ``max_length``, and how many rows lost their whole completion."""
        if not rows:
            return [], 0
        texts = [self.render(row, tokenizer) for row in rows]
        chat = self.prompt_format == "chat"
        prompts = tokenizer([p for p, _ in texts], add_special_tokens=not chat)["input_ids"]
        completions = tokenizer([c for _, c in texts], add_special_tokens=False)["input_ids"]
        examples, dropped = [], 0
        eos = tokenizer.eos_token_id
        for prompt_ids, completion_ids in zip(prompts, completions, strict=True):
            if not chat or eos not in completion_ids:
                completion_ids = [*completion_ids, eos]
            input_ids = (prompt_ids + completion_ids)[:max_length]
            if len(input_ids) <= len(prompt_ids):
                dropped += 1
                continue
            labels = ([IGNORE_INDEX] * len(prompt_ids) + completion_ids)[:max_length]
            examples.append({"input_ids": input_ids, "labels": labels})
        return examples, dropped
