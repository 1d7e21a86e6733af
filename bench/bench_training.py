"""Training throughput: ``adamergex fit`` against a hand-written PyTorch+PEFT loop and transformers' Trainer.

    .venv/bin/python bench/bench_training.py                 # tiny and ~100M Llama, LoRA and (IA)³, plain and nf4
    .venv/bin/python bench/bench_training.py --quick         # tiny model only, fewer steps

All three train the same adapter on the same base model, data (fixed-length windows of random tokens), batch
size, sequence length, optimizer (AdamW) and gradient-checkpointing setting. Each run is a fresh subprocess,
so its peak resident memory (``ru_maxrss``) is its own. Tokens/s are timed over the steps after a warm-up,
from the start of the first timed step to the end of the last one (data loading included). The ratio column
is each framework's tokens/s over the hand-written loop's; the target is adamergex >= 0.95.

Prints a table and writes ``bench/results/training.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FRAMEWORKS = ("loop", "adamergex", "hf_trainer")


# ---------------------------------------------------------------------------------------------- set-up
def model_path(name: str) -> str:
    """``tiny`` is builtin:tiny-llama; ``llama100m`` a random Llama-shaped model of ~134M parameters."""
    from adamergex_pl.assets.builtin import (
        build_byte_tokenizer,
        cache_dir,
        resolve_base_model,
        tiny_llama_config,
    )

    if name == "tiny":
        return resolve_base_model("builtin:tiny-llama")
    target = cache_dir() / "bench-llama100m"
    if not (target / "config.json").is_file():
        import torch
        from transformers import LlamaForCausalLM

        torch.manual_seed(0)
        config = tiny_llama_config(
            vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
            num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=2048,
        )  # fmt: skip
        LlamaForCausalLM(config).save_pretrained(target)
        build_byte_tokenizer().save_pretrained(target)
    return str(target)


def dataset(vocab_size: int, seq_len: int, rows: int) -> list[dict]:
    import torch

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab_size, (rows, seq_len), generator=generator)
    return [{"input_ids": row.tolist(), "labels": row.tolist()} for row in ids]


def build_peft_model(args):
    import torch

    from adamergex_pl.training.base_model import QuantizationSpec, load_base_model
    from adamergex_pl.training.peft_model import AdapterSpec, attach_adapter

    quant = QuantizationSpec(args.quant)
    base = load_base_model(args.path, quant, torch.device("cpu"))
    spec = AdapterSpec(adapter_type=args.adapter, lora_r=8, lora_alpha=16, lora_dropout=0.0)
    return attach_adapter(base, spec, quant.quantized, args.checkpointing).train()


# ---------------------------------------------------------------------------------------------- workers
def run_loop(args, data) -> tuple[float, float]:
    import torch
    from torch.utils.data import DataLoader

    from data_modules.collate import PadCollator

    model = build_peft_model(args)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, collate_fn=PadCollator(0))
    start = end = None
    for step, batch in enumerate(loader):
        if step == args.warmup:
            start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss)
        if step == args.warmup + args.steps - 1:
            end = time.perf_counter()
            break
    return start, end


def run_adamergex(args, data) -> tuple[float, float]:
    from lightning.pytorch import Callback, Trainer
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader

    from adamergex_pl import AdapterModule
    from data_modules.collate import PadCollator

    times = {}

    class Clock(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == args.warmup:
                times["start"] = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == args.warmup + args.steps:
                times["end"] = time.perf_counter()

    module = AdapterModule(
        args.path, adapter_type=args.adapter, quantization=args.quant, lora_r=8, lora_alpha=16,
        lora_dropout=0.0, gradient_checkpointing=args.checkpointing, optimizer="adamw", learning_rate=1e-4,
    )  # fmt: skip
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, collate_fn=PadCollator(0))
    with tempfile.TemporaryDirectory() as log_dir:
        trainer = Trainer(
            accelerator="cpu", max_steps=args.warmup + args.steps, logger=CSVLogger(log_dir), log_every_n_steps=50,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            limit_val_batches=0, callbacks=[Clock()],
        )  # fmt: skip
        trainer.fit(module, train_dataloaders=loader)
    return times["start"], times["end"]


def run_hf_trainer(args, data) -> tuple[float, float]:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from data_modules.collate import PadCollator

    model = build_peft_model(args)
    times = {}

    class Clock(TrainerCallback):
        def on_step_begin(self, training_args, state, control, **kwargs):
            if state.global_step == args.warmup:
                times["start"] = time.perf_counter()

        def on_step_end(self, training_args, state, control, **kwargs):
            if state.global_step == args.warmup + args.steps:
                times["end"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as out:
        training_args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=args.warmup + args.steps,
            learning_rate=1e-4, optim="adamw_torch", logging_steps=50, save_strategy="no", report_to=[],
            use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False,
        )  # fmt: skip
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=data,
            data_collator=PadCollator(0),
            callbacks=[Clock()],
        )
        trainer.train()
    return times["start"], times["end"]


def worker(args) -> None:
    import torch

    torch.manual_seed(0)
    args.path = model_path(args.model)
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(args.path).vocab_size
    data = dataset(vocab, args.seq_len, args.batch_size * (args.warmup + args.steps + 1))
    run = {"loop": run_loop, "adamergex": run_adamergex, "hf_trainer": run_hf_trainer}[args.framework]
    start, end = run(args, data)
    tokens = args.steps * args.batch_size * args.seq_len
    result = {
        "tokens_per_sec": tokens / (end - start),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print("RESULT " + json.dumps(result))


# ---------------------------------------------------------------------------------------------- driver
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model only, fewer steps")
    parser.add_argument("--models", default="tiny,llama100m")
    parser.add_argument("--adapters", default="lora,ia3")
    parser.add_argument("--quants", default="none,nf4")
    parser.add_argument("--repeats", type=int, default=2, help="runs per cell; the best is kept")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--framework", choices=FRAMEWORKS)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--adapter", default="lora")
    parser.add_argument("--quant", default="none")
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    models = ["tiny"] if args.quick else args.models.split(",")
    rows = []
    for model in models:
        steps = 40 if model == "tiny" else 6
        if args.quick:
            steps = 20
        for adapter in args.adapters.split(","):
            for quant in args.quants.split(","):
                cell: dict[str, dict] = {}
                for _ in range(args.repeats):  # frameworks interleaved, so that drift in load hits all alike
                    for framework in FRAMEWORKS:
                        command = [
                            sys.executable, __file__, "--worker", "--framework", framework, "--model", model,
                            "--adapter", adapter, "--quant", quant, "--steps", str(steps),
                            "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
                        ]  # fmt: skip
                        out = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
                        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
                        if line is None:
                            raise SystemExit(
                                f"{framework} {model} {adapter} {quant} failed:\n{out.stderr[-3000:]}"
                            )
                        result = json.loads(line[len("RESULT ") :])
                        if (
                            framework not in cell
                            or result["tokens_per_sec"] > cell[framework]["tokens_per_sec"]
                        ):
                            cell[framework] = result
                for framework in FRAMEWORKS:
                    ratio = cell[framework]["tokens_per_sec"] / cell["loop"]["tokens_per_sec"]
                    rows.append(dict(model=model, adapter=adapter, quant=quant, framework=framework,
                                     ratio_vs_loop=ratio, **cell[framework]))  # fmt: skip
                    print(f"{model:10s} {adapter:5s} {quant:5s} {framework:11s} "
                          f"{cell[framework]['tokens_per_sec']:10.0f} tok/s  x{ratio:5.2f}  "
                          f"{cell[framework]['peak_rss_mb']:7.0f} MB", flush=True)  # fmt: skip
    (HERE / "results").mkdir(exist_ok=True)
    meta = {"machine": f"{os.cpu_count()} CPU cores", "batch_size": args.batch_size, "seq_len": args.seq_len}
    (HERE / "results" / "training.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
