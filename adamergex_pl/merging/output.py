"""Writing a merged adapter: a standard PEFT adapter directory plus ``merge.json``, atomically.

The directory is built in a temporary directory beside the target and renamed into place, so a refused or
failed write leaves no output directory behind, and an overwritten one is replaced whole (the old directory is
moved aside first and removed after the rename). A write killed half-way leaves ``.<out>.tmp-*`` (the staging
directory) or ``.<out>.old-*`` (the old output, moved aside); the next write to the same ``out_dir`` removes
the first and puts the second back when ``out_dir`` is missing, so that nothing is lost or left behind.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from pathlib import Path

from adamergex_pl.errors import InvalidValueError, reraise_os_error
from adamergex_pl.merging.methods import formula
from adamergex_pl.merging.result import MergeResult
from adamergex_pl.results.files import current_umask

MERGE_RECORD_FILE = "merge.json"


def write_merged(result: MergeResult, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``adapter_config.json``, ``adapter_model.safetensors`` and ``merge.json`` to ``out_dir``.

    ``peft.PeftModel.from_pretrained(base, out_dir)`` loads the result.

    Args:
        result: what :func:`merge_adapters` or :func:`combine_adapters` returned.
        out_dir: the directory to create (its parent is created if needed).
        overwrite: replace an existing ``out_dir``.

    Returns:
        ``out_dir`` as a ``Path``.

    Raises:
        FileExistsError: ``out_dir`` exists and ``overwrite`` is false, or it is a file or a link.
        ValueError: ``out_dir`` is (or contains) one of the merge's inputs, or a tensor is not finite.
        OSError: (``adamergex_pl.errors.OutputNotWritableError``) the folder is read-only or the disk is full;
            nothing is left behind.

    Example:
        >>> result = merge_adapters("xnli_en", "wiki_en", "wiki_de", scale=0.5)  # doctest: +SKIP
        >>> write_merged(result, "xnli_de")  # doctest: +SKIP
        PosixPath('xnli_de')
    """
    out = Path(out_dir)
    try:
        _finish_interrupted_write(out)
    except Exception as err:
        reraise_os_error(err, "merged adapter", out)
    resolved = out.resolve()
    for entry in result.inputs:
        if entry["path"] and _is_within(Path(entry["path"]).resolve(), resolved):
            raise InvalidValueError(
                f"out_dir {str(out)!r} holds the input {entry['role']} ({entry['path']}); writing there "
                "would destroy it: choose another directory"
            )
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise FileExistsError(f"out_dir {str(out)!r} is a file or a link; choose another path")
        if not overwrite:
            raise FileExistsError(
                f"out_dir {str(out)!r} already exists; pass overwrite=True (--overwrite) to replace it, or "
                "choose another directory"
            )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except Exception as err:
        reraise_os_error(err, "merged adapter", out)
    try:
        result.adapter.save(staging)
        record = json.dumps(
            result.record(formula(result.method)), indent=2, ensure_ascii=False, allow_nan=False
        )
        (staging / MERGE_RECORD_FILE).write_text(record + "\n", encoding="utf-8")
        os.chmod(staging, 0o777 & ~current_umask())
        if out.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(retired / out.name)
            try:
                staging.rename(out)
            except OSError:
                (retired / out.name).rename(out)  # put the old one back
                retired.rmdir()
                raise
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(out)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        reraise_os_error(err, "merged adapter", out)
    return out


def _finish_interrupted_write(out: Path) -> None:
    """Remove what a killed write to ``out`` left beside it; put back an old output moved aside but not
    replaced (``out`` missing)."""
    if not out.parent.is_dir():
        return
    name = glob.escape(out.name)
    for retired in sorted(out.parent.glob(f".{name}.old-*")):
        kept = retired / out.name
        if kept.is_dir() and not (out.exists() or out.is_symlink()):
            kept.rename(out)
        shutil.rmtree(retired, ignore_errors=True)
    for staging in out.parent.glob(f".{name}.tmp-*"):
        shutil.rmtree(staging, ignore_errors=True)


def _is_within(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents
