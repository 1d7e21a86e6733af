"""Benchmark: a MergeModule comparison with a selection split, only the chosen t on the test items vs every t.

    .venv/bin/python bench/bench_selection_first.py    # ~3 min on 2 cores: prints a table, writes
                                                        # results/selection_first.json

``builtin:demo-bilingual`` (the demo's 1.3 M-parameter Llama) with three random LoRA adapters (r=8 on every
linear layer: the task adapter and the English and Spanish reference adapters), evaluated by causal-LM loss on
120 windows of 64 tokens per language from the English and Spanish Wikipedia text shipped with the demo. Nine
methods as in the demo (``base``, ``zero_shot``, six merge methods at four values of ``t``, ``layer_swap`` at
two ``K``): 28 adapters per language. ``selection_fraction: 0.3``.

* **chosen t only** (the default): each language's 36 selection items first, every adapter on them; then
  each merge method at its chosen value on the 84 test items: 9 adapters.
* **every t**: every adapter on every item (``MergeModule._hold_out_selection`` switched off in-process).

Both runs must write the same ``results.csv``/``.json``/``.md`` (checked). Timed: ``trainer.validate`` alone
(base loading and merges included: every merge is still built per language), best of 2 interleaved rounds,
wall and CPU seconds of this process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "selection_first.json"
METHODS = ["base", "zero_shot", "arimerge", "adamergex", "adamergex_factor", "ties", "dare_ties", "ties_core",
           "layer_swap"]  # fmt: skip
SCALES, SWAPS, FRACTION, WINDOWS = [0.25, 0.5, 1.0, 1.5], [1, 2], 0.3, 120


def make_lora(base: str, seed: int, out: Path) -> Path:
    """A LoRA adapter (r=8 on every linear layer) with random A and B, saved as PEFT writes it."""
    from peft import LoraConfig, get_peft_model

    from adamergex_pl.training.base_model import BaseModelOptions

    model = BaseModelOptions.from_args(base).load(torch.device("cpu"))
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    model.save_pretrained(out)
    return out


def validate(adapters: list[Path], out: Path, every_t: bool) -> tuple[float, float, Path]:
    """One ``trainer.validate``; returns wall seconds, CPU seconds and the results folder."""
    from lightning.pytorch import Trainer

    from adamergex_pl import MergeModule
    from data_modules import DataSource, ReferenceLMDataModule

    task, ref_en, ref_es = adapters
    data = ReferenceLMDataModule(
        val=[DataSource(f"builtin:demo/wiki_{lang}.jsonl", language=lang) for lang in ("en", "es")],
        tokenizer="builtin:demo-bilingual", window_tokens=64, max_val_windows=WINDOWS, eval_batch_size=8,
    )  # fmt: skip
    module = MergeModule(
        "builtin:demo-bilingual", str(task), {"en": str(ref_en), "es": str(ref_es)}, methods=METHODS,
        scales=SCALES, swaps=SWAPS, svd_rank=8, density=0.5, selection_fraction=FRACTION, selection_metric="loss",
        results_dir=str(out),
        bootstrap_resamples=200,
    )  # fmt: skip
    original = MergeModule._hold_out_selection
    if every_t:
        MergeModule._hold_out_selection = lambda self, datamodule, stage: None
    try:
        trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=out)
        wall, cpu = time.perf_counter(), time.process_time()
        trainer.validate(module, datamodule=data, verbose=False)
        return time.perf_counter() - wall, time.process_time() - cpu, out
    finally:
        MergeModule._hold_out_selection = original


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        adapters = [make_lora("builtin:demo-bilingual", s, root / f"adapter_{s}") for s in (1, 2, 3)]
        times: dict[str, list[tuple[float, float]]] = {"chosen t only": [], "every t": []}
        folders = {}
        for round_ in range(args.rounds):
            for mode in times:
                wall, cpu, folders[mode] = validate(adapters, root / f"{mode}_{round_}".replace(" ", "_"),
                                                    every_t=mode == "every t")  # fmt: skip
                times[mode].append((wall, cpu))
        same = all(
            (folders["chosen t only"] / name).read_text() == (folders["every t"] / name).read_text()
            for name in ("results.csv", "results.json", "results.md")
        )
    best = {mode: min(runs) for mode, runs in times.items()}
    items, test = WINDOWS, WINDOWS - round(FRACTION * WINDOWS)
    adapters = 2 + 6 * len(SCALES) + len(SWAPS)
    runs = {"chosen t only": (items - test) * adapters + test * (2 + 6 + 1), "every t": items * adapters}
    print(f"{'mode':<15} {'wall s':>8} {'CPU s':>8} {'adapter-item runs / language':>30}")
    for mode, (wall, cpu) in best.items():
        print(f"{mode:<15} {wall:>8.1f} {cpu:>8.1f} {runs[mode]:>30,}")
    ratio = best["every t"][0] / best["chosen t only"][0]
    print(f"every t / chosen t only: {ratio:.2f}x wall, {best['every t'][1] / best['chosen t only'][1]:.2f}x CPU; "
          f"identical results files: {same}")  # fmt: skip
    record = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "runs": {mode: [{"wall_s": w, "cpu_s": c} for w, c in runs_] for mode, runs_ in times.items()},
        "adapter_item_runs_per_language": runs,
        "speedup_wall": ratio,
        "identical_results": same,
    }
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
