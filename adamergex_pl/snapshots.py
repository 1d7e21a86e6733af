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
from pathlib import Path
from typing import Any

from adamergex_pl.errors import InputNotFoundError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
SNAPSHOT_JSON = "snapshot.json"
LAST_LINK = "last"
SNAPSHOT_NAME = re.compile(r"^epoch=(\d+)$")


def is_adapter_dir(path: Path) -> bool:
    """A PEFT adapter directory: a config and a weights file."""
    return (path / ADAPTER_CONFIG).is_file() and any((path / w).is_file() for w in ADAPTER_WEIGHTS)


def resolve_adapter_dir(path: str | Path, what: str = "adapter_dir") -> Path:
    """The PEFT adapter directory that ``path`` names: itself, or the ``last`` of a snapshot root.

    Args:
        path: a PEFT adapter directory or an ``AdapterSnapshot`` root.
        what: the option name to quote in error messages.

    Raises:
        FileNotFoundError: ``path`` does not exist, or holds neither adapter files nor a ``last`` link.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise InputNotFoundError(f"{what}={str(path)!r} does not exist")
    if is_adapter_dir(root):
        return root
    last = root / LAST_LINK
    if last.exists() and is_adapter_dir(last.resolve()):
        return last.resolve()
    raise InputNotFoundError(
        f"{what}={str(path)!r} is neither a PEFT adapter directory ({ADAPTER_CONFIG} plus "
        f"{ADAPTER_WEIGHTS[0]}) nor a snapshot root with a '{LAST_LINK}' link to one"
    )


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
