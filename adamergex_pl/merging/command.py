"""``adamergex merge``: merge PEFT adapters with a method of the registry and write a PEFT adapter directory.

    adamergex merge --task_src DIR --ref_src DIR --ref_tgt DIR --out_dir DIR [--scale T] [--method adamergex]

computes ``A(T,tgt) = A(T,src) ⊕ t·(A(R,tgt) ⊖ A(R,src))`` (other methods: :mod:`adamergex_pl.merging.methods`).
Each input is a PEFT adapter directory or an ``AdapterSnapshot`` root (its ``last`` epoch). A refused merge
writes nothing (one error line on stderr, exit code 2). ``--config merge.yaml`` works as for ``fit``.
"""

from __future__ import annotations

import sys
from typing import Literal

from adamergex_pl.errors import InvalidValueError, UserInputError
from adamergex_pl.merging.adapters import AdapterWeights
from adamergex_pl.merging.methods import METHODS, REF_SRC, check_adapter_type, merge_method_names
from adamergex_pl.merging.output import write_merged

PROG = "adamergex merge"


def merge(
    task_src: str,
    ref_tgt: str,
    out_dir: str,
    ref_src: str | None = None,
    method: str = "adamergex",
    scale: float = 1.0,
    lora_mode: Literal["exact", "factor", "svd"] | None = None,
    svd_rank: int | None = None,
    ia3_mode: Literal["paper", "loglinear"] | None = None,
    swap_bottom: int | None = None,
    swap_top: int | None = None,
    density: float = 0.2,
    seed: int = 0,
    eps: float = 1e-6,
    allow_partial_modules: bool = False,
    allow_different_base: bool = False,
    overwrite: bool = False,
) -> int:
    """Merge PEFT adapters: A(T,tgt) = A(T,src) ⊕ t·(A(R,tgt) ⊖ A(R,src)), ⊕/⊖ = +/− for LoRA and ⊙/⊘ for (IA)³.

    Args:
        task_src: the task adapter in the source language (``stack``: the one trained with ``stack_on``).
        ref_tgt: the reference-task adapter in the target language.
        out_dir: the adapter directory to write (must not exist unless ``overwrite``).
        ref_src: the reference-task adapter in the source language (methods that subtract it).
        method: a merge method of the registry (``adamergex_pl/merging/methods.py``).
        scale: the scale ``t``.
        lora_mode: LoRA inputs: ``exact`` (default), ``factor`` or ``svd``.
        svd_rank: the rank of ``lora_mode: svd`` (and of the LoRA that stores a TIES merge).
        ia3_mode: (IA)³ inputs: ``paper`` (default) or ``loglinear``.
        swap_bottom: ``layer_swap``: bottom layers taken from ``ref_tgt``.
        swap_top: ``layer_swap``: top layers taken from ``ref_tgt``.
        density: ``ties``/``dare_ties``: the fraction of entries kept.
        seed: ``dare_ties``: the seed of the random drop.
        eps: (IA)³: refuse divisors with ``|l| < eps``.
        allow_partial_modules: accept modules that only some inputs adapt, as no update where missing
            (refused by default; ``merge.json`` records it).
        allow_different_base: accept inputs with different ``base_model_name_or_path``.
        overwrite: replace an existing ``out_dir``.

    Returns:
        The exit code: 0 merged, 2 refused (one line on stderr).
    """
    try:
        result = _run(dict(locals()))
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, UserInputError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    print(f"{result.summary()} -> {out_dir}")
    return 0


def main(argv: list[str]) -> int:
    """``adamergex merge ...``."""
    from adamergex_pl.cli import run_function

    return run_function(merge, argv, PROG)


def _run(args: dict):
    name = args["method"]
    if name not in merge_method_names():
        raise InvalidValueError(
            f"method={name!r} is not a merge method; expected one of {', '.join(merge_method_names())}"
        )
    method = METHODS[name]
    if REF_SRC not in method.needs and args["ref_src"] is not None:
        raise InvalidValueError(f"--method {name} computes {method.formula} and takes no --ref_src; drop it")
    if REF_SRC in method.needs and args["ref_src"] is None:
        raise InvalidValueError(
            f"--method {name} needs --ref_src (the reference-task adapter in the source language)"
        )
    if name == "adamergex_factor" and args["lora_mode"] is not None:
        raise InvalidValueError("--method adamergex_factor is the factor-wise LoRA merge: drop --lora_mode")
    stores_by_svd = name in ("ties", "dare_ties")
    if args["svd_rank"] is not None and args["lora_mode"] != "svd" and not stores_by_svd:
        raise InvalidValueError("--svd_rank only applies to --lora_mode svd (and --method ties/dare_ties)")
    if (args["swap_bottom"] is not None or args["swap_top"] is not None) and name != "layer_swap":
        raise InvalidValueError("--swap_bottom/--swap_top only apply to --method layer_swap")
    if args["lora_mode"] == "svd" and args["svd_rank"] is None:
        raise InvalidValueError("--lora_mode svd needs --svd_rank R (e.g. --svd_rank 8)")
    # task_src is the stacked task adapter for --method stack
    paths = {"task_src": args["task_src"], "task_src_stacked": args["task_src"]}
    paths.update(ref_src=args["ref_src"], ref_tgt=args["ref_tgt"])
    adapters = {role: AdapterWeights.load(paths[role]) for role in method.needs}
    adapter_type = next(iter(adapters.values())).adapter_type
    check_adapter_type([name], adapter_type)
    if adapter_type == "ia3" and args["lora_mode"] is not None:
        raise InvalidValueError(
            f"--lora_mode {args['lora_mode']} given, but the inputs are (IA)³ adapters: use --ia3_mode"
        )
    if adapter_type == "lora" and args["ia3_mode"] is not None:
        raise InvalidValueError(
            f"--ia3_mode {args['ia3_mode']} given, but the inputs are LoRA adapters: use --lora_mode"
        )
    keys = ("svd_rank", "eps", "allow_partial_modules", "allow_different_base", "swap_bottom", "swap_top")
    options = {"lora_mode": args["lora_mode"] or "exact", "ia3_mode": args["ia3_mode"] or "paper"}
    options.update({key: args[key] for key in (*keys, "density", "seed")})
    result = method.build(adapters, args["scale"] if method.sweep == "scale" else None, options)
    write_merged(result, args["out_dir"], overwrite=args["overwrite"])
    return result


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
