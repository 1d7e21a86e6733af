"""Quiet by default: the third-party notices that say nothing about an adamergex run stay off the console.

``adamergex`` (every command, and so every ``adamergex`` process a pipeline or a SLURM job starts) applies

* :data:`WARNING_FILTERS`, exactly the filters of the tests (``pyproject.toml``,
  ``[tool.pytest.ini_options] filterwarnings``; ``tests/e2e/test_cli_output.py`` keeps the two lists equal): every
  ``DeprecationWarning``, transformers' ``is_gradient_checkpointing`` / ``gradient_checkpointing_enable``
  FutureWarnings (whose second line is the stray ``warnings.warn(``), torch's ``LeafSpec`` deprecation that
  Lightning triggers, and Lightning's ``srun`` hint on machines with SLURM installed;
* :data:`CLI_WARNING_FILTERS`: Lightning's note that the default logger is a CSVLogger without tensorboard,
  and LightningCLI's warning when ``main(argv)`` runs in process (the pipeline does);
* :data:`LOG_FILTERS`: log records dropped by their logger: bitsandbytes' "Failed to load CPU
  gemm_4bit_forward ... kernels" (logged when bitsandbytes is imported, in every process, quantized or not)
  and Lightning's litlogger / litmodels tips.

``adamergex --verbose <command> ...`` (or ``ADAMERGEX_VERBOSE=1``) applies none of them; the flag is passed on
to child processes through ``ADAMERGEX_VERBOSE``.
"""

from __future__ import annotations

import builtins
import logging
import os
import warnings

__all__ = ["CLI_WARNING_FILTERS", "LOG_FILTERS", "VERBOSE_ENV", "WARNING_FILTERS", "apply", "is_verbose"]

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
    "ignore:Starting from v1.9.0, `tensorboardX` has been removed",
    "ignore:LightningCLI's args parameter is intended to run from within Python",
)
LOG_FILTERS: dict[str, tuple[str, ...]] = {
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward",),
    "lightning.pytorch.utilities.rank_zero": ("litlogger", "litmodels"),
    "lightning.pytorch": ("litlogger", "litmodels"),
}


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


def apply() -> None:
    """Apply the filters (nothing when verbose). Idempotent: call it again after importing Lightning, which
    puts its own ``default`` filter for its deprecations in front of earlier ones."""
    if is_verbose():
        return
    for spec in (*WARNING_FILTERS, *CLI_WARNING_FILTERS):
        _filter_warnings(spec)
    for name, fragments in LOG_FILTERS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(fragments))
