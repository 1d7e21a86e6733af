"""``adamergex merge``: merge PEFT adapters with AdaMergeX (or AriMerge) and write a PEFT adapter directory.

    adamergex merge --task-src DIR --ref-src DIR --ref-tgt DIR --out DIR [--scale T]
                    [--method adamergex|arimerge] [--lora-mode exact|factor|svd] [--svd-rank R]
                    [--ia3-mode paper|loglinear] [--eps E] [--strict-modules] [--allow-different-base]
                    [--overwrite]

computes ``A(T,tgt) = A(T,src) ⊕ t·(A(R,tgt) ⊖ A(R,src))`` (``arimerge``: ``A(T,src) ⊕ t·A(R,tgt)``, no
``--ref-src``) with operators that follow the adapter type (see :mod:`adamergex_pl.merging.merge`). Each input
is a PEFT adapter directory or an ``AdapterSnapshot`` root (its ``last`` epoch is used). The output holds
``adapter_config.json``, ``adapter_model.safetensors`` and ``merge.json``; it is written atomically, and
nothing is written when the merge is refused (one error line on stderr, exit code 2).

Until the console script is wired, run it as ``python -m adamergex_pl.merging.command ...``.
"""

from __future__ import annotations

import argparse
import sys

from adamergex_pl.errors import InvalidValueError, UserInputError
from adamergex_pl.merging.adapters import AdapterWeights
from adamergex_pl.merging.merge import IA3_MODES, LORA_MODES
from adamergex_pl.merging.methods import METHODS, REF_SRC, check_adapter_type, merge_method_names
from adamergex_pl.merging.output import write_merged

PROG = "adamergex merge"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``adamergex merge``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Merge PEFT adapters with AdaMergeX: A(T,tgt) = A(T,src) ⊕ t·(A(R,tgt) ⊖ A(R,src)), "
        "⊕/⊖ = +/− for LoRA and ⊙/⊘ for (IA)³.",
    )
    io = parser.add_argument_group("adapters")
    io.add_argument(
        "--task-src",
        required=True,
        metavar="DIR",
        help="task adapter, source language (--method stack: the one trained with stack_on A(R,src))",
    )
    io.add_argument("--ref-src", metavar="DIR", help="reference-task adapter, source language (adamergex)")
    io.add_argument("--ref-tgt", required=True, metavar="DIR", help="reference-task adapter, target language")
    io.add_argument("--out", required=True, metavar="DIR", help="output adapter directory (must not exist)")
    io.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    how = parser.add_argument_group("merge")
    how.add_argument("--scale", type=float, default=1.0, metavar="T", help="the scale t (default 1.0)")
    how.add_argument(
        "--method",
        choices=merge_method_names(),
        default="adamergex",
        help="a merge method of the registry (adamergex_pl/merging/methods.py); default adamergex",
    )
    how.add_argument("--lora-mode", choices=LORA_MODES, help="LoRA inputs: exact (default), factor or svd")
    how.add_argument("--svd-rank", type=int, metavar="R", help="rank of --lora-mode svd")
    how.add_argument("--ia3-mode", choices=IA3_MODES, help="(IA)³ inputs: paper (default) or loglinear")
    how.add_argument("--swap-bottom", type=int, metavar="K", help="layer_swap: bottom layers from --ref-tgt")
    how.add_argument("--swap-top", type=int, metavar="K", help="layer_swap: top layers from --ref-tgt")
    how.add_argument("--density", type=float, default=0.2, help="ties/dare_ties: fraction kept (0.2)")
    how.add_argument("--seed", type=int, default=0, help="dare_ties: seed of the random drop (0)")
    how.add_argument("--eps", type=float, default=1e-6, help="(IA)³: refuse divisors with |l| < eps (1e-6)")
    how.add_argument(
        "--strict-modules", action="store_true", help="refuse modules that only some inputs adapt"
    )
    how.add_argument(
        "--allow-different-base",
        action="store_true",
        help="accept inputs with different base_model_name_or_path",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``adamergex merge``; return the exit code (0 merged, 2 refused or bad arguments).

    Args:
        argv: the arguments after ``merge`` (default ``sys.argv[1:]``).

    Example:
        >>> main(["--task-src", "xnli_en", "--ref-src", "wiki_en", "--ref-tgt", "wiki_de",
        ...       "--out", "xnli_de", "--scale", "0.5"])  # doctest: +SKIP
        0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as stop:  # argparse printed its usage and error line
        return int(stop.code or 0)
    try:
        result = _run(args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, UserInputError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    print(f"{result.summary()} -> {args.out}")
    return 0


def _run(args: argparse.Namespace):
    method = METHODS[args.method]
    if REF_SRC not in method.needs and args.ref_src is not None:
        raise InvalidValueError(
            f"--method {args.method} computes {method.formula} and takes no --ref-src; drop it"
        )
    if REF_SRC in method.needs and args.ref_src is None:
        raise InvalidValueError(
            f"--method {args.method} needs --ref-src (the reference-task adapter in the source language)"
        )
    if args.method == "adamergex_factor" and args.lora_mode is not None:
        raise InvalidValueError("--method adamergex_factor is the factor-wise LoRA merge: drop --lora-mode")
    stores_by_svd = args.method in ("ties", "dare_ties")
    if args.svd_rank is not None and args.lora_mode != "svd" and not stores_by_svd:
        raise InvalidValueError("--svd-rank only applies to --lora-mode svd (and --method ties/dare_ties)")
    if (args.swap_bottom is not None or args.swap_top is not None) and args.method != "layer_swap":
        raise InvalidValueError("--swap-bottom/--swap-top only apply to --method layer_swap")
    if args.lora_mode == "svd" and args.svd_rank is None:
        raise InvalidValueError("--lora-mode svd needs --svd-rank R (e.g. --svd-rank 8)")
    # --task-src is the stacked task adapter for --method stack
    paths = {"task_src": args.task_src, "task_src_stacked": args.task_src}
    paths.update(ref_src=args.ref_src, ref_tgt=args.ref_tgt)
    adapters = {role: AdapterWeights.load(paths[role]) for role in method.needs}
    adapter_type = next(iter(adapters.values())).adapter_type
    check_adapter_type([args.method], adapter_type)
    if adapter_type == "ia3" and args.lora_mode is not None:
        raise InvalidValueError(
            f"--lora-mode {args.lora_mode} given, but the inputs are (IA)³ adapters: use --ia3-mode"
        )
    if adapter_type == "lora" and args.ia3_mode is not None:
        raise InvalidValueError(
            f"--ia3-mode {args.ia3_mode} given, but the inputs are LoRA adapters: use --lora-mode"
        )
    options = {
        "lora_mode": args.lora_mode or "exact",
        "ia3_mode": args.ia3_mode or "paper",
        "svd_rank": args.svd_rank,
        "eps": args.eps,
        "strict_modules": args.strict_modules,
        "allow_different_base": args.allow_different_base,
        "swap_bottom": args.swap_bottom,
        "swap_top": args.swap_top,
        "density": args.density,
        "seed": args.seed,
    }
    result = method.build(adapters, args.scale if method.sweep == "scale" else None, options)
    write_merged(result, args.out, overwrite=args.overwrite)
    return result


if __name__ == "__main__":
    sys.exit(main())
