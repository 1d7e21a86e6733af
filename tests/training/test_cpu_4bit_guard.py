"""4-bit layers keep one differentiable numeric path on every CPU (adamergex_pl/training/base_model.py).

bitsandbytes repacks a ``Linear4bit``'s weight for its AVX512-BF16 kernel on the first eval-mode no-grad CPU
forward, after which no gradient flows through the layer. Whether a machine takes that path depends on its CPU,
so these tests force it: ``bitsandbytes.nn.modules.has_avx512bf16`` is patched to say yes while layers are
built, which is exactly what ``Linear4bit.__init__`` reads on such a CPU. The repacking itself is plain torch and
runs on any CPU, so the forced path is the real one up to the kernel it would call next.

The CPU without AVX512-BF16 takes other bitsandbytes paths (no repacking, and no BF16 kernel for single-row
products); CI's machine may have either kind, so those paths are forced too, in subprocesses, before bitsandbytes
is imported (``tests/cpu_kind.py``).

The end-to-end check (a fit that validates every epoch gives the same adapter as one that never validates)
runs the real ``adamergex`` entry point in a subprocess, forced to each kind of CPU.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch
from conftest import REPO_ROOT, run_adamergex

from adamergex_pl import AdapterModule
from adamergex_pl.training.base_model import guard_4bit_cpu_path, is_guarded

RUN = Path("runs/tiny/task_lora")  # configs/tiny/task_lora.yaml's default_root_dir
CPU_KIND = [sys.executable, str(REPO_ROOT / "tests" / "cpu_kind.py")]


@pytest.fixture
def cpu_with_avx512_bf16(monkeypatch):
    """Layers built inside this fixture believe the CPU has AVX512-BF16, whatever it has."""
    monkeypatch.setattr(bnb.nn.modules, "has_avx512bf16", lambda: True)


def _nf4_layer(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    return layer.to("cpu")  # quantizes the weight


def _input_grad_after_an_eval_pass(layer: torch.nn.Module) -> torch.Tensor | None:
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(1))
    layer.eval()
    with torch.no_grad():
        layer(x)
    layer.train()
    x.requires_grad_(True)
    layer(x).sum().backward()
    return x.grad


def test_unguarded_layer_on_such_a_cpu_repacks_on_an_eval_pass(cpu_with_avx512_bf16):
    # The hazard, shown on the forced path: one eval no-grad forward switches the layer to the packed format.
    layer = _nf4_layer()
    assert layer.support_avx512bf16_for_cpu
    layer.eval()
    with torch.no_grad():
        layer(torch.ones(2, 64))
    assert layer.weight.quant_state.packing_format_for_cpu
    assert not is_guarded(layer)


def test_guarded_layer_keeps_its_gradient_and_its_numerics_after_an_eval_pass(cpu_with_avx512_bf16):
    layer = _nf4_layer()
    assert guard_4bit_cpu_path(layer) == 1 and is_guarded(layer)
    grad = _input_grad_after_an_eval_pass(layer)
    assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)
    assert grad is not None
    # d(sum(x W^T))/dx = column sums of the dequantized W, the same float32 arithmetic as the forward: the
    # only difference is summation order over 64 terms of size <= |W|max, far below 1e-5.
    dense = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
    torch.testing.assert_close(grad, dense.sum(0).expand(3, -1), rtol=0, atol=1e-5)


def test_a_repacked_layer_is_restored_by_the_guard(cpu_with_avx512_bf16):
    layer = _nf4_layer()
    layer.eval()
    with torch.no_grad():
        layer(torch.ones(2, 64))
    guard_4bit_cpu_path(layer)
    assert is_guarded(layer)
    assert _input_grad_after_an_eval_pass(layer) is not None


@pytest.mark.parametrize("quantization", ["nf4", "fp4"])
def test_every_4bit_layer_of_a_built_module_is_guarded(cpu_with_avx512_bf16, quantization):
    module = AdapterModule("builtin:tiny-llama", quantization=quantization, lora_r=4)
    module.configure_model()
    layers = [m for m in module.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(layer.support_avx512bf16_for_cpu is False for layer in layers)
    assert is_guarded(module.model)


def _snapshot_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run_dir / RUN / "snapshots" / "last" / "adapter_model.safetensors")


@pytest.mark.parametrize("kind", ["avx512_bf16", "no_avx512_bf16"])
def test_a_4bit_fit_that_validates_every_epoch_trains_the_same_adapter_as_one_that_never_does(tmp_path, kind):
    """Through the real CLI, on each kind of CPU (forced): validation (sanity check included) must leave
    training untouched. Same seed, same data order, same arithmetic: the adapters must be bitwise equal (no
    tolerance: nothing differs between the runs but the validation passes). LoRA dropout is on, so a validation
    pass that consumed the global RNG would shift every later dropout mask and fail this too."""
    config = REPO_ROOT / "configs" / "tiny" / "task_lora.yaml"
    common = [
        "--config",
        str(config),
        "--model.init_args.quantization=nf4",
        "--model.init_args.lora_dropout=0.1",
        "--trainer.max_epochs=3",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
    ]
    runs = {"validates": ["--trainer.check_val_every_n_epoch=1"], "never": ["--trainer.limit_val_batches=0"]}
    for name, extra in runs.items():
        (tmp_path / name).mkdir()  # the config's output paths are relative: each run writes under its own cwd
        run_adamergex("fit", *common, *extra, cwd=tmp_path / name, launcher=[*CPU_KIND, kind])
    validated, never = (_snapshot_tensors(tmp_path / name) for name in runs)
    assert validated.keys() == never.keys() and validated
    for key in validated:
        assert torch.equal(validated[key], never[key]), (
            f"{key}: max |diff| {(validated[key] - never[key]).abs().max()}"
        )
    metrics = (tmp_path / "validates" / RUN / "checkpoints").exists()
    assert metrics  # the validating run really ran to its end and checkpointed


def test_without_avx512_bf16_4bit_layers_never_repack_and_single_rows_take_the_float_path():
    """Forced before bitsandbytes is imported: no repacking, no BF16 ``gemv_4bit`` kernel. A single-row eval
    product (greedy decoding's shape) then equals the float32 product with the dequantized weight exactly; the
    BF16 kernel (this CPU's own path, if it has AVX512-BF16) is off by about 5e-3 here."""
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        from cpu_kind import force
        force("no_avx512_bf16")
        import bitsandbytes as bnb, torch
        from adamergex_pl.training.base_model import guard_4bit_cpu_path, is_guarded
        assert not bnb.functional.has_avx512bf16()
        torch.manual_seed(0)
        layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4").to("cpu")
        assert layer.support_avx512bf16_for_cpu is False
        dense = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
        x = torch.randn(1, 64)
        layer.eval()
        with torch.no_grad():
            single = layer(x)
        assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False) and is_guarded(layer)
        print((single - x @ dense.T).abs().max().item())
        layer.train()
        x.requires_grad_(True)
        layer(x).sum().backward()
        assert x.grad is not None and guard_4bit_cpu_path(layer) == 1
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(REPO_ROOT / "tests")], capture_output=True, text=True, check=True
    )
    assert float(out.stdout.split()[-1]) <= 1e-6, out.stdout
    assert "gemm_4bit_forward" not in out.stderr  # the BF16 backend was never set up
