"""Which adapter to train and where it attaches, turned into a PEFT config.

* LoRA (Hu et al., 2021, arXiv 2106.09685) adds a low-rank update to a frozen linear layer,
  ``h = W0·x + s·B·A·x`` with ``A ∈ R^{r×d_in}``, ``B ∈ R^{d_out×r}`` and ``s = alpha / r``
  (rsLoRA, Kalajdzievski 2023: ``s = alpha / sqrt(r)``). B starts at zero.
* (IA)³ (Liu et al., 2022, arXiv 2205.05638) rescales activations element-wise, ``h = l ⊙ (W0·x)`` on
  attention keys/values, and ``h = W0·(l ⊙ x)`` on the feed-forward output projection. l starts at one.

AdaMergeX merges them with the operators that match this structure: LoRA is additive, (IA)³ multiplicative.
Defaults: LoRA on every linear layer but the LM head (``all-linear``: for Llama the seven projections of
the AdaMergeX recipe); (IA)³ on the modules of the (IA)³ paper for the model's architecture (PEFT's table:
``k_proj``, ``v_proj``, ``down_proj`` for Llama and Mistral).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from adamergex_pl.errors import InvalidValueError

ADAPTER_TYPES = ("lora", "ia3")
ALL_LINEAR = "all-linear"


@dataclass(frozen=True)
class AdapterSpec:
    """An adapter's type and shape.

    Args:
        adapter_type: ``lora`` or ``ia3``.
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha; the update is scaled by ``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA).
        lora_dropout: dropout on the LoRA input.
        use_rslora: rank-stabilised scaling.
        target_modules: module names (suffixes) to adapt, or ``all-linear`` (LoRA only). ``None`` picks the
            defaults described above.
        feedforward_modules: (IA)³ only: the subset of ``target_modules`` whose input, not output, is scaled.
        modules_to_save: modules trained in full beside the adapter (e.g. ``embed_tokens``, ``lm_head``).

    Raises:
        ValueError: an unknown adapter type, options of the other adapter type, or a bad rank/dropout.
    """

    adapter_type: str = "lora"
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    use_rslora: bool = False
    target_modules: tuple[str, ...] | str | None = None
    feedforward_modules: tuple[str, ...] | None = None
    modules_to_save: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.adapter_type not in ADAPTER_TYPES:
            raise InvalidValueError(
                f"adapter_type={self.adapter_type!r} is not supported; expected one of {', '.join(ADAPTER_TYPES)}"
            )
        if self.adapter_type == "lora":
            if self.lora_r < 1:
                raise InvalidValueError(f"lora_r={self.lora_r} must be a positive integer, e.g. 8")
            if not 0.0 <= self.lora_dropout < 1.0:
                raise InvalidValueError(f"lora_dropout={self.lora_dropout} must be in [0, 1)")
            if self.feedforward_modules is not None:
                raise InvalidValueError(
                    "feedforward_modules only applies to adapter_type='ia3'; remove it for a LoRA adapter"
                )
        elif self.target_modules == ALL_LINEAR:
            raise InvalidValueError(
                "target_modules='all-linear' only applies to LoRA; for adapter_type='ia3' list the modules, "
                "e.g. [k_proj, v_proj, down_proj], or leave it unset for the architecture's defaults"
            )

    def resolve_modules(self, model: nn.Module) -> tuple[list[str] | str, list[str] | None]:
        """Target and feed-forward module names for ``model``, checked against its modules.

        Raises:
            ValueError: a named module does not exist in the model, or no defaults are known for its type.
        """
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        targets = self.target_modules
        feedforward = list(self.feedforward_modules) if self.feedforward_modules is not None else None
        if self.adapter_type == "lora":
            targets = ALL_LINEAR if targets is None else targets
        elif targets is None:
            from peft.utils.constants import (
                TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as IA3_FEEDFORWARD,
            )
            from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as IA3_TARGETS

            if model_type not in IA3_TARGETS:
                raise InvalidValueError(
                    f"no default (IA)³ target modules are known for model_type={model_type!r}; set "
                    "target_modules and feedforward_modules explicitly"
                )
            targets = list(IA3_TARGETS[model_type])
            feedforward = list(IA3_FEEDFORWARD[model_type]) if feedforward is None else feedforward
        if targets != ALL_LINEAR:
            targets = list(targets)
            _check_modules_exist(model, targets, "target_modules")
        if self.adapter_type == "ia3":
            feedforward = feedforward or []
            stray = sorted(set(feedforward) - set(targets))
            if stray:
                raise InvalidValueError(
                    f"feedforward_modules {stray} are not among target_modules {targets}; every feed-forward "
                    "module must also be a target module"
                )
        if self.modules_to_save:
            _check_modules_exist(model, list(self.modules_to_save), "modules_to_save", linear_only=False)
        return targets, feedforward

    def peft_config(self, model: nn.Module):
        """The ``peft`` config (``LoraConfig`` or ``IA3Config``) for ``model``."""
        from peft import IA3Config, LoraConfig, TaskType

        targets, feedforward = self.resolve_modules(model)
        to_save = list(self.modules_to_save) if self.modules_to_save else None
        if self.adapter_type == "lora":
            return LoraConfig(
                task_type=TaskType.CAUSAL_LM,
                r=self.lora_r,
                lora_alpha=self.lora_alpha,
                lora_dropout=self.lora_dropout,
                use_rslora=self.use_rslora,
                target_modules=targets,
                modules_to_save=to_save,
                bias="none",
            )
        return IA3Config(
            task_type=TaskType.CAUSAL_LM,
            target_modules=targets,
            feedforward_modules=feedforward,
            modules_to_save=to_save,
        )


def _check_modules_exist(model: nn.Module, names: list[str], option: str, linear_only: bool = True) -> None:
    """Every name must match a module by its full name or a dotted suffix, as PEFT matches them."""
    module_names = [n for n, m in model.named_modules() if n and (not linear_only or _is_linear_like(m))]
    missing = [name for name in names if not any(n == name or n.endswith("." + name) for n in module_names)]
    if missing:
        available = sorted({n.rsplit(".", 1)[-1] for n in module_names if "." in n or n})
        kind = "linear modules" if linear_only else "modules"
        raise InvalidValueError(
            f"{option} {missing} not found in the base model ({type(model).__name__}); its {kind} are named "
            f"{available}"
        )


def _is_linear_like(module: nn.Module) -> bool:
    """Linear layers, including quantized bitsandbytes ones and GPT-2's Conv1D."""
    return isinstance(module, nn.Linear) or type(module).__name__ in {"Linear4bit", "Linear8bitLt", "Conv1D"}
