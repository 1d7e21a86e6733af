"""SLURM time limits (``--time``): parsing the formats that sbatch accepts into seconds.

sbatch accepts ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M`` and ``D-H:M:S`` (minutes, seconds, hours, days),
and ``INFINITE`` / ``UNLIMITED`` for no limit. The seconds are needed to check that the requeue signal
(``--signal=SIGUSR1@<seconds>``) comes before the time limit.

Example:
    >>> parse_time_limit("02:00:00")
    7200
    >>> parse_time_limit("1-12")
    129600
    >>> parse_time_limit("UNLIMITED") is None
    True
"""

from __future__ import annotations

import re

TIME_FORMS = "minutes, M:S, H:M:S, D-H, D-H:M or D-H:M:S (e.g. '90', '02:00:00', '1-12:00:00'), or UNLIMITED"
_NO_LIMIT = {"INFINITE", "UNLIMITED"}
_DAYS_FORM = re.compile(r"^(\d+)-(\d+)(?::(\d+))?(?::(\d+))?$")
_CLOCK_FORM = re.compile(r"^(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_time_limit(value: str) -> int | None:
    """The number of seconds in a SLURM time limit, or ``None`` for no limit.

    Args:
        value: a time limit as sbatch's ``--time`` takes it.

    Returns:
        The limit in seconds; ``None`` for ``INFINITE`` or ``UNLIMITED``.

    Raises:
        ValueError: ``value`` is not in one of sbatch's formats, has minutes or seconds of 60 or more after
            the leading field, or is zero.

    Example:
        >>> parse_time_limit("30:00")
        1800
    """
    text = value.strip() if isinstance(value, str) else value
    if not isinstance(text, str) or not text:
        raise ValueError(f"time={value!r} is not a SLURM time limit; expected {TIME_FORMS}")
    if text.upper() in _NO_LIMIT:
        return None
    days_match = _DAYS_FORM.match(text)
    clock_match = _CLOCK_FORM.match(text)
    if days_match:
        days, hours, minutes, seconds = (int(g) if g else 0 for g in days_match.groups())
        bounded = {"hours": (hours, 24), "minutes": (minutes, 60), "seconds": (seconds, 60)}
        total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    elif clock_match:
        fields = [int(g) for g in clock_match.groups() if g is not None]
        if len(fields) == 1:  # minutes
            bounded, total = {}, fields[0] * 60
        elif len(fields) == 2:  # minutes:seconds
            bounded, total = {"seconds": (fields[1], 60)}, fields[0] * 60 + fields[1]
        else:  # hours:minutes:seconds
            hours, minutes, seconds = fields
            bounded = {"minutes": (minutes, 60), "seconds": (seconds, 60)}
            total = (hours * 60 + minutes) * 60 + seconds
    else:
        raise ValueError(f"time={value!r} is not a SLURM time limit; expected {TIME_FORMS}")
    for name, (amount, limit) in bounded.items():
        if amount >= limit:
            raise ValueError(f"time={value!r} has {amount} {name}; expected fewer than {limit} in that field")
    if total == 0:
        raise ValueError(f"time={value!r} is zero; give a positive limit, or UNLIMITED (or no time) for none")
    return total
