"""One numeric path for 4-bit layers on every CPU: never let bitsandbytes repack weights for AVX512-BF16.

bitsandbytes 0.50's ``Linear4bit.forward`` converts its weight, on the first CPU forward that runs in eval mode
without grad on a CPU with AVX512-BF16, into a packed layout (``_convert_weight_packed_for_cpu``: the 4-bit
codes reordered in blocks of 32 output rows, the block scales dequantized to bfloat16 and the nested
double-quant statistics dropped). From then on ``matmul_4bit`` calls ``gemv_4bit``, which has no autograd
kernel, so after a validation pass (or Lightning's sanity check) no gradient flows through any quantized layer
while training goes on, and every logit is computed with bfloat16 scales instead of the float32 ones that
training and a reloaded snapshot use. Machines without AVX512-BF16 never take that path.

:func:`guard_4bit_cpu_path` switches the repacking off on every ``Linear4bit`` of a model, so the model keeps
one path, ``dequantize_4bit`` plus a float matmul in ``compute_dtype``, for training and evaluation, on every
CPU. Evaluation is then as fast as it is on CPUs without the feature; bitsandbytes' packed kernel is faster,
but it changes evaluation numerics by the bfloat16 rounding of the block scales (relative 2^-9), so it is not
used. A weight that was already repacked is restored first: its codes exactly, its block scales with the
bfloat16 rounding they took (bitsandbytes' inverse is best-effort); :func:`load_base_model` guards a model
before its first forward, so nothing of ours is ever restored.

The upstream fix is for ``Linear4bit`` to repack only where the result can never need a gradient, and to undo
the repacking when the module returns to training mode (``train()``) or when a forward needs grad, or to give
``gemv_4bit``'s packed layout an autograd formula; bitsandbytes has neither in 0.50.
"""

from __future__ import annotations

from torch import nn

# the attribute Linear4bit.__init__ sets from has_avx512bf16() and forward reads on every call
_REPACK_FLAG = "support_avx512bf16_for_cpu"


def guard_4bit_cpu_path(model: nn.Module) -> int:
    """Keep every bitsandbytes ``Linear4bit`` in ``model`` on its unpacked, differentiable path.

    Args:
        model: any module; modules that are not 4-bit layers are left alone.

    Returns:
        The number of 4-bit layers guarded (0 for an unquantized or 8-bit model).

    Example:
        ``guard_4bit_cpu_path(AutoModelForCausalLM.from_pretrained(name, quantization_config=nf4))``
    """
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
