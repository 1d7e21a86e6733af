"""Benchmark: option scoring against generate-then-parse on the same multiple-choice examples and model.

    .venv/bin/python bench/bench_option_scoring.py           # ~3 min on 2 CPU cores; writes results/option_scoring.json
    .venv/bin/python bench/bench_option_scoring.py --quick   # the tiny model only
    .venv/bin/python bench/bench_option_scoring.py --single-token-only --models llama-112m  # one comparison

The examples are XNLI-layout items (the shipped fixtures in en, de and zh, repeated to ``--examples``),
rendered with the task suite's default prompt and tokenized by the byte-level tokenizer of the built-in
models, exactly as ``TaskDataModule(task="xnli")`` does. Three ways to get a prediction from one model:

* option scoring with a shared prompt (the task suite's default): one pass over the ``B`` prompts, then one
  over the ``B × 3`` options against the cached prompt keys/values; the option with the highest summed
  log-likelihood wins (``shared_prompt_scores``);
* option scoring with one row per option: one pass over ``B × 3`` rows of prompt + option
  (``choice_scores``; ``TaskDataModule(share_prompt=False)``); same predictions;
* single-token options (the last token of each label word, as a subword tokenizer's one-token label words):
  ``shared_prompt_scores`` scores them from the prompts' last logits in one forward, against the two-pass
  path (cached prompt, then the option rows) that every option took before; same predictions (checked);
* generate-then-parse: greedy decoding of as many tokens as the longest option has (" contradiction" is 14
  byte tokens; a subword tokenizer needs 3-4), decoding the generated tokens only, and taking the first
  label word found (no label word: wrong).

Models: ``builtin:tiny-llama`` (2 layers, hidden 64) and a randomly initialised Llama-shaped ~112M model
(10 layers, hidden 768, 12 query / 4 key-value heads, intermediate 2048, vocabulary 32000), float32 on CPU
with SDPA attention. Throughput is examples per second over all examples (best of ``--repeats`` timed passes
after one warm-up batch, the methods taking turns), batch size ``--batch-size`` examples for every method.
The ratios are over generate-then-parse: examples/s over its examples/s, and its CPU seconds per example over
the method's (CPU time of all this process's threads, less sensitive to other load on a shared machine).
``--single-token-only`` measures the single-token comparison alone and updates those fields of the models'
rows in the JSON (keeping the rest), with the run's load average beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = Path(__file__).parent / "results" / "option_scoring.json"
LABELS = ("entailment", "neutral", "contradiction")
MEDIUM = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=10, num_attention_heads=12)
MEDIUM |= dict(num_key_value_heads=4, vocab_size=32000)


def build_examples(count: int):
    """``count`` XNLI examples (fixtures repeated), as choice examples and as left-paddable prompts."""
    from data_modules import DataSource, TaskDataModule

    val = [DataSource(f"builtin:tasks/xnli/{lang}.jsonl", language=lang) for lang in ("en", "de", "zh")]
    data = TaskDataModule("xnli", val=val, tokenizer="builtin:tiny-llama", eval_samples="all")
    data.setup("validate")
    pool = [e for lang in data.val_languages for e in data.val_examples[lang]]
    examples = [dict(pool[i % len(pool)], index=i) for i in range(count)]
    return data.tokenizer, examples


def load_model(name: str):
    from transformers import LlamaForCausalLM

    from adamergex_pl.assets.builtin import resolve_base_model, tiny_llama_config

    torch.manual_seed(0)
    if name == "tiny-llama":
        model = LlamaForCausalLM.from_pretrained(resolve_base_model("builtin:tiny-llama"))
    else:
        model = LlamaForCausalLM(tiny_llama_config(**MEDIUM, max_position_embeddings=2048))
    model.config._attn_implementation = "sdpa"
    return model.eval()


def option_scoring(model, tokenizer, examples, batch_size: int, share_prompt: bool) -> list[int]:
    from adamergex_pl.evaluation.choice_evaluator import ChoiceEvaluator
    from data_modules.collate import TaskCollator

    evaluator = ChoiceEvaluator("xnli", ["all"], 3)
    collate = TaskCollator("choice", tokenizer.pad_token_id, share_prompt=share_prompt)
    predictions = []
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size])
        predictions += evaluator.predict(model, batch).tolist()
    return predictions


def single_token(examples):
    """The same examples with one token per option: the last token of each label word (distinct here)."""
    return [dict(e, option_ids=[ids[-1:] for ids in e["option_ids"]]) for e in examples]


def one_token_scoring(model, tokenizer, examples, batch_size: int, two_pass: bool) -> list[int]:
    """Single-token options by ``shared_prompt_scores``: one forward (the prompts' last logits), or, with
    ``two_pass``, the path every option took before (cached prompt pass, then a pass over the option rows),
    reached by a padding column after the options (masked, so the scores are the same)."""
    from adamergex_pl.evaluation.shared_prompt_scoring import shared_prompt_scores
    from data_modules.collate import TaskCollator

    collate = TaskCollator("choice", tokenizer.pad_token_id, share_prompt=True)
    predictions = []
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size])
        if two_pass:
            for key in ("option_input_ids", "option_attention_mask"):
                batch[key] = torch.cat([batch[key], torch.zeros_like(batch[key])], dim=1)
        predictions += shared_prompt_scores(model, batch).argmax(-1).tolist()
    return predictions


def generate_then_parse(model, tokenizer, examples, batch_size: int, max_new_tokens: int) -> list[int]:
    from adamergex_pl.evaluation.generation import greedy_completions
    from data_modules.collate import TaskCollator

    collate = TaskCollator("generation", tokenizer.pad_token_id)
    predictions = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = collate(
            [{"input_ids": e["prompt_ids"], "references": [], "index": e["index"]} for e in chunk]
        )
        for text in greedy_completions(model, tokenizer, batch, max_new_tokens):
            found = [(text.find(w), k) for k, w in enumerate(LABELS) if w in text]
            predictions.append(min(found)[1] if found else -1)
    return predictions


def measure(runs: dict, examples, repeats: int) -> dict[str, tuple[float, float, list[int]]]:
    """Per method: (examples per wall second, CPU seconds per example, predictions), best of ``repeats``.

    The methods take turns in every round, so that a busy machine slows them alike; CPU time (all threads of
    this process) is less sensitive to other processes than wall time.
    """
    for run in runs.values():
        run(examples[:2])  # warm-up
    best = {name: (0.0, float("inf"), []) for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            with torch.inference_mode():
                predictions = run(examples)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rate, cpu_per_example, _ = best[name]
            best[name] = (
                max(rate, len(examples) / wall),
                min(cpu_per_example, cpu / len(examples)),
                predictions,
            )
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="the tiny model only")
    parser.add_argument("--models", nargs="*", choices=("tiny-llama", "llama-112m"), help="default: both")
    parser.add_argument(
        "--single-token-only",
        action="store_true",
        help="only the single-token comparison; updates its fields in the JSON's rows",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    models = args.models or (["tiny-llama"] if args.quick else ["tiny-llama", "llama-112m"])

    tokenizer, examples = build_examples(args.examples)
    max_new_tokens = max(len(ids) for e in examples for ids in e["option_ids"])
    methods = {
        "shared_prompt": lambda m, ex: option_scoring(m, tokenizer, ex, args.batch_size, share_prompt=True),
        "row_per_option": lambda m, ex: option_scoring(m, tokenizer, ex, args.batch_size, share_prompt=False),
        "generate_then_parse": lambda m, ex: generate_then_parse(
            m, tokenizer, ex, args.batch_size, max_new_tokens
        ),
    }
    rows = []
    for name in models:
        model = load_model(name)
        row = {"model": name, "parameters": sum(p.numel() for p in model.parameters())}
        chosen = {} if args.single_token_only else methods
        results = measure(
            {k: (lambda ex, m=model, run=run: run(m, ex)) for k, run in chosen.items()},
            examples,
            args.repeats,
        )
        for method, (rate, cpu_per_example, _) in results.items():
            row[f"{method}_examples_per_s"] = round(rate, 2)
            row[f"{method}_cpu_s_per_example"] = round(cpu_per_example, 4)
            print(
                f"{name} {method}: {rate:.2f} examples/s, {cpu_per_example:.4f} CPU s/example",
                file=sys.stderr,
            )
        for method in ("shared_prompt", "row_per_option") if results else ():
            row[f"{method}_ratio"] = round(
                row[f"{method}_examples_per_s"] / row["generate_then_parse_examples_per_s"], 2
            )
            row[f"{method}_cpu_ratio"] = round(
                row["generate_then_parse_cpu_s_per_example"] / row[f"{method}_cpu_s_per_example"], 2
            )
        if results:
            row["scorers_agree"] = results["shared_prompt"][2] == results["row_per_option"][2]
        one_token = single_token(examples)
        load_before = os.getloadavg()[0]
        singles = measure(
            {
                "single_token_one_forward": lambda ex, m=model: one_token_scoring(
                    m, tokenizer, ex, args.batch_size, two_pass=False
                ),
                "single_token_two_pass": lambda ex, m=model: one_token_scoring(
                    m, tokenizer, ex, args.batch_size, two_pass=True
                ),
            },
            one_token,
            args.repeats,
        )
        for method, (rate, cpu_per_example, _) in singles.items():
            row[f"{method}_examples_per_s"] = round(rate, 2)
            row[f"{method}_cpu_s_per_example"] = round(cpu_per_example, 4)
            print(
                f"{name} {method}: {rate:.2f} examples/s, {cpu_per_example:.4f} CPU s/example",
                file=sys.stderr,
            )
        one, two = singles["single_token_one_forward"], singles["single_token_two_pass"]
        row["single_token_ratio"] = round(one[0] / two[0], 2)
        row["single_token_cpu_ratio"] = round(two[1] / one[1], 2)
        row["single_token_predictions_agree"] = one[2] == two[2]
        row["single_token_load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
        if results:
            parsed = results["generate_then_parse"][2]
            row["generate_then_parse_unparseable"] = sum(p == -1 for p in parsed) / len(parsed)
        rows.append(row)

    print(
        f"{'model':<11} {'params':>7} {'method':<20} {'examples/s':>10} {'ratio':>7} "
        f"{'CPU s/example':>13} {'CPU ratio':>9}"
    )
    for r in rows:
        for method in methods if "generate_then_parse_examples_per_s" in r else ():
            ratio = r.get(f"{method}_ratio", 1.0)
            cpu_ratio = r.get(f"{method}_cpu_ratio", 1.0)
            print(
                f"{r['model']:<11} {r['parameters'] / 1e6:>6.1f}M {method:<20} {r[f'{method}_examples_per_s']:>10.2f} "
                f"{ratio:>6.2f}x {r[f'{method}_cpu_s_per_example']:>13.4f} {cpu_ratio:>8.2f}x"
            )
        print(
            f"{r['model']}: single-token options, one forward vs the two-pass path: "
            f"{r['single_token_one_forward_examples_per_s']:.2f} vs {r['single_token_two_pass_examples_per_s']:.2f} "
            f"examples/s ({r['single_token_ratio']:.2f}x wall, {r['single_token_cpu_ratio']:.2f}x CPU); "
            f"same predictions: {r['single_token_predictions_agree']}"
        )
        if "scorers_agree" in r:
            print(
                f"{r['model']}: option scorers agree: {r['scorers_agree']}; generate-then-parse found no label "
                f"word in {r['generate_then_parse_unparseable']:.0%} of its completions"
            )
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_at_end": os.getloadavg()[0],
        "torch": torch.__version__,
        "device": "cpu",
        "dtype": "float32",
    }
    settings = {
        "examples": args.examples,
        "batch_size": args.batch_size,
        "options": len(LABELS),
        "mean_prompt_tokens": sum(len(e["prompt_ids"]) for e in examples) / len(examples),
        "max_new_tokens": max_new_tokens,
        "repeats": args.repeats,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine, "settings": settings, "results": rows}
    if args.single_token_only and RESULTS.exists():  # update those fields of the rows, keep the rest
        report = json.loads(RESULTS.read_text())
        for row in rows:
            row["single_token_machine"] = machine
            old = next((r for r in report["results"] if r["model"] == row["model"]), None)
            if old is None:
                report["results"].append(row)
            else:
                old.update(row)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
