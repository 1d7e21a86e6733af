"""The base-model options every LightningModule of the package shares, in one place.

``AdapterModule`` (training) and ``MergeModule`` (the merge comparison) both load a frozen causal LM,
optionally 4-bit. Their ``__init__`` arguments stay flat and typed, so LightningCLI turns them into the same
YAML keys in both (``base_model``, ``quantization``, ``double_quant``, ``compute_dtype``, ``quant_storage``,
``dtype``, ``attn_implementation``); :class:`BaseModelOptions` is what both build from them, and
:data:`BASE_MODEL_KEYS` is the list the pipeline copies from its shared ``model`` section to the evaluation.

Example:
    >>> options = BaseModelOptions.from_args("builtin:tiny-llama", quantization="nf4")
    >>> options.quantization.mode, options.dtype
    ('nf4', 'auto')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from adamergex_pl.training.base_model import QuantizationSpec, load_base_model

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class BaseModelOptions:
    """Which base model to load and how.

    Args:
        base_model: hub name, local directory, or ``builtin:<name>``.
        quantization: how the frozen weights are stored (mode, double quant, compute and storage dtypes).
        dtype: dtype of unquantized base weights (``auto``: bfloat16 on CUDA, float32 on CPU).
        attn_implementation: transformers attention backend (``sdpa``, ``eager``, ``flash_attention_2``).

    Raises:
        ValueError: an unknown quantization mode or dtype, or conflicting quantization options.
    """

    base_model: str
    quantization: QuantizationSpec
    dtype: str = "auto"
    attn_implementation: str | None = "sdpa"

    @classmethod
    def from_args(
        cls,
        base_model: str,
        quantization: str = "none",
        double_quant: bool = True,
        compute_dtype: str = "auto",
        quant_storage: str | None = None,
        dtype: str = "auto",
        attn_implementation: str | None = "sdpa",
    ) -> BaseModelOptions:
        """Build from a module's flat ``__init__`` arguments (the YAML keys of :data:`BASE_MODEL_KEYS`)."""
        spec = QuantizationSpec(quantization, double_quant, compute_dtype, quant_storage)
        return cls(base_model, spec, dtype, attn_implementation)

    def load_for(self, module: LightningModule) -> PreTrainedModel:
        """Load the base model onto ``module``'s device: its strategy's root device, the CPU without a trainer."""
        trainer = module._trainer
        return self.load(trainer.strategy.root_device if trainer is not None else torch.device("cpu"))

    def load(self, device: torch.device) -> PreTrainedModel:
        """Load the base model for ``device`` (quantized while loading; 4-bit layers CPU-guarded)."""
        return load_base_model(
            self.base_model, self.quantization, device, self.dtype, self.attn_implementation
        )


# the YAML keys of BaseModelOptions.from_args, in its order
BASE_MODEL_KEYS = (
    "base_model",
    "quantization",
    "double_quant",
    "compute_dtype",
    "quant_storage",
    "dtype",
    "attn_implementation",
)
