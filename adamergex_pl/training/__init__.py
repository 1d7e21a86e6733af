"""Training: fine-tuning a LoRA or (IA)³ adapter on a frozen, optionally 4-bit, causal LM.

Modules: :mod:`.adapter_module` (``AdapterModule``, the LightningModule), :mod:`.base_options` (the base-model
options every module shares), :mod:`.base_model` (loading and quantization), :mod:`.cpu_4bit_guard` (one numeric
path for 4-bit layers on every CPU), :mod:`.adapter_spec` and :mod:`.peft_model` (the PEFT adapter),
:mod:`.optim` (optimizer and schedule), :mod:`.strategy_support` (which strategies work with which
quantization), :mod:`.snapshots` and :mod:`.adapter_snapshot` (adapter snapshots on disk, and the callback that
writes them).
"""
