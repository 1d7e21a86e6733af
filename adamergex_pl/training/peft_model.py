"""Attaching a PEFT adapter to a loaded base model, fresh or from a saved adapter directory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from adamergex_pl.errors import InvalidValueError
from callbacks.adapter_snapshot import ADAPTER_CONFIG

ADAPTER_TYPES = ("lora", "ia3")
ALL_LINEAR = "all-linear"
_PEFT_TYPES = {"LORA": "lora", "IA3": "ia3"}
BENEATH = "beneath"  # the name of a frozen adapter the trained one is stacked on (MAD-X style)


@dataclass(frozen=True)
class AdapterSpec:
    """An adapter's type and shape.

    Args: the adapter options of :class:`~adamergex_pl.training.adapter_module.AdapterModule`; ``None`` for
        ``target_modules`` means all-linear for LoRA and peft's defaults of the architecture for (IA)³.

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
            ValueError: a named module is not in the model, or no defaults are known for its type.
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
    return isinstance(module, nn.Linear) or type(module).__name__ in {"Linear4bit", "Linear8bitLt", "Conv1D"}


def saved_adapter_type(adapter_dir: str | Path) -> str:
    """``lora`` or ``ia3``, read from a PEFT adapter directory's config; ValueError for another PEFT method."""
    config = json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text())
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type not in _PEFT_TYPES:
        raise InvalidValueError(
            f"{adapter_dir} holds a {peft_type or 'unknown'} adapter; adamergex handles LoRA and (IA)³ adapters"
        )
    return _PEFT_TYPES[peft_type]


def attach_adapter(
    base: nn.Module,
    spec: AdapterSpec,
    quantized: bool,
    gradient_checkpointing: bool,
    adapter_dir: str | Path | None = None,
    stack_on: str | Path | None = None,
) -> nn.Module:
    """Freeze ``base`` and wrap it in a trainable ``PeftModel`` (quantized: ``prepare_model_for_kbit_training``).

    Args:
        spec: the adapter to create; with ``adapter_dir`` only its ``adapter_type`` is checked.
        adapter_dir: load this saved PEFT adapter (trainable) instead of creating a fresh one.
        stack_on: a saved adapter of the same type that stays active and frozen beneath the trained one
            (MAD-X, Pfeiffer et al., 2020, arXiv 2005.00052): LoRA updates add, (IA)³ vectors multiply.

    Raises:
        ValueError: ``adapter_dir`` holds an adapter of another type than ``spec.adapter_type``, or a target
            module is missing from ``base``.
    """
    from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training

    checkpointing_kwargs = {"use_reentrant": False}
    if quantized:
        base = prepare_model_for_kbit_training(
            base,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs=checkpointing_kwargs,
        )
    elif gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing_kwargs)
    if gradient_checkpointing:
        base.config.use_cache = False  # the KV cache is useless when activations are recomputed
    for name, path in (("adapter_dir", adapter_dir), ("stack_on", stack_on)):
        if path is None:
            continue
        found = saved_adapter_type(path)
        if found != spec.adapter_type:
            raise InvalidValueError(
                f"{name}={str(path)!r} holds a {found} adapter but adapter_type={spec.adapter_type!r}; "
                f"set adapter_type: {found}"
            )
    if stack_on is None:
        if adapter_dir is None:
            return get_peft_model(base, spec.peft_config(base))
        return PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=True)
    model = PeftModel.from_pretrained(base, str(stack_on), adapter_name=BENEATH)
    if adapter_dir is None:
        model.add_adapter("default", spec.peft_config(base))
    else:
        model.load_adapter(str(adapter_dir), adapter_name="default", is_trainable=True)
    model.base_model.set_adapter(["default", BENEATH])  # both active: the stack
    for name, param in model.named_parameters():
        param.requires_grad = f".{BENEATH}." not in name and ".default." in name
    return model
