"""Attaching a PEFT adapter to a loaded base model, fresh or from a saved adapter directory."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from adamergex_pl.errors import InvalidValueError
from adamergex_pl.training.adapter_spec import AdapterSpec
from callbacks.adapter_snapshot import ADAPTER_CONFIG

_PEFT_TYPES = {"LORA": "lora", "IA3": "ia3"}


def saved_adapter_type(adapter_dir: str | Path) -> str:
    """``lora`` or ``ia3``, read from a PEFT adapter directory's config.

    Raises:
        ValueError: the directory holds another PEFT method.
    """
    config = json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text())
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type not in _PEFT_TYPES:
        raise InvalidValueError(
            f"{adapter_dir} holds a {peft_type or 'unknown'} adapter; adamergex handles LoRA and (IA)³ adapters"
        )
    return _PEFT_TYPES[peft_type]


BENEATH = "beneath"  # the name of a frozen adapter the trained one is stacked on (MAD-X style)


def attach_adapter(
    base: nn.Module,
    spec: AdapterSpec,
    quantized: bool,
    gradient_checkpointing: bool,
    adapter_dir: str | Path | None = None,
    stack_on: str | Path | None = None,
) -> nn.Module:
    """Freeze ``base`` and wrap it in a trainable ``PeftModel``.

    Quantized bases go through ``prepare_model_for_kbit_training`` (norms and embeddings upcast to float32,
    inputs made to require grad); gradient checkpointing is non-reentrant either way.

    Args:
        base: the loaded causal LM.
        spec: the adapter to create; with ``adapter_dir`` only its ``adapter_type`` is checked.
        quantized: whether ``base`` holds bitsandbytes-quantized weights.
        gradient_checkpointing: recompute activations in the backward pass.
        adapter_dir: load this saved PEFT adapter (trainable) instead of creating a fresh one.
        stack_on: a saved adapter of the same type that stays active and frozen beneath the trained one
            (MAD-X's language adapter beneath a task adapter, Pfeiffer et al., 2020, arXiv 2005.00052): PEFT
            sums the two LoRA updates (multiplies two (IA)³ vectors) in every adapted layer.

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
