"""Which Lightning strategies can train an adapter on a frozen, possibly bitsandbytes-quantized, base model.

``AdapterModule`` loads its base model in ``configure_model`` on every process, onto its device, and trains and
checkpoints only the adapter; :func:`check_strategy` refuses other strategies before anything loads:

=====================  ======================  ==================================  ==========================
strategy               ``quantization: none``  ``nf4`` / ``fp4``                   ``int8``
=====================  ======================  ==================================  ==========================
single device          yes                     yes                                 yes
DDP (any)              yes                     yes: each rank quantizes its copy   yes
FSDP (untested)        yes                     only with ``quant_storage`` set     no
DeepSpeed              no                      no                                  no
ModelParallel, XLA     no                      no                                  no
=====================  ======================  ==================================  ==========================

DDP is tested on CPU with gloo, also with ``nf4`` (``tests/slurm/test_slurm_fit.py``). FSDP flattens parameters
into one dtype, hence ``quant_storage``; use ``state_dict_type="full"`` to keep checkpoints adapter-only.
DeepSpeed saves the frozen base in its own format.

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

    Raises:
        ValueError: The strategy is not supported, or not with this quantization; the message names the fix.
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
