"""Loading in-memory adapters into a live ``PeftModel`` (one named adapter per merge), without disk."""

from __future__ import annotations

from adamergex_pl.errors import InvalidValueError
from adamergex_pl.merging.adapters import AdapterWeights


def add_to_peft_model(
    peft_model, adapter: AdapterWeights, adapter_name: str, *, replace: bool = False
) -> None:
    """Add ``adapter`` to ``peft_model`` as ``adapter_name`` (inactive, frozen); activate it with ``set_adapter``.

    Raises:
        ValueError: the name is taken (and ``replace`` is false) or holds a dot, the peft types differ, or
            some tensors do not fit the model (a failed load leaves no half-built adapter).
    """
    from peft.utils import set_peft_model_state_dict

    if not isinstance(adapter_name, str) or not adapter_name or "." in adapter_name:
        raise InvalidValueError(
            f"adapter_name={adapter_name!r} must be a non-empty string without '.' (PyTorch module names "
            f"cannot hold dots), e.g. {str(adapter_name).replace('.', '_')!r}"
        )
    existing = {
        name: str(getattr(c.peft_type, "value", c.peft_type)) for name, c in peft_model.peft_config.items()
    }
    other_types = {name: t for name, t in existing.items() if t != adapter.peft_type and name != adapter_name}
    if other_types:
        raise InvalidValueError(
            f"cannot add the {adapter.peft_type} adapter {adapter_name!r} to a PeftModel holding "
            f"{other_types}: one PeftModel holds one peft type; load it into a separate PeftModel"
        )
    if adapter_name in existing:
        if not replace:
            raise InvalidValueError(
                f"the PeftModel already has an adapter named {adapter_name!r}; pass replace=True"
            )
        active = (
            peft_model.active_adapters
            if hasattr(peft_model, "active_adapters")
            else peft_model.active_adapter
        )
        if adapter_name in ([active] if isinstance(active, str) else list(active)):
            raise InvalidValueError(
                f"adapter {adapter_name!r} is active; set_adapter another one before replacing it"
            )
        peft_model.delete_adapter(adapter_name)
    peft_model.add_adapter(adapter_name, adapter.peft_config())
    try:
        loaded = set_peft_model_state_dict(peft_model, adapter.state_dict(), adapter_name=adapter_name)
        unexpected = list(loaded.unexpected_keys)
        marker = f".{adapter_name}"
        missing = [k for k in loaded.missing_keys if marker in k and (".lora_" in k or ".ia3_l" in k)]
        if unexpected or missing:
            raise InvalidValueError(
                f"adapter {adapter_name!r} does not fit the model: {len(unexpected)} tensors found no "
                f"module (e.g. {unexpected[:2]}), {len(missing)} adapter weights were not filled "
                f"(e.g. {missing[:2]})"
            )
    except BaseException:
        peft_model.delete_adapter(adapter_name)
        raise
