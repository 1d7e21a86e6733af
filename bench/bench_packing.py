"""Sequence packing: training throughput of ``adamergex fit`` on variable-length examples, padded vs packed.

    .venv/bin/python bench/bench_packing.py              # tiny and ~100M Llama, LoRA; ~10 min on 2 CPU cores
    .venv/bin/python bench/bench_packing.py --quick      # tiny model only

Both modes train the same LoRA with ``AdapterModule`` on the same examples in the same order and batches
(instruction-like lengths: a prompt of 16-384 tokens and a completion of 8-128, loss on the completion); only
the collator differs: ``PadCollator`` pads every example to the batch's longest, ``PackingCollator``
(``pack_sequences: true``) puts them first-fit into rows of that length (``data_modules/packing.py``).
Throughput counts real tokens only (padding is not work done), timed over the steps after a warm-up. Each run
is a fresh subprocess; the best of ``--repeats`` runs is kept, the two modes interleaved.

Prints a table and writes ``bench/results/packing.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
MODES = ("padded", "packed")


def examples(vocab_size: int, rows: int, seed: int = 0) -> list[dict]:
    """Instruction-like examples of random tokens: prompt 16-384 tokens, completion 8-128."""
    rng = random.Random(seed)
    data = []
    for _ in range(rows):
        prompt, completion = rng.randint(16, 384), rng.randint(8, 128)
        ids = [1] + [rng.randrange(4, vocab_size) for _ in range(prompt + completion - 1)]
        data.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return data


def worker(args) -> None:
    import torch
    from bench_training import model_path
    from lightning.pytorch import Callback, Trainer
    from torch.utils.data import DataLoader
    from transformers import AutoConfig

    from adamergex_pl import AdapterModule
    from data_modules.collate import PadCollator
    from data_modules.packing import PackingCollator

    torch.manual_seed(0)
    path = model_path(args.model)
    data = examples(AutoConfig.from_pretrained(path).vocab_size, args.batch_size * (args.warmup + args.steps))
    collate = PackingCollator(0) if args.mode == "packed" else PadCollator(0)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=False, collate_fn=collate)
    stats = {"tokens": 0, "positions": 0, "rows": 0}

    class Clock(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == args.warmup:
                stats["start"] = time.perf_counter()
            if trainer.global_step >= args.warmup:
                stats["tokens"] += int(batch["attention_mask"].sum())
                stats["positions"] += batch["input_ids"].numel()
                stats["rows"] += batch["input_ids"].shape[0]

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == args.warmup + args.steps:
                stats["end"] = time.perf_counter()

    module = AdapterModule(
        path,
        adapter_type="lora",
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        optimizer="adamw",
        learning_rate=1e-4,
    )
    with tempfile.TemporaryDirectory() as root:
        trainer = Trainer(
            accelerator="cpu", max_steps=args.warmup + args.steps, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[Clock()],
            default_root_dir=root,
        )  # fmt: skip
        trainer.fit(module, train_dataloaders=loader)
    seconds = stats["end"] - stats["start"]
    result = {
        "tokens_per_sec": stats["tokens"] / seconds,
        "sec_per_step": seconds / args.steps,
        "real_fraction": stats["tokens"] / stats["positions"],
        "rows_per_batch": stats["rows"] / args.steps,
    }
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model only")
    parser.add_argument("--models", default="tiny,llama100m")
    parser.add_argument("--repeats", type=int, default=2, help="runs per cell; the best is kept")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    rows = []
    for model in ["tiny"] if args.quick else args.models.split(","):
        steps = 30 if model == "tiny" else 5
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for mode in MODES:
                command = [
                    sys.executable, __file__, "--worker", "--mode", mode, "--model", model,
                    "--steps", str(steps), "--batch-size", str(args.batch_size),
                ]  # fmt: skip
                out = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
                line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
                if line is None:
                    raise SystemExit(f"{model} {mode} failed:\n{out.stderr[-3000:]}")
                result = json.loads(line[len("RESULT ") :])
                if mode not in best or result["tokens_per_sec"] > best[mode]["tokens_per_sec"]:
                    best[mode] = result
        for mode in MODES:
            ratio = best[mode]["tokens_per_sec"] / best["padded"]["tokens_per_sec"]
            rows.append({"model": model, "mode": mode, "ratio_vs_padded": ratio, **best[mode]})
            print(f"{model:10s} {mode:7s} {best[mode]['tokens_per_sec']:9.0f} real tok/s  x{ratio:5.2f}  "
                  f"{best[mode]['rows_per_batch']:4.1f} rows/batch  {best[mode]['real_fraction']:.0%} real",
                  flush=True)  # fmt: skip
    (HERE / "results").mkdir(exist_ok=True)
    meta = {"machine": f"{os.cpu_count()} CPU cores", "batch_size": args.batch_size}
    (HERE / "results" / "packing.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
