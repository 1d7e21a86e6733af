"""Which Lightning strategies can train an adapter on a frozen, possibly bitsandbytes-quantized, base model.

``AdapterModule`` loads its base model in ``configure_model`` on every process, onto that process's device
(quantized ones with ``device_map={"": device}``), trains only the adapter, and checkpoints only the adapter.
That fits some strategies and not others; :func:`check_strategy` refuses the others before anything loads:

=====================  ======================  ==================================  ==========================
strategy               ``quantization: none``  ``nf4`` / ``fp4``                   ``int8``
=====================  ======================  ==================================  ==========================
single device          yes                     yes                                 yes
DDP (``ddp``,          yes                     yes: each rank quantizes its own    yes
``ddp_spawn``, ...)                            copy; only adapter grads reduced
FSDP                   yes (untested here)     only with ``quant_storage`` set     no
                                               (untested here)
DeepSpeed              no                      no                                  no
ModelParallel, XLA     no                      no                                  no
=====================  ======================  ==================================  ==========================

* DDP replicates the whole model on every rank and all-reduces only the gradients of trainable parameters;
  the frozen 4-bit weights are plain tensors to it. Tested on CPU with gloo, also with ``nf4``
  (``tests/slurm/test_slurm_fit.py``).
* FSDP flattens the parameters of each wrapped module into one flat tensor, which needs one dtype. bitsandbytes
  packs 4-bit weights into ``uint8`` storage by default, beside ``bfloat16``/``float32`` norms and adapter
  weights; with ``bnb_4bit_quant_storage`` (``quant_storage`` here) set to the model dtype the packed weights are
  stored in that dtype and flatten with the rest. ``int8`` weights carry row-wise scales outside the tensor
  and cannot be sharded. Lightning runs FSDP only on CUDA, so neither FSDP row is tested by this repository's
  CPU tests; use ``state_dict_type="full"`` so that checkpoints stay adapter-only.
* DeepSpeed writes its own checkpoint format (the adapter-only trimming does not apply; the frozen base would
  be saved, or fail to, with quantization) and does not support bitsandbytes weights in ZeRO-3;
  ModelParallel (FSDP2/tensor parallel) and XLA are not supported by bitsandbytes or by this module.

Example:
    >>> check_strategy(DDPStrategy(), QuantizationSpec("nf4"))
    >>> check_strategy(FSDPStrategy(), QuantizationSpec("nf4"))
    Traceback (most recent call last):
    ...
    adamergex_pl.errors.InvalidValueError: strategy FSDPStrategy with quantization='nf4' needs ...
"""

from __future__ import annotations

from lightning.pytorch.strategies import (
    DDPStrategy,
    DeepSpeedStrategy,
    FSDPStrategy,
    ModelParallelStrategy,
    SingleDeviceStrategy,
    SingleDeviceXLAStrategy,
    Strategy,
    XLAStrategy,
)

from adamergex_pl.errors import InvalidValueError
from adamergex_pl.training.base_model import QuantizationSpec

_SUPPORTED = "single device, ddp (any start method), or fsdp (unquantized, or 4-bit with quant_storage)"
_REASONS = {
    DeepSpeedStrategy: "it writes its own checkpoints (not adapter-only) and cannot shard bitsandbytes weights",
    ModelParallelStrategy: "bitsandbytes weights cannot be sharded with FSDP2/tensor parallelism",
    XLAStrategy: "bitsandbytes and this module run on CUDA or CPU only",
    SingleDeviceXLAStrategy: "bitsandbytes and this module run on CUDA or CPU only",
}


def check_strategy(strategy: Strategy, quantization: QuantizationSpec) -> None:
    """Raise if ``strategy`` cannot train an adapter on a base stored as ``quantization`` (table above).

    Args:
        strategy: the Trainer's strategy (``trainer.strategy``).
        quantization: how the base model is stored.

    Raises:
        ValueError: the strategy is not supported, or not with this quantization; the message names the fix.
    """
    name = type(strategy).__name__
    for refused, reason in _REASONS.items():  # before DDP/single device: DeepSpeed and XLA subclass them
        if isinstance(strategy, refused):
            raise InvalidValueError(
                f"strategy {name} is not supported by AdapterModule: {reason}; use {_SUPPORTED}"
            )
    if isinstance(strategy, (SingleDeviceStrategy, DDPStrategy)):
        return
    if isinstance(strategy, FSDPStrategy):
        if quantization.mode == "int8":
            raise InvalidValueError(
                "strategy FSDPStrategy cannot shard int8 (LLM.int8) weights; use strategy: ddp, or "
                "quantization: nf4 with quant_storage set to the model dtype"
            )
        if quantization.mode in ("nf4", "fp4") and quantization.quant_storage is None:
            raise InvalidValueError(
                f"strategy FSDPStrategy with quantization={quantization.mode!r} needs "
                "model.init_args.quant_storage set to the model dtype (e.g. bfloat16): FSDP flattens parameters "
                "of one dtype, and bitsandbytes stores packed 4-bit weights as uint8 otherwise; or use "
                "strategy: ddp"
            )
        return
    raise InvalidValueError(f"strategy {name} is not supported by AdapterModule; use {_SUPPORTED}")
