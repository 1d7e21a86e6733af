"""Adapter weights in memory: what a merge reads and what it writes.

Tensors by base-model module: LoRA ``{"lora_A": A (r, in), "lora_B": B (out, r)}`` (update ``s·B·A``), (IA)³
``{"ia3_l": l}`` of shape ``(out, 1)``, or ``(1, in)`` for a feedforward module (scaling its input).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

from adamergex_pl.errors import InvalidValueError
from callbacks.adapter_snapshot import ADAPTER_CONFIG as ADAPTER_CONFIG_FILE
from callbacks.adapter_snapshot import ADAPTER_WEIGHTS as ADAPTER_WEIGHTS_FILE
from callbacks.adapter_snapshot import resolve_adapter_dir

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

    ``template``'s other fields are kept, its targeting ones only with ``keep_targeting`` (else modules listed).
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


def count_nonfinite(tensor: torch.Tensor) -> int:
    """How many entries of ``tensor`` are NaN or ±inf (one reduction when all are finite)."""
    if tensor.numel() == 0 or bool(torch.isfinite(tensor.sum())):
        return 0
    return int((~torch.isfinite(tensor)).sum())


def refuse_nonfinite(what: str, tensor: torch.Tensor) -> None:
    """Raise ``ValueError("<what> has N of M entries NaN or inf")`` unless every entry is finite."""
    bad = count_nonfinite(tensor)
    if bad:
        raise InvalidValueError(f"{what} has {bad} of {tensor.numel()} entries NaN or inf")


def checked_lora_factors(
    adapter: AdapterWeights, module: str, role: str
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(lora_A, lora_B, scaling)`` of ``adapter``'s LoRA ``module`` (``role`` names it in messages).

    Raises:
        ValueError: a factor with a NaN or inf entry, or an unreadable scaling.
    """
    lora_A, lora_B = adapter.tensors[module]["lora_A"], adapter.tensors[module]["lora_B"]
    label = f"{role} ({adapter.label})"
    refuse_nonfinite(f"{label} LoRA module {module!r}: lora_A", lora_A)
    refuse_nonfinite(f"{label} LoRA module {module!r}: lora_B", lora_B)
    return lora_A, lora_B, lora_module_scaling(adapter.config, module, lora_A.shape[0], label=label)


KEY_PREFIX = "base_model.model."

# peft_type -> (adapter_type, {on-disk key suffix: part name})
_LAYOUTS: dict[str, tuple[str, dict[str, str]]] = {
    "LORA": ("lora", {".lora_A.weight": "lora_A", ".lora_B.weight": "lora_B"}),
    "IA3": ("ia3", {".ia3_l": "ia3_l"}),
}


def _unsupported_type(peft_type: object, path: str | None) -> str:
    return (
        f"peft_type={peft_type!r} ({path or 'in-memory adapter'}) is not supported; expected one of "
        f"{', '.join(_LAYOUTS)}"
    )


def _refuse_variants(config: Mapping[str, Any], path: str | None) -> None:
    if config["peft_type"] == "LORA":
        reasons = unsupported_lora_features(config)
    else:
        reasons = ["modules_to_save (fully trained module copies)"] if config.get("modules_to_save") else []
    if reasons:
        raise InvalidValueError(
            f"{path or 'in-memory adapter'} is not a plain {config['peft_type']} adapter: "
            f"{'; '.join(reasons)}; the merge supports plain LoRA (optionally rsLoRA and rank/alpha "
            "patterns) and plain (IA)³"
        )


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, as ``merge.json`` records each input's weights."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class AdapterWeights:
    """One PEFT adapter (LoRA or (IA)³) in memory, tensors grouped by base-model module; read-only by convention.

    Args:
        config: The ``adapter_config.json`` content (``peft_type`` ``"LORA"`` or ``"IA3"``).
        tensors: ``{module: {part: tensor}}`` with parts ``lora_A``/``lora_B`` (LoRA) or ``ia3_l`` ((IA)³).
        path: The directory it was loaded from, if any.
        sha256: SHA-256 of the loaded ``adapter_model.safetensors``, if any.

    Raises:
        ValueError: An unsupported ``peft_type``, or modules whose parts do not fit it.

    Example:
        >>> task = AdapterWeights.load("runs/xnli_en/adapters")  # doctest: +SKIP
        >>> task.adapter_type, len(task.module_names)  # doctest: +SKIP
        ('lora', 224)
    """

    config: dict[str, Any]
    tensors: dict[str, dict[str, torch.Tensor]]
    path: str | None = None
    sha256: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        peft_type = self.config.get("peft_type")
        if peft_type not in _LAYOUTS:
            raise InvalidValueError(_unsupported_type(peft_type, self.path))
        _refuse_variants(self.config, self.path)
        parts = set(_LAYOUTS[peft_type][1].values())
        for module, entry in self.tensors.items():
            if set(entry) != parts:
                raise InvalidValueError(
                    f"module {module!r} of the {peft_type} adapter {self.label} has parts "
                    f"{sorted(entry)}; expected exactly {sorted(parts)}"
                )

    def __repr__(self) -> str:
        return f"AdapterWeights({self.peft_type}, {len(self.tensors)} modules, path={self.path!r})"

    @property
    def peft_type(self) -> str:
        """``"LORA"`` or ``"IA3"``, as in ``adapter_config.json``."""
        return self.config["peft_type"]

    @property
    def adapter_type(self) -> str:
        """``"lora"`` or ``"ia3"`` (the project's name for the peft type)."""
        return _LAYOUTS[self.peft_type][0]

    @property
    def module_names(self) -> list[str]:
        """The adapted base-model modules, sorted."""
        return sorted(self.tensors)

    @property
    def base_model(self) -> str | None:
        """``base_model_name_or_path`` from the config."""
        return self.config.get("base_model_name_or_path")

    @property
    def label(self) -> str:
        """Where the adapter came from, for messages."""
        return self.path or "in-memory adapter"

    @classmethod
    def load(cls, path: str | Path) -> AdapterWeights:
        """Read an adapter directory or a snapshot root (see :func:`resolve_adapter_dir`), hashing its weights.

        Raises:
            FileNotFoundError: No adapter at ``path``.
            ValueError: An unreadable config, an unsupported peft type, or tensors PEFT would not write.
        """
        directory = resolve_adapter_dir(path)
        try:
            config = json.loads((directory / ADAPTER_CONFIG_FILE).read_text())
        except json.JSONDecodeError as err:
            raise InvalidValueError(f"{directory / ADAPTER_CONFIG_FILE} is not valid JSON: {err}") from None
        if not isinstance(config, dict):
            raise InvalidValueError(
                f"{directory / ADAPTER_CONFIG_FILE} holds {type(config).__name__}; expected an object"
            )
        raw = (directory / ADAPTER_WEIGHTS_FILE).read_bytes()
        try:
            state_dict = load_safetensors_bytes(raw)
        except Exception as err:  # safetensors' own error type: a damaged file, not a bug here
            raise InvalidValueError(
                f"adapter weights {str(directory / ADAPTER_WEIGHTS_FILE)!r} are corrupt ({err}); re-create them "
                "(re-run the fit or the merge that wrote them) or pass another adapter"
            ) from None
        digest = hashlib.sha256(raw).hexdigest()
        return cls.from_state_dict(config, state_dict, path=str(directory), sha256=digest)

    @classmethod
    def from_state_dict(
        cls,
        config: Mapping[str, Any],
        state_dict: Mapping[str, torch.Tensor],
        *,
        path: str | None = None,
        sha256: str | None = None,
    ) -> AdapterWeights:
        """Group a PEFT adapter state dict (keys as ``get_peft_model_state_dict`` returns them) by module.

        Raises:
            ValueError: A key that is no plain LoRA/(IA)³ weight of this peft type (DoRA, ...), or another type.
        """
        peft_type = config.get("peft_type")
        if peft_type not in _LAYOUTS:
            raise InvalidValueError(_unsupported_type(peft_type, path))
        _refuse_variants(config, path)
        suffixes = _LAYOUTS[peft_type][1]
        pattern = re.compile(rf"^{re.escape(KEY_PREFIX)}(.+?)({'|'.join(map(re.escape, suffixes))})$")
        tensors: dict[str, dict[str, torch.Tensor]] = {}
        for key, tensor in state_dict.items():
            match = pattern.match(key)
            if match is None:
                raise InvalidValueError(
                    f"{path or 'adapter'}: tensor {key!r} is not a plain {peft_type} weight (expected "
                    f"'{KEY_PREFIX}<module>' + one of {sorted(suffixes)}); adapters with DoRA, LoRA biases, "
                    "embedding LoRA or modules_to_save are not supported by the merge"
                )
            tensors.setdefault(match.group(1), {})[suffixes[match.group(2)]] = tensor
        return cls(dict(config), tensors, path=path, sha256=sha256)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The PEFT state dict (no adapter name in the keys), as ``set_peft_model_state_dict`` expects."""
        suffix_of = {part: suffix for suffix, part in _LAYOUTS[self.peft_type][1].items()}
        return {
            f"{KEY_PREFIX}{module}{suffix_of[part]}": tensor
            for module in self.module_names
            for part, tensor in sorted(self.tensors[module].items())
        }

    def peft_config(self):
        """The config as a ``peft`` config object (``LoraConfig`` or ``IA3Config``), inference mode."""
        from peft import PeftConfig

        return PeftConfig.from_peft_type(**{**self.config, "inference_mode": True})

    def save(self, directory: str | Path) -> None:
        """Write ``adapter_config.json`` and ``adapter_model.safetensors`` into an existing directory (not atomic:
        :func:`adamergex_pl.merging.write_merged` calls it on a temporary directory).

        Raises:
            ValueError: A tensor holds NaN or inf (nothing is written then).
        """
        state_dict = {key: tensor.detach().contiguous().cpu() for key, tensor in self.state_dict().items()}
        for key, tensor in state_dict.items():
            refuse_nonfinite(f"refusing to write {key}: it", tensor)
        directory = Path(directory)
        (directory / ADAPTER_CONFIG_FILE).write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")
        save_file(state_dict, str(directory / ADAPTER_WEIGHTS_FILE), metadata={"format": "pt"})
