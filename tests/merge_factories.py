"""Random, non-trivial PEFT adapters on ``builtin:tiny-llama`` for the merge tests, and dense references.

Fresh LoRA adapters have ``B = 0`` and fresh (IA)³ adapters ``l = 1``, so a merge test on them checks nothing:
every factor and vector here is filled with random values before saving. Adapters are made by PEFT itself
(``get_peft_model`` + ``save_pretrained``), so the files are exactly what training would leave behind.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path

import torch

from adamergex_pl.training.base_model import guard_4bit_cpu_path

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# beside the test session's other temporary files (conftest sets ADAMERGEX_CACHE inside them)
_SESSION = Path(os.environ["ADAMERGEX_CACHE"]).parent if "ADAMERGEX_CACHE" in os.environ else None
_WORKDIR = Path(tempfile.mkdtemp(prefix="merge-adapters-", dir=_SESSION))
_COUNTER = iter(range(1_000_000))


def load_base(base_path: str, *, quantization: str | None = None):
    """The tiny Llama in float32 (``quantization='nf4'``: 4-bit NF4 on CPU, float32 compute)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if quantization is None:
        return AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).eval()
    quant = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=quantization, bnb_4bit_compute_dtype=torch.float32
    )
    model = AutoModelForCausalLM.from_pretrained(base_path, quantization_config=quant, device_map="cpu")
    guard_4bit_cpu_path(model)  # the one numeric path the package's own models take (cpu_4bit_guard.py)
    return model.eval()


def make_lora(base_path: str, *, seed: int, std: float = 0.2, **config) -> Path:
    """Save a LoRA adapter (``LoraConfig(**config)``, all linears by default) with random A and B."""
    from peft import LoraConfig, get_peft_model

    config.setdefault("target_modules", ALL_LINEAR)
    model = get_peft_model(load_base(base_path), LoraConfig(**config))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    return _save(model)


def make_ia3(base_path: str, *, seed: int, low: float = 0.5, high: float = 1.5, **config) -> Path:
    """Save an (IA)³ adapter (k, v, down by default; down feedforward) with vectors uniform in [low, high]."""
    from peft import IA3Config, get_peft_model

    config.setdefault("target_modules", ["k_proj", "v_proj", "down_proj"])
    config.setdefault("feedforward_modules", ["down_proj"])
    model = get_peft_model(load_base(base_path), IA3Config(**config))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".ia3_l." in name:
                param.copy_(low + (high - low) * torch.rand(param.shape, generator=generator))
    return _save(model)


def _save(model) -> Path:
    out = _WORKDIR / f"adapter_{next(_COUNTER)}"
    model.save_pretrained(out)
    return out


def reference_scaling(config: dict, module: str) -> float:
    """The scaling of ``module``, computed here independently of the library (suffix patterns only)."""
    rank = next((v for k, v in (config.get("rank_pattern") or {}).items() if module.endswith(k)), config["r"])
    alpha = next(
        (v for k, v in (config.get("alpha_pattern") or {}).items() if module.endswith(k)),
        config["lora_alpha"],
    )
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def dense_lora(adapter) -> dict[str, torch.Tensor]:
    """``{module: s·B·A}`` in float64 for an ``AdapterWeights`` with its configured scalings."""
    return {
        module: reference_scaling(adapter.config, module)
        * (parts["lora_B"].double() @ parts["lora_A"].double())
        for module, parts in adapter.tensors.items()
    }


def dense_merged(adapter) -> dict[str, torch.Tensor]:
    """``{module: B·A}`` of a merged adapter, after checking its config declares scaling 1 everywhere."""
    config = adapter.config
    if config.get("use_rslora") or config["r"] != config["lora_alpha"]:
        raise AssertionError(f"merged config does not have scaling 1: {config}")
    if config.get("rank_pattern") != config.get("alpha_pattern"):
        raise AssertionError("merged rank_pattern and alpha_pattern differ")
    exceptions = {re.sub(r"\\(.)", r"\1", key): rank for key, rank in config["rank_pattern"].items()}
    for module, parts in adapter.tensors.items():
        if parts["lora_A"].shape[0] != exceptions.get(module, config["r"]):
            raise AssertionError(f"the config gives {module} another rank than its tensors")
    return {m: p["lora_B"].double() @ p["lora_A"].double() for m, p in adapter.tensors.items()}


def combine_dense(parts: list[tuple[float, dict[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
    """``Σ w_i·ΔW_i`` over modules, a missing module counting as zero."""
    modules = sorted(set().union(*(d for _, d in parts)))
    total = {}
    for module in modules:
        present = [w * d[module] for w, d in parts if module in d]
        total[module] = sum(present)
    return total


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.double() - expected.double()).norm() / expected.double().norm().clamp_min(1e-30))
