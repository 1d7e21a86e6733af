"""Writing a merged adapter: a standard PEFT adapter directory plus ``merge.json``, atomically
(:mod:`adamergex_pl.atomic_files`): a refused, failed or killed write leaves nothing behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from adamergex_pl.atomic_files import finish_interrupted_writes, is_within, publish_dir, staging_dir
from adamergex_pl.errors import InvalidValueError, reraise_os_error
from adamergex_pl.merging.methods import formula
from adamergex_pl.merging.result import MergeResult

MERGE_RECORD_FILE = "merge.json"


def write_merged(result: MergeResult, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write a PEFT adapter directory (``PeftModel.from_pretrained`` loads it) with ``merge.json``; return it.

    Concurrent writes into one ``out_dir`` are safe: with ``overwrite`` the last one wins and the folder is always
    one whole merge; without it, every write but the first is refused.

    Raises:
        FileExistsError: ``out_dir`` exists and ``overwrite`` is false, or it is a file or a link.
        ValueError: ``out_dir`` is (or contains) one of the merge's inputs, or a tensor is not finite.
        OSError: (``OutputNotWritableError``) the folder is read-only or the disk is full.
    """
    out = Path(out_dir)
    try:
        finish_interrupted_writes(out.parent, out.name)
    except Exception as err:
        reraise_os_error(err, "merged adapter", out)
    resolved = out.resolve()
    for entry in result.inputs:
        if entry["path"] and is_within(Path(entry["path"]).resolve(), resolved):
            raise InvalidValueError(
                f"out_dir {str(out)!r} holds the input {entry['role']} ({entry['path']}); writing there "
                "would destroy it: choose another directory"
            )
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise FileExistsError(f"out_dir {str(out)!r} is a file or a link; choose another path")
        if not overwrite:
            raise FileExistsError(
                f"out_dir {str(out)!r} already exists; pass overwrite=True (--overwrite true) to replace it, or "
                "choose another directory"
            )
    try:
        staging = staging_dir(out)
    except Exception as err:
        reraise_os_error(err, "merged adapter", out)
    try:
        result.adapter.save(staging)
        record = json.dumps(
            result.record(formula(result.method)), indent=2, ensure_ascii=False, allow_nan=False
        )
        (staging / MERGE_RECORD_FILE).write_text(record + "\n", encoding="utf-8")
        try:
            publish_dir(staging, out, replace=overwrite)
        except FileExistsError:  # a concurrent run published out_dir after the check above
            raise FileExistsError(
                f"out_dir {str(out)!r} was written by another run meanwhile; pass overwrite=True (--overwrite "
                "true) to replace it, or choose another directory"
            ) from None
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        reraise_os_error(err, "merged adapter", out)
    return out
