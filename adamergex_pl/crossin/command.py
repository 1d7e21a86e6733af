"""``adamergex crossin build``: write a CrossIn mixture to JSONL for inspection, from the config that trains on it.

    adamergex crossin build --config configs/tiny/crossin_x2x.yaml --out mix.jsonl
    adamergex crossin build --config configs/tiny/crossin_x2x.yaml --data.init_args.variant en2x+trans \\
        --data.init_args.n 5 --split all --rendered --out mix.jsonl

The config is an ordinary ``adamergex fit`` config (its ``model`` and ``trainer`` sections are read but not
used) whose ``data`` is a :class:`data_modules.CrossInDataModule`; ``--data.init_args.<key>`` overrides work as
in ``fit``. Each output line is one row: ``split`` (``train``/``val``), ``mode`` (0-3), ``mode_name``,
``language`` (the drawn target language; ``en`` for base rows), ``index`` (the parallel item, or the base
row), ``key`` (with ``align_on``), ``instruction``, ``input``, ``output``, and with ``--rendered`` the
``prompt`` and ``completion`` text in the configured prompt format (``chat`` loads the tokenizer). Rows are
in mixture order: base rows, then the draws (one row per selected mode each). The file is written to a
temporary name and renamed, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

USAGE = (
    "usage: adamergex crossin build --config CONFIG.yaml --out MIX.jsonl [--split train|val|all] [--rendered]"
)


def _parser():
    from jsonargparse import ActionConfigFile, ActionYesNo, ArgumentParser
    from lightning.pytorch import LightningDataModule

    parser = ArgumentParser(
        prog="adamergex crossin build",
        description="Write the CrossIn training mixture of a config to JSONL (see adamergex_pl/crossin/command.py).",
        exit_on_error=False,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="an adamergex fit config (repeatable)")
    # any DataModule by class_path, as in `fit` (no import of data_modules here: it builds on this package)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    # the other sections of a fit config: accepted so that the same file works, otherwise unused
    parser.add_argument("--model", type=dict | None, default=None, help="unused (the fit config's model)")
    parser.add_argument("--trainer", type=dict | None, default=None, help="unused (the fit config's trainer)")
    parser.add_argument("--seed_everything", type=int | bool | None, default=None, help="unused")
    parser.add_argument("--ckpt_path", type=str | None, default=None, help="unused")
    parser.add_argument("--out", type=str, required=True, help="the JSONL file to write")
    parser.add_argument(
        "--split", type=Literal["train", "val", "all"], default="train", help="which rows to write"
    )
    parser.add_argument(
        "--rendered",
        action=ActionYesNo,
        default=False,
        help="add the prompt and completion text of every row",
    )
    return parser


def _tokenizer_name(config: Any) -> str | None:
    data_args = config.data.init_args
    if getattr(data_args, "tokenizer", None):
        return data_args.tokenizer
    model = config.model or {}
    return (model.get("init_args") or {}).get("base_model")


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    from adamergex_pl.errors import reraise_os_error
    from adamergex_pl.results.files import write_text_atomic

    try:
        write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    except Exception as err:  # a read-only folder or a full disk is one line; nothing is left behind
        reraise_os_error(err, "--out", path)


def build(argv: list[str]) -> int:
    """``adamergex crossin build ...``: see the module docstring."""
    from adamergex_pl.crossin.mixture import CrossInMixture

    parser = _parser()
    config = parser.parse_args(argv)
    datamodule = parser.instantiate(config).data
    if not hasattr(datamodule, "mixture"):
        from adamergex_pl.errors import InvalidValueError

        raise InvalidValueError(
            f"data.class_path={config.data.class_path!r} builds no CrossIn mixture; expected "
            "data_modules.CrossInDataModule"
        )
    train, val = datamodule.mixture.build()
    rows = []
    if config.split in ("train", "all"):
        rows += [{"split": "train", **row} for row in train]
    if config.split in ("val", "all"):
        rows += [{"split": "val", **row} for row in val]
    if config.rendered:
        tokenizer = None
        if datamodule.format.prompt_format == "chat":
            from adamergex_pl.training.base_model import load_tokenizer

            name = _tokenizer_name(config)
            if name is None:
                from adamergex_pl.errors import InvalidValueError

                raise InvalidValueError(
                    "--rendered with prompt_format chat needs a tokenizer; set model.init_args.base_model or "
                    "--data.init_args.tokenizer"
                )
            tokenizer = load_tokenizer(name)
        for row in rows:
            row["prompt"], row["completion"] = datamodule.format.render(row, tokenizer)
    out = Path(config.out)
    _write_jsonl(out, rows)
    print(
        f"wrote {len(rows)} rows to {out} (modes {list(datamodule.mixture.modes)}, seed {datamodule.seed}): "
        f"train {CrossInMixture.counts(train)}, val {CrossInMixture.counts(val)}; cross-lingual rows per "
        f"target language (train) {CrossInMixture.language_counts(train)}"
    )
    return 0


SUBCOMMANDS = {"build": build}


def main(argv: list[str]) -> int:
    """``adamergex crossin <subcommand> ...``."""
    if not argv or argv[0] in ("-h", "--help"):
        print(f"{USAGE}\n\nRun 'adamergex crossin build --help' for every option.")
        return 0 if argv else 2
    if argv[0] not in SUBCOMMANDS:
        message = f"unknown crossin subcommand {argv[0]!r}; expected one of {list(SUBCOMMANDS)}"
        print(f"adamergex: error: {message}", file=sys.stderr)
        return 2
    return SUBCOMMANDS[argv[0]](argv[1:])
