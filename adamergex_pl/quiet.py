"""Quiet by default: the third-party notices that say nothing about an adamergex run stay off the console.

Every ``adamergex`` process (pipelines and SLURM jobs included) applies :data:`WARNING_FILTERS` (the tests'
``filterwarnings`` in ``pyproject.toml``, kept equal by ``tests/e2e/test_cli_output.py``),
:data:`CLI_WARNING_FILTERS`, :data:`LOG_FILTERS` (log records dropped by logger) and
:data:`QUIET_PROGRESS_BARS` (transformers' weight-loading bars; download bars stay).

``adamergex --verbose <command> ...`` (or ``ADAMERGEX_VERBOSE=1``) applies none of them; the flag is passed on
to child processes through ``ADAMERGEX_VERBOSE``.
"""

from __future__ import annotations

import builtins
import logging
import os
import sys
import warnings

__all__ = [
    "CLI_WARNING_FILTERS",
    "LOG_FILTERS",
    "QUIET_PROGRESS_BARS",
    "VERBOSE_ENV",
    "WARNING_FILTERS",
    "apply",
    "is_verbose",
]

VERBOSE_ENV = "ADAMERGEX_VERBOSE"

# action:message:category, as pytest writes them; the message is a regular expression matched at the start
WARNING_FILTERS: tuple[str, ...] = (
    "ignore::DeprecationWarning",
    "ignore:The `srun` command is available on your system:UserWarning",
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning",
    "ignore:`gradient_checkpointing_enable` is deprecated:FutureWarning",
    "ignore:.*LeafSpec.* is deprecated",
)
CLI_WARNING_FILTERS: tuple[str, ...] = (
    "ignore:LightningCLI's args parameter is intended to run from within Python",
    "ignore:The number of training batches .* is smaller than the logging interval",
)
LOG_FILTERS: dict[str, tuple[str, ...]] = {
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward",),
    "lightning.pytorch.utilities.rank_zero": (
        "litlogger",
        "litmodels",
        "GPU available: ",
        "TPU available: ",
        "to estimate number of stepping batches",
    ),
    "lightning.pytorch": ("litlogger", "litmodels"),
}
QUIET_PROGRESS_BARS: tuple[str, ...] = ("Loading weights", "Writing model shards")


class _DropMessages(logging.Filter):
    """Drops records whose message contains any of ``fragments``."""

    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def is_verbose() -> bool:
    """Whether this process shows every warning (``ADAMERGEX_VERBOSE`` set to something other than 0/empty)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def _filter_warnings(spec: str) -> None:
    """``warnings.filterwarnings`` from a pytest-style ``action:message:category`` string."""
    action, message, category, *_ = [*spec.split(":", 2), "", ""]
    kind = getattr(builtins, category) if category else Warning
    warnings.filterwarnings(action, message=message, category=kind)


def _quiet_bar(factory, args, kwargs):
    """transformers' tqdm hook: the bars of :data:`QUIET_PROGRESS_BARS` are built disabled."""
    if kwargs.get("desc") in QUIET_PROGRESS_BARS:
        kwargs = {**kwargs, "disable": True}
    return factory(*args, **kwargs)


def apply() -> None:
    """Apply the filters (nothing when verbose). Idempotent: call it again after importing Lightning, which
    puts its own ``default`` filter for its deprecations in front of earlier ones, and imports transformers
    (whose progress bars are quietened only once it is imported: importing it here would slow every command).
    """
    if is_verbose():
        return
    for spec in (*WARNING_FILTERS, *CLI_WARNING_FILTERS):
        _filter_warnings(spec)
    for name, fragments in LOG_FILTERS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(fragments))
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_tqdm_hook(_quiet_bar)
