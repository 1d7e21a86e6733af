"""The on-disk layout of adapter snapshots, and finding the adapter a path names.

``callbacks.AdapterSnapshot`` writes, under its ``dirpath``::

    epoch=0/                     a PEFT adapter directory ...
        adapter_config.json
        adapter_model.safetensors
        snapshot.json            ... plus what produced it (epoch, step, metrics, base model, config)
    epoch=1/
    last -> epoch=1              relative symlink to the newest snapshot

Anything that takes an adapter (``adapter_dir`` of the modules, the inputs of ``adamergex merge``) accepts a
PEFT adapter directory or such a snapshot root, whose ``last`` is then used.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

from adamergex_pl.errors import InputNotFoundError, InvalidValueError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
SNAPSHOT_JSON = "snapshot.json"
LAST_LINK = "last"
SNAPSHOT_NAME = re.compile(r"^epoch=(\d+)$")
_EXPECTED = (
    f"a PEFT adapter directory ({ADAPTER_CONFIG} + {ADAPTER_WEIGHTS}) or an AdapterSnapshot root "
    f"(epoch=<N>/ directories and a '{LAST_LINK}' link to the newest)"
)


def resolve_adapter_dir(path: str | Path, what: str = "adapter path") -> Path:
    """The PEFT adapter directory that ``path`` stands for: itself, or the ``last`` of a snapshot root.

    The ``last`` link is followed, so the result names the epoch directory.

    Args:
        path: a PEFT adapter directory or an ``AdapterSnapshot`` root.
        what: how error messages call the path (e.g. the option it came from, ``adapter_dir``).

    Raises:
        FileNotFoundError: ``path`` does not exist, is a file, lacks the adapter files (a pickled
            ``adapter_model.bin`` is named), or is a snapshot root whose ``last`` link is missing or dangling.
        ValueError: ``adapter_config.json`` is not a JSON object, or ``adapter_model.safetensors`` is
            truncated or its header is damaged.

    Example:
        >>> resolve_adapter_dir("runs/xnli_en/snapshots")  # doctest: +SKIP
        PosixPath('runs/xnli_en/snapshots/epoch=2')
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise InputNotFoundError(f"{what} {str(path)!r} does not exist; expected {_EXPECTED}")
    if not root.is_dir():
        raise InputNotFoundError(f"{what} {str(path)!r} is a file; expected {_EXPECTED}")
    if (root / ADAPTER_CONFIG).exists():
        return _checked_adapter_dir(root)
    last = root / LAST_LINK
    if last.is_dir():
        return _checked_adapter_dir(last.resolve())
    if last.is_symlink():
        raise InputNotFoundError(
            f"snapshot root {str(path)!r}: '{LAST_LINK}' points to {str(last.readlink())!r}, which does not exist; "
            "pass one of its epoch=<N> directories instead"
        )
    epochs = [p.name for _, p in list_snapshots(root)]
    if epochs:
        raise InputNotFoundError(
            f"snapshot root {str(path)!r} has {len(epochs)} epoch directories but no '{LAST_LINK}' link; "
            f"pass one of them instead, e.g. {str(root / epochs[-1])!r}"
        )
    raise InputNotFoundError(
        f"{what} {str(path)!r} holds neither {ADAPTER_CONFIG} nor a '{LAST_LINK}' link; expected {_EXPECTED}"
    )


def _checked_adapter_dir(directory: Path) -> Path:
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (directory / name).is_file():
            hint = ""
            if name == ADAPTER_WEIGHTS and (directory / "adapter_model.bin").is_file():
                hint = "; it has the pickle adapter_model.bin: re-save it with safe_serialization=True"
            raise InputNotFoundError(f"adapter directory {str(directory)!r} has no {name}{hint}")
    fix = "re-create it (re-run the fit or the merge that wrote it) or pass another adapter"
    try:
        config = json.loads((directory / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidValueError(f"{directory / ADAPTER_CONFIG} is not valid JSON ({err}); {fix}") from None
    except OSError as err:
        raise InvalidValueError(
            f"{directory / ADAPTER_CONFIG} cannot be read ({err.strerror}); {fix}"
        ) from None
    if not isinstance(config, dict):
        raise InvalidValueError(
            f"{directory / ADAPTER_CONFIG} holds {type(config).__name__}, not an object; {fix}"
        )
    problem = safetensors_problem(directory / ADAPTER_WEIGHTS)
    if problem is not None:
        raise InvalidValueError(f"adapter weights {str(directory / ADAPTER_WEIGHTS)!r} {problem}; {fix}")
    return directory


def safetensors_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a whole safetensors file (truncated, or a damaged header), or ``None``.

    Reads the 8-byte header length and the JSON header only: every tensor's byte range must lie inside the
    file and the last one must end where the file ends, which any truncation breaks.

    Example:
        >>> safetensors_problem(__file__)  # a Python file is no safetensors file
        'is not a safetensors file (its header length exceeds the file)'
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return f"is truncated ({size} bytes, less than a safetensors header)"
            length = struct.unpack("<Q", head)[0]
            if length > size - 8:
                return "is not a safetensors file (its header length exceeds the file)"
            header = json.loads(handle.read(length).decode("utf-8"))
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "is corrupt (its header is not valid JSON)"
    try:
        ends = [int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"]
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return "is corrupt (its header does not describe tensors)"
    expected = 8 + length + max(ends, default=0)
    if expected != size:
        return f"is truncated or corrupt ({size} bytes, its header describes {expected})"
    return None


def list_snapshots(root: str | Path) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of the complete snapshots under ``root``, oldest first."""
    found = []
    root = Path(root)
    if root.is_dir():
        for child in root.iterdir():
            match = SNAPSHOT_NAME.match(child.name)
            if match and child.is_dir() and not child.is_symlink():
                found.append((int(match.group(1)), child))
    return sorted(found)


def read_snapshot_info(adapter_dir: str | Path) -> dict[str, Any]:
    """The ``snapshot.json`` beside an adapter, or ``{}`` for an adapter that has none."""
    info = Path(adapter_dir) / SNAPSHOT_JSON
    return json.loads(info.read_text()) if info.is_file() else {}
