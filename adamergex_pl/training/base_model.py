"""Loading the frozen base model, optionally quantized with bitsandbytes, and its tokenizer.

QLoRA (Dettmers et al., 2023, arXiv 2305.14314): 4-bit NormalFloat (``nf4``) with double quantization;
``int8`` is LLM.int8() (Dettmers et al., 2022). Through transformers' ``BitsAndBytesConfig``, so it runs on CPU too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from adamergex_pl.assets.builtin import resolve_base_model
from adamergex_pl.errors import InputNotFoundError, InvalidValueError

# the attribute Linear4bit.__init__ sets from has_avx512bf16() and forward reads on every call
_REPACK_FLAG = "support_avx512bf16_for_cpu"


def guard_4bit_cpu_path(model: nn.Module) -> int:
    """Keep every bitsandbytes ``Linear4bit`` in ``model`` on its unpacked, differentiable path; return how many."""
    guarded = 0
    for module in model.modules():
        if not hasattr(module, _REPACK_FLAG):
            continue
        setattr(module, _REPACK_FLAG, False)
        _unpack_if_packed(module)
        guarded += 1
    return guarded


def is_guarded(model: nn.Module) -> bool:
    """Whether no 4-bit layer of ``model`` can repack, and none is repacked now."""
    return all(
        not getattr(module, _REPACK_FLAG) and not _is_packed(module)
        for module in model.modules()
        if hasattr(module, _REPACK_FLAG)
    )


def _is_packed(layer: nn.Module) -> bool:
    state = getattr(layer.weight, "quant_state", None)
    return bool(getattr(state, "packing_format_for_cpu", False))


def _unpack_if_packed(layer: nn.Module) -> None:
    if not _is_packed(layer):
        return
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    layer.weight.data, layer.weight.quant_state = _convert_weight_packed_for_cpu_inverse(
        layer.weight.data, layer.weight.quant_state
    )


if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

QUANTIZATION_MODES = ("nf4", "fp4", "int8", "none")
DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on a CUDA device that supports it, float32 elsewhere."""
    if name not in DTYPE_NAMES:
        raise InvalidValueError(f"dtype {name!r} is not supported; expected one of {', '.join(DTYPE_NAMES)}")
    if name != "auto":
        return _DTYPES[name]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


@dataclass(frozen=True)
class QuantizationSpec:
    """How the frozen base weights are stored.

    Args:
        mode: ``nf4`` | ``fp4`` | ``int8`` | ``none``.
        double_quant: Quantize the 4-bit block scales too (4-bit modes only).
        compute_dtype: Dtype of the 4-bit matmuls: ``auto`` | ``float32`` | ``bfloat16`` | ``float16``.
        quant_storage: Dtype of the packed 4-bit weights (the model dtype for FSDP); ``None``: uint8.

    Raises:
        ValueError: An unknown mode or dtype, or 4-bit options combined with ``int8``/``none``.
    """

    mode: str = "none"
    double_quant: bool = True
    compute_dtype: str = "auto"
    quant_storage: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in QUANTIZATION_MODES:
            raise InvalidValueError(
                f"quantization={self.mode!r} is not supported; expected one of {', '.join(QUANTIZATION_MODES)}"
            )
        if self.compute_dtype not in DTYPE_NAMES:
            raise InvalidValueError(
                f"compute_dtype={self.compute_dtype!r} is not supported; expected one of {', '.join(DTYPE_NAMES)}"
            )
        if self.quant_storage is not None:
            if self.quant_storage not in _DTYPES:
                raise InvalidValueError(
                    f"quant_storage={self.quant_storage!r} is not supported; expected one of "
                    f"{', '.join(_DTYPES)} or null"
                )
            if self.mode not in ("nf4", "fp4"):
                raise InvalidValueError(
                    f"quant_storage={self.quant_storage!r} only applies to 4-bit quantization, but "
                    f"quantization={self.mode!r}; set quantization: nf4 or drop quant_storage"
                )

    @property
    def quantized(self) -> bool:
        return self.mode != "none"

    def bnb_config(self, device: torch.device):
        """The transformers ``BitsAndBytesConfig`` for this spec, or ``None`` when not quantized."""
        if not self.quantized:
            return None
        from transformers import BitsAndBytesConfig

        if self.mode == "int8":
            return BitsAndBytesConfig(load_in_8bit=True)
        storage = _DTYPES[self.quant_storage] if self.quant_storage else torch.uint8
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.mode,
            bnb_4bit_use_double_quant=self.double_quant,
            bnb_4bit_compute_dtype=resolve_dtype(self.compute_dtype, device),
            bnb_4bit_quant_storage=storage,
        )

    def check_runs_on(self, device: torch.device) -> None:
        """Run one tiny quantized matmul on ``device`` so that an unsupported combination fails before training.

        Raises:
            ValueError: bitsandbytes is missing or cannot run this quantization on this device.
        """
        if not self.quantized:
            return
        try:
            import bitsandbytes as bnb
        except Exception as err:  # ImportError, or a broken native library
            raise InvalidValueError(
                f"quantization={self.mode!r} needs bitsandbytes, which failed to import ({err}); install "
                "bitsandbytes>=0.50 or set quantization: none"
            ) from err
        dtype = resolve_dtype(self.compute_dtype, device)
        try:
            if self.mode == "int8":
                layer = bnb.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False)
            else:
                layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=dtype, quant_type=self.mode)
            layer = layer.to(device)
            guard_4bit_cpu_path(layer)  # test the path the model will take
            with torch.no_grad():
                out = layer(torch.ones(2, 64, device=device, dtype=dtype))
            if not torch.isfinite(out).all():
                raise RuntimeError("the test matmul returned non-finite values")
        except Exception as err:
            raise InvalidValueError(
                f"quantization={self.mode!r} (compute_dtype={self.compute_dtype!r}) cannot run on device "
                f"{device} with bitsandbytes {bnb.__version__}: {err}. Use quantization: none, another "
                "compute_dtype, or a device that bitsandbytes supports (CUDA, or CPU for nf4/fp4/int8)"
            ) from err


def load_base_model(
    name: str,
    quantization: QuantizationSpec,
    device: torch.device,
    dtype: str = "auto",
    attn_implementation: str | None = "sdpa",
) -> PreTrainedModel:
    """Load a causal LM by hub name, local path or ``builtin:<name>``, quantized per ``quantization``.

    A quantized model loads onto ``device`` (each DDP rank its own copy), an unquantized one onto the CPU.

    Raises:
        ValueError: The quantization cannot run on ``device``.
        FileNotFoundError: A local path that does not exist.
    """
    from transformers import AutoModelForCausalLM

    path = _existing_model_path(name)
    quantization.check_runs_on(device)
    kwargs = {"dtype": resolve_dtype(dtype, device)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    bnb_config = quantization.bnb_config(device)
    if bnb_config is not None:
        kwargs.update(quantization_config=bnb_config, device_map={"": device})
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    guard_4bit_cpu_path(model)  # one numeric path in training and evaluation on every CPU
    return model


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a base model, with a pad token (falls back to EOS) and right padding."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_existing_model_path(name))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def _existing_model_path(name: str) -> str:
    """Resolve ``builtin:`` names and refuse explicit local paths that do not exist."""
    path = resolve_base_model(name)
    if Path(path).expanduser().exists():
        return str(Path(path).expanduser())
    if path.startswith(("/", ".", "~")):
        raise InputNotFoundError(
            f"base_model={name!r}: no such directory; expected a local model directory, a hub name such as "
            "'meta-llama/Llama-2-7b-hf', or builtin:tiny-llama"
        )
    return path


if TYPE_CHECKING:
    from lightning.pytorch import LightningModule
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class BaseModelOptions:
    """Which base model to load and how.

    Args:
        base_model: Hub name, local directory, or ``builtin:<name>``.
        quantization: How the frozen weights are stored (mode, double quant, compute and storage dtypes).
        dtype: Dtype of unquantized base weights (``auto``: bfloat16 on CUDA, float32 on CPU).
        attn_implementation: Transformers attention backend (``sdpa``, ``eager``, ``flash_attention_2``).

    Raises:
        ValueError: An unknown quantization mode or dtype, or conflicting quantization options.
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
