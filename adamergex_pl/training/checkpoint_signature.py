"""What adapter a checkpoint holds, and refusing to resume one into a model that trains another.

An ``AdapterModule`` checkpoint records its adapter's *signature*: the adapter type, the LoRA rank and the
adapted modules (by their last name, e.g. ``q_proj``), read from the saved tensors themselves. Resuming checks
it against the model the config builds, so a LoRA checkpoint never trains on as an (IA)³ adapter, nor a rank-8
one as rank 4: the message names both sides. Checkpoints without a signature (older ones) are checked by
their tensor names and shapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from adamergex_pl.errors import InvalidValueError

# "...layers.0.self_attn.q_proj.lora_A.default.weight" -> q_proj; "...mlp.down_proj.ia3_l.default" -> down_proj
_ADAPTED = re.compile(r"(?:^|\.)([^.]+)\.(lora_A|lora_B|ia3_l)(?:\.|$)")


def adapter_signature(adapter_type: str, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``{"adapter_type", "rank", "target_modules"}`` of the adapter tensors in ``state_dict``.

    Args:
        adapter_type: ``lora`` or ``ia3``.
        state_dict: the module's (or a checkpoint's) state dict; tensors that are not adapter weights are
            ignored.

    Example:
        >>> import torch
        >>> adapter_signature("lora", {"m.layers.0.q_proj.lora_A.default.weight": torch.zeros(4, 8)})
        {'adapter_type': 'lora', 'rank': 4, 'target_modules': ['q_proj']}
    """
    modules, ranks = set(), set()
    for key, tensor in state_dict.items():
        match = _ADAPTED.search(key)
        if match is None:
            continue
        modules.add(match.group(1))
        if match.group(2) == "lora_A":
            ranks.add(int(tensor.shape[0]))
    rank = sorted(ranks)[0] if len(ranks) == 1 else (sorted(ranks) or None)
    return {"adapter_type": adapter_type, "rank": rank, "target_modules": sorted(modules)}


def describe_signature(signature: Mapping[str, Any]) -> str:
    """``"a lora adapter of rank 8 on k_proj, q_proj"``, for messages."""
    kind = str(signature.get("adapter_type"))
    rank = f" of rank {signature['rank']}" if signature.get("rank") is not None else ""
    modules = ", ".join(signature.get("target_modules") or []) or "no modules"
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind} adapter{rank} on {modules}"


def check_checkpoint_fits(
    checkpoint: Mapping[str, Any],
    adapter_type: str,
    own_state: Mapping[str, Any],
    adapter_keys: set[str],
    where: str = "the checkpoint",
) -> None:
    """Refuse a checkpoint whose adapter is not the one this model trains.

    Args:
        checkpoint: the loaded checkpoint (``state_dict`` holds only adapter tensors).
        adapter_type: this model's ``adapter_type``.
        own_state: this model's state dict.
        adapter_keys: the names of this model's trainable (adapter) tensors.
        where: how messages name the checkpoint.

    Raises:
        ValueError: another adapter type, rank or set of target modules (naming both), other tensors, or
            tensors of other shapes.
    """
    state = checkpoint.get("state_dict", {})
    ours = adapter_signature(adapter_type, {k: v for k, v in own_state.items() if k in adapter_keys})
    theirs = (checkpoint.get("adamergex") or {}).get("adapter")
    if theirs is not None and dict(theirs) != ours:
        raise InvalidValueError(
            f"{where} holds {describe_signature(theirs)}, but this config trains {describe_signature(ours)}; "
            "resume with the adapter_type, lora_r and target_modules that wrote the checkpoint, or start a "
            "fresh fit without --ckpt_path"
        )
    found = set(state)
    if found != adapter_keys:
        missing, unexpected = sorted(adapter_keys - found), sorted(found - adapter_keys)
        raise InvalidValueError(
            f"the checkpoint's adapter does not match this model's: {len(missing)} adapter tensors missing "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}); resume with the "
            "same adapter_type, target_modules and rank that wrote the checkpoint"
        )
    wrong = [k for k in sorted(adapter_keys) if tuple(state[k].shape) != tuple(own_state[k].shape)]
    if wrong:
        key = wrong[0]
        raise InvalidValueError(
            f"{where}: {len(wrong)} adapter tensors have other shapes than this model's (e.g. {key}: "
            f"{tuple(state[key].shape)} in the checkpoint, {tuple(own_state[key].shape)} here); resume with the "
            "base model, lora_r and target_modules that wrote the checkpoint"
        )
