"""One column of a merge comparison: a method of the registry at a scale ``t`` (or none)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """One column of the comparison: a method at a scale (``None`` for methods without one)."""

    method: str
    scale: float | None

    @property
    def label(self) -> str:
        """How the variant appears in metric names: ``adamergex/0.5``, ``zero_shot/none``."""
        return f"{self.method}/{'none' if self.scale is None else f'{self.scale:g}'}"

    @property
    def key(self) -> str:
        """A module and adapter name (no dots or slashes)."""
        return self.label.replace("/", "__").replace(".", "_").replace("-", "m")
