"""Whether a stage is done: its record, *and* the outputs on disk that the record vouches for.

A stage's ``stage.json`` holds its fingerprint (config and inputs), the SHA-256 digests of its outputs and
those of the outputs it used; it is done only while all three still hold.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from adamergex_pl.errors import UserInputError
from callbacks.adapter_snapshot import ADAPTER_CONFIG, ADAPTER_WEIGHTS, LAST_LINK, resolve_adapter_dir

STAGE_RECORD = "stage.json"
RESULTS_DIR = "merge_results"


def outputs_dir(root: Path, is_fit: bool) -> Path:
    """Where a stage writes what later stages (or the report) read."""
    return root / ("snapshots" if is_fit else RESULTS_DIR)


def output_digest(root: Path, is_fit: bool) -> dict[str, str] | None:
    """``{file: sha256}`` of a stage's outputs now, or ``None`` when they are missing or incomplete.

    A fit's outputs are the adapter files of ``snapshots/last`` (not its timestamped ``snapshot.json``), an
    evaluation's every file under ``merge_results/``.
    """
    folder = outputs_dir(root, is_fit)
    if is_fit:
        try:
            adapter = resolve_adapter_dir(folder)
        except (UserInputError, OSError):
            return None
        files = [adapter / ADAPTER_CONFIG, adapter / ADAPTER_WEIGHTS]
        return {f"{LAST_LINK}->{adapter.name}/{f.name}": _sha256(f, *_stamp(f)) for f in files}
    if not folder.is_dir() or not any(folder.glob("results.*")):
        return None
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    return {str(path.relative_to(folder)): _sha256(path, *_stamp(path)) for path in files}


def read_record(root: Path, name: str = STAGE_RECORD) -> dict[str, Any] | None:
    """The stage's ``stage.json`` (or another record), ``None`` if missing or unreadable (a stage that must
    run)."""
    try:
        record = json.loads((root / name).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def not_done_reason(
    root: Path, is_fit: bool, fingerprint: str, inputs: dict[str, dict[str, str] | None]
) -> str | None:
    """Why the stage in ``root`` must run, or ``None`` when it is done.

    Args:
        root: the stage's folder.
        is_fit: whether it is a fit (its outputs are snapshots) or the evaluation (results).
        fingerprint: the stage's current fingerprint.
        inputs: the recorded output digest of each stage it depends on, by name.
    """
    record = read_record(root)
    if record is None:
        return "never finished"
    if record.get("fingerprint") != fingerprint:
        return "its settings changed"
    outputs = output_digest(root, is_fit)
    if outputs is None:
        return f"its outputs ({outputs_dir(root, is_fit)}) are missing or incomplete"
    if outputs != record.get("outputs"):
        return f"its outputs ({outputs_dir(root, is_fit)}) changed since it finished"
    changed = sorted(
        name for name, digest in inputs.items() if (record.get("inputs") or {}).get(name) != digest
    )
    if changed:
        return f"the outputs of {', '.join(changed)} changed since it ran"
    return None


def recorded_outputs(root: Path) -> dict[str, str] | None:
    """The output digest a finished stage recorded (what the stages that use it compare against)."""
    record = read_record(root)
    return record.get("outputs") if record else None


def record_entry(stage: str, fingerprint: str, outputs: dict[str, str], inputs: dict[str, Any]) -> str:
    """The text of a finished stage's ``stage.json``."""
    entry = {"stage": stage, "fingerprint": fingerprint, "outputs": outputs, "inputs": inputs}
    return json.dumps(entry, indent=1, sort_keys=True) + "\n"


def _stamp(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_size, info.st_mtime_ns


@lru_cache(maxsize=4096)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file, cached per (path, size, mtime) within one process: a pipeline asks several times."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
