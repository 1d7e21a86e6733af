"""What a merge reads from and writes to ``adapter_config.json``.

Reading follows PEFT's own rules, so a merge sees each module exactly as PEFT applies it:

* LoRA scaling of a module: ``s = alpha / r`` (``alpha / sqrt(r)`` with ``use_rslora``), where ``r`` and
  ``alpha`` come from the first ``rank_pattern`` / ``alpha_pattern`` key that matches the module name as the
  regular expression ``(.*\\.)?(key)$``, else from ``r`` / ``lora_alpha``.
* (IA)³ feedforward modules (their vector scales the input, not the output): a string ``feedforward_modules``
  is a regular expression that must match the whole module name; a list matches by name suffix.

Writing: the merged adapter has scaling 1 everywhere (``lora_alpha == r``, ``alpha_pattern == rank_pattern``,
no rsLoRA), its most common rank as ``r`` and the others in ``rank_pattern``. The targeting fields
(``target_modules``, ``layers_to_transform``, ...) are the task adapter's when every input targets the same
way and the merged adapter covers the same modules; otherwise they become the explicit list of module names,
so that PEFT creates exactly the modules that have weights.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from adamergex_pl.errors import InvalidValueError

TARGETING_FIELDS = ("target_modules", "exclude_modules", "layers_to_transform", "layers_pattern")

# LoRA config fields that change what the adapter computes beyond s·B·A (or need a modified base model).
_UNSUPPORTED_LORA_FIELDS = {
    "use_dora": "DoRA rescales W0 + ΔW by a learned magnitude, which is not additive",
    "lora_bias": "LoRA biases are not part of s·B·A",
    "modules_to_save": "fully trained module copies cannot be combined as low-rank updates",
    "trainable_token_indices": "trainable token embeddings are not low-rank updates",
    "alora_invocation_tokens": "activated LoRA applies only after its invocation tokens",
    "use_qalora": "QALoRA pools its input groups",
    "use_bdlora": "block-diagonal LoRA shards its factors",
    "layer_replication": "replicated layers change the base model",
    "target_parameters": "parameter-targeting LoRA has no module layout",
    "arrow_config": "Arrow routes between several LoRAs",
    "kasa_config": "KaSA rescales singular values of the base weight",
}
# init_lora_weights values that change the base weights: such an adapter only works on that residual base.
_BASE_MODIFYING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")


def unsupported_lora_features(config: Mapping[str, Any]) -> list[str]:
    """Reasons why a LoRA config is not a plain additive LoRA (empty when it is)."""
    reasons = [f"{name} ({why})" for name, why in _UNSUPPORTED_LORA_FIELDS.items() if config.get(name)]
    if config.get("bias", "none") != "none":
        reasons.append(f"bias={config['bias']!r} (trained biases are not part of s·B·A)")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower().startswith(_BASE_MODIFYING_INITS):
        reasons.append(
            f"init_lora_weights={init!r} (the adapter needs a base model with its init subtracted)"
        )
    return reasons


def pattern_value(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    """The value of the first key matching ``module`` (PEFT's ``rank_pattern`` rule), else ``default``."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def lora_scaling(alpha: float, rank: int, use_rslora: bool) -> float:
    """LoRA's scaling ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA."""
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank


def lora_module_scaling(
    config: Mapping[str, Any], module: str, rank: int, *, label: str = "adapter"
) -> float:
    """The scaling PEFT applies to ``module`` of a LoRA adapter whose ``lora_A`` has ``rank`` rows.

    Raises:
        ValueError: the config's rank for the module disagrees with the tensor (another adapter's config).
    """
    configured = int(pattern_value(config.get("rank_pattern") or {}, module, config.get("r", 8)))
    if configured != rank:
        raise InvalidValueError(
            f"{label}: adapter_config.json gives module {module!r} rank {configured} but its lora_A has "
            f"{rank} rows; the config does not belong to these weights"
        )
    alpha = float(pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha", 8)))
    return lora_scaling(alpha, rank, bool(config.get("use_rslora", False)))


def ia3_is_feedforward(config: Mapping[str, Any], module: str) -> bool:
    """Whether PEFT treats ``module`` of an (IA)³ adapter as feedforward (vector scales the input)."""
    feedforward = config.get("feedforward_modules") or []
    if isinstance(feedforward, str):
        return re.fullmatch(feedforward, module) is not None
    return any(module.endswith(name) for name in feedforward)


def targeting(config: Mapping[str, Any]) -> tuple:
    """The config fields that decide which modules PEFT adapts, comparable across inputs."""

    def canonical(value: Any) -> Any:
        return tuple(sorted(value)) if isinstance(value, (list, tuple, set)) else value

    return tuple(canonical(config.get(name)) for name in TARGETING_FIELDS)


def _explicit_targeting(template: Mapping[str, Any], modules: Iterable[str]) -> dict[str, Any]:
    """``target_modules`` listing ``modules``; the other targeting fields the config type has are cleared."""
    cleared = {name: None for name in TARGETING_FIELDS[1:] if name in template}
    return {**cleared, "target_modules": sorted(modules)}


def merged_lora_config(template: Mapping[str, Any], ranks: Mapping[str, int], keep_targeting: bool) -> dict:
    """The config of a merged LoRA with per-module ``ranks`` and scaling 1 on every module.

    Args:
        template: the task adapter's config (dropout, base model, task type, ... are kept).
        ranks: ``{module: rank}`` of the merged factors.
        keep_targeting: keep the template's targeting fields (all inputs target alike and the merged adapter
            covers the same modules); otherwise list the modules explicitly.
    """
    common = Counter(ranks.values()).most_common(1)[0][0]
    exceptions = {re.escape(module): rank for module, rank in sorted(ranks.items()) if rank != common}
    config = dict(template)
    config.update(
        r=common,
        lora_alpha=common,
        rank_pattern=exceptions,
        alpha_pattern=dict(exceptions),
        use_rslora=False,
        init_lora_weights=True,
        inference_mode=True,
    )
    if not keep_targeting:
        config.update(_explicit_targeting(template, ranks))
    return config


def merged_ia3_config(
    template: Mapping[str, Any], modules: Iterable[str], feedforward: Iterable[str], keep_targeting: bool
) -> dict:
    """The config of a merged (IA)³ adapter over ``modules``, ``feedforward`` being the feedforward ones."""
    config = dict(template)
    config.update(init_ia3_weights=True, inference_mode=True)
    if not keep_targeting:
        config.update(_explicit_targeting(template, modules))
        config["feedforward_modules"] = sorted(feedforward)
    return config
