"""CrossIn data modes and the paper's named variants (Lin et al., 2024, arXiv:2404.11932).

Modes of a training row (``x`` is a non-English language of the parallel set):

* 0 ``base``  — the English base instruction set, as is;
* 1 ``en2x``  — English instruction and input, tag ``[x]``, response in ``x``;
* 2 ``x2en``  — instruction and input in ``x``, tag ``[en]``, English response;
* 3 ``trans`` — "Translate the following sentence into English.", input the ``x`` instruction, output the
  English instruction.

Variants: ``base`` = {0}, ``en2x`` = {0, 1}, ``x2en`` = {0, 2}, ``x2x`` = {0, 1, 2}; the suffix ``+trans``
adds mode 3 (``x2x+trans`` = {0, 1, 2, 3}). A mixture is chosen by ``variant`` or by ``modes``, never both:
two ways of saying the same thing would let a composed config say two different things.
"""

from __future__ import annotations

from collections.abc import Sequence

from adamergex_pl.errors import InvalidValueError

BASE, EN2X, X2EN, TRANS = 0, 1, 2, 3
MODE_NAMES: dict[int, str] = {BASE: "base", EN2X: "en2x", X2EN: "x2en", TRANS: "trans"}
CROSS_LINGUAL_MODES = (EN2X, X2EN, TRANS)
VARIANTS: dict[str, tuple[int, ...]] = {
    "base": (BASE,),
    "en2x": (BASE, EN2X),
    "x2en": (BASE, X2EN),
    "x2x": (BASE, EN2X, X2EN),
}
TRANS_SUFFIX = "+trans"

__all__ = [
    "BASE",
    "CROSS_LINGUAL_MODES",
    "EN2X",
    "MODE_NAMES",
    "TRANS",
    "VARIANTS",
    "X2EN",
    "mode_name",
    "resolve_modes",
    "variant_modes",
    "variant_names",
]


def variant_names() -> list[str]:
    """Every accepted variant name: ``base``, ``en2x``, ``x2en``, ``x2x`` and each with ``+trans``."""
    return [*VARIANTS, *(name + TRANS_SUFFIX for name in VARIANTS)]


def variant_modes(variant: str) -> tuple[int, ...]:
    """The modes of a named variant (case-insensitive; ``x2x+Trans`` and ``x2x + trans`` are accepted).

    Args:
        variant: ``base``, ``en2x``, ``x2en`` or ``x2x``, optionally followed by ``+trans``.

    Returns:
        The sorted mode numbers.

    Raises:
        InvalidValueError: an unknown variant.

    Example:
        >>> variant_modes("x2x+Trans")
        (0, 1, 2, 3)
    """
    if not isinstance(variant, str):
        raise InvalidValueError(f"variant={variant!r} must be a string such as 'x2x' or 'x2x+trans'")
    key = "".join(variant.split()).lower()
    trans = key.endswith(TRANS_SUFFIX)
    stem = key[: -len(TRANS_SUFFIX)] if trans else key
    if stem not in VARIANTS:
        raise InvalidValueError(
            f"variant={variant!r} is not a CrossIn variant; expected one of {', '.join(variant_names())} "
            "(or give modes: a list drawn from 0 base, 1 en2x, 2 x2en, 3 trans)"
        )
    return (*VARIANTS[stem], TRANS) if trans else VARIANTS[stem]


def _check_modes(modes: Sequence[int]) -> tuple[int, ...]:
    if isinstance(modes, (str, bytes)) or not isinstance(modes, Sequence) or not modes:
        raise InvalidValueError(
            f"modes={modes!r} must be a non-empty list drawn from 0 (base), 1 (en2x), 2 (x2en), 3 (trans), "
            "e.g. [0, 1, 2]"
        )
    for mode in modes:
        if isinstance(mode, bool) or not isinstance(mode, int) or mode not in MODE_NAMES:
            raise InvalidValueError(
                f"modes={list(modes)} contains {mode!r}; every mode is one of 0 (base), 1 (en2x), 2 (x2en), "
                "3 (trans)"
            )
    if len(set(modes)) != len(modes):
        raise InvalidValueError(f"modes={list(modes)} lists a mode twice; list each mode once")
    return tuple(sorted(modes))


def resolve_modes(variant: str | None, modes: Sequence[int] | None) -> tuple[int, ...]:
    """The modes of a mixture given by exactly one of ``variant`` and ``modes``.

    Args:
        variant: a named variant (see :func:`variant_modes`), or None.
        modes: explicit mode numbers, or None.

    Returns:
        The sorted mode numbers.

    Raises:
        InvalidValueError: both or neither given, an unknown variant, or a bad mode list.

    Example:
        >>> resolve_modes("en2x", None), resolve_modes(None, [2, 0])
        ((0, 1), (0, 2))
    """
    if variant is not None and modes is not None:
        raise InvalidValueError(
            f"variant={variant!r} and modes={list(modes)} are both set; give one of them (set the other to "
            f"null), e.g. variant: x2x+trans or modes: [0, 1, 2, 3]"
        )
    if variant is None and modes is None:
        raise InvalidValueError(
            f"no CrossIn mixture chosen; set variant (one of {', '.join(variant_names())}) or modes "
            "(a list drawn from 0 base, 1 en2x, 2 x2en, 3 trans)"
        )
    return variant_modes(variant) if variant is not None else _check_modes(modes)


def mode_name(mode: int) -> str:
    """``base``, ``en2x``, ``x2en`` or ``trans``: the label of a mode in rows, counts and metric keys."""
    return MODE_NAMES[mode]
