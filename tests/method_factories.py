"""Small in-memory adapters and a deeper tiny Llama for the tests of layer swapping, TIES and the gap diagnosis.

The in-memory adapters are random (``B ≠ 0``, ``l ≠ 1``) and tiny, on a made-up model with ``layers`` decoder
layers plus an ``lm_head`` outside them, so that a test can place updates in bottom, middle and top layers
without building a model. :func:`tiny_llama_with_layers` builds a real four-layer ``builtin:tiny-llama``
variant for the tests that load results into PEFT.
"""

from __future__ import annotations

from pathlib import Path

import torch

from adamergex_pl.merging.adapters import AdapterWeights

# module suffix -> (out, in) of the made-up model; down_proj is the (IA)³ feedforward module
SHAPES = {"self_attn.q_proj": (12, 10), "self_attn.v_proj": (6, 10), "mlp.down_proj": (10, 14)}
HEAD = ("lm_head", (20, 10))


def module_names(layers: int, suffixes=tuple(SHAPES), head: bool = True) -> list[str]:
    names = [f"model.layers.{i}.{suffix}" for i in layers for suffix in suffixes]
    return [*names, HEAD[0]] if head else names


def _shape(module: str) -> tuple[int, int]:
    if module == HEAD[0]:
        return HEAD[1]
    return SHAPES[module.split(".", 3)[3]]


def synthetic_lora(
    seed: int,
    *,
    layers=range(4),
    r: int = 4,
    alpha: float = 8,
    use_rslora: bool = False,
    suffixes=tuple(SHAPES),
    head: bool = True,
    base: str = "made-up-base",
    std: float = 0.3,
) -> AdapterWeights:
    """A LoRA adapter with random A and B on ``layers`` (and ``lm_head``)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for module in module_names(layers, suffixes, head):
        out, inp = _shape(module)
        tensors[module] = {
            "lora_A": torch.randn(r, inp, generator=generator) * std,
            "lora_B": torch.randn(out, r, generator=generator) * std,
        }
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": r,
        "lora_alpha": alpha,
        "use_rslora": use_rslora,
        "target_modules": sorted({m.rsplit(".", 1)[-1] for m in tensors}),
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    return AdapterWeights(config, tensors)


def synthetic_ia3(
    seed: int,
    *,
    layers=range(4),
    suffixes=tuple(SHAPES),
    head: bool = True,
    base: str = "made-up-base",
    low: float = 0.5,
    high: float = 1.5,
) -> AdapterWeights:
    """An (IA)³ adapter with vectors uniform in ``[low, high]``; ``down_proj`` is feedforward ``(1, in)``."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for module in module_names(layers, suffixes, head):
        out, inp = _shape(module)
        shape = (1, inp) if module.endswith("down_proj") else (out, 1)
        tensors[module] = {"ia3_l": low + (high - low) * torch.rand(shape, generator=generator)}
    config = {
        "peft_type": "IA3",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "target_modules": sorted({m.rsplit(".", 1)[-1] for m in tensors}),
        "feedforward_modules": ["down_proj"],
    }
    return AdapterWeights(config, tensors)


def tiny_llama_with_layers(directory: Path, num_layers: int) -> str:
    """``builtin:tiny-llama``'s shape with ``num_layers`` layers, random weights, saved to ``directory``."""
    from transformers import LlamaForCausalLM

    from adamergex_pl.assets.builtin import build_byte_tokenizer, tiny_llama_config

    with torch.random.fork_rng():
        torch.manual_seed(123)
        model = LlamaForCausalLM(tiny_llama_config(num_hidden_layers=num_layers))
    model.save_pretrained(directory)
    build_byte_tokenizer().save_pretrained(directory)
    return str(directory)


def patched_logits(base_path: str, tokens: torch.Tensor, update) -> torch.Tensor:
    """Logits of the base model whose linear weights ``W`` are replaced by ``update(module, W)`` (float64)."""
    from merge_factories import load_base

    model = load_base(base_path)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear):
                new = update(name, module.weight.double())
                if new is not None:
                    module.weight.copy_(new.float())
        return model(tokens).logits.float()


def peft_logits(base_path: str, adapter_dir: Path, tokens: torch.Tensor) -> torch.Tensor:
    """Logits of ``PeftModel.from_pretrained(base, adapter_dir)``."""
    from merge_factories import load_base
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_base(base_path), str(adapter_dir)).eval()
    with torch.no_grad():
        return model(tokens).logits.float()
