"""Which strategies ``AdapterModule`` accepts with which quantization, and that it refuses before loading."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from lightning.pytorch.strategies import (
    DDPStrategy,
    DeepSpeedStrategy,
    FSDPStrategy,
    ModelParallelStrategy,
    SingleDeviceStrategy,
    XLAStrategy,
)

from adamergex_pl import AdapterModule
from adamergex_pl.errors import InvalidValueError
from adamergex_pl.training.base_model import QuantizationSpec
from adamergex_pl.training.strategy_support import check_strategy


def bare(cls):
    """An instance without ``__init__``: DeepSpeed and XLA refuse to be built without their packages."""
    return cls.__new__(cls)


@pytest.mark.parametrize("mode", ["none", "nf4", "fp4", "int8"])
def test_single_device_and_ddp_take_every_quantization(mode):
    for strategy in (SingleDeviceStrategy("cpu"), DDPStrategy(), DDPStrategy(start_method="spawn")):
        check_strategy(strategy, QuantizationSpec(mode))


def test_fsdp_needs_quant_storage_for_4bit_and_refuses_int8():
    check_strategy(FSDPStrategy(), QuantizationSpec("none"))
    check_strategy(FSDPStrategy(), QuantizationSpec("nf4", quant_storage="bfloat16"))
    with pytest.raises(
        InvalidValueError, match=r"needs model\.init_args\.quant_storage set to the model dtype"
    ):
        check_strategy(FSDPStrategy(), QuantizationSpec("nf4"))
    with pytest.raises(InvalidValueError, match="cannot shard int8"):
        check_strategy(FSDPStrategy(), QuantizationSpec("int8"))


@pytest.mark.parametrize(
    ("strategy", "reason"),
    [
        (bare(DeepSpeedStrategy), "writes its own checkpoints"),
        (bare(XLAStrategy), "CUDA or CPU only"),
        (ModelParallelStrategy(), "FSDP2/tensor parallelism"),
    ],
)
def test_other_strategies_are_refused_with_the_reason_and_the_alternatives(strategy, reason):
    for mode in ("none", "nf4"):
        with pytest.raises(InvalidValueError) as err:
            check_strategy(strategy, QuantizationSpec(mode))
        assert reason in str(err.value) and "use single device, ddp" in str(err.value)


def test_adapter_module_refuses_in_setup_before_the_base_model_loads():
    module = AdapterModule("builtin:tiny-llama", quantization="nf4")
    module._trainer = SimpleNamespace(strategy=FSDPStrategy(), datamodule=None)
    with pytest.raises(InvalidValueError, match="FSDPStrategy with quantization='nf4'"):
        module.setup("fit")
    assert module.model is None
