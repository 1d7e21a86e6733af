"""lm-evaluation-harness on the single-token items of ``bench_option_scoring.py``, in a separate environment.

    .venv/bin/python bench/lm_eval_single_token.py --export /tmp/lmcmp      # items, both models, our predictions
    uv venv /tmp/lmeval && uv pip install --python /tmp/lmeval/bin/python --find-links /opt/wheels \\
        "torch==2.13.0+cpu" "lm-eval[hf]" transformers==5.23.0                # lm-eval, apart from the project
    /tmp/lmeval/bin/python bench/lm_eval_single_token.py --run /tmp/lmcmp  # times lm-eval on the same token ids

``--export`` (the project's environment) writes the 12 XNLI items with each option cut to its last token, as
``bench_option_scoring.py`` builds them (token ids), the tiny and the 112 M models (saved with the same seed),
the tokenizer, and the one-forward path's predictions. ``--run`` (lm-eval's environment; imports nothing of
this project) scores the same token ids with ``HFLM._loglikelihood_tokens``, the core of lm-eval's
``loglikelihood`` (one row per context for one-token continuations), batch 4, best of 2 after a warm-up, with
torch's default threads, and prints examples per second, CPU seconds per example and whether the predictions
agree; ``bench/README.md`` puts them beside ``bench_option_scoring.py --single-token-only``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

MODELS = ("tiny-llama", "llama-112m")


def export(folder: Path) -> None:
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    import bench_option_scoring as bench

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer, examples = bench.build_examples(12)
    items = bench.single_token(examples)
    ids = [{"prompt_ids": list(map(int, e["prompt_ids"])), "option_ids": e["option_ids"]} for e in items]
    (folder / "items.json").write_text(json.dumps(ids))
    tokenizer.save_pretrained(folder / "tokenizer")
    predictions = {}
    for name in MODELS:
        model = bench.load_model(name)
        model.save_pretrained(folder / name)
        with torch.inference_mode():
            predictions[name] = bench.one_token_scoring(model, tokenizer, items, 4, two_pass=False)
    (folder / "ours.json").write_text(json.dumps(predictions))


def run(folder: Path) -> None:
    import torch
    from lm_eval.models.huggingface import HFLM

    items = json.loads((folder / "items.json").read_text())
    ours = json.loads((folder / "ours.json").read_text())
    report = {}
    for name in MODELS:
        lm = HFLM(
            pretrained=str(folder / name), tokenizer=str(folder / "tokenizer"), batch_size=4, device="cpu"
        )
        lm.model.config._attn_implementation = "sdpa"
        requests = [
            ((None, None), item["prompt_ids"], option) for item in items for option in item["option_ids"]
        ]
        lm._loglikelihood_tokens(requests[:6], disable_tqdm=True)  # warm-up
        rate, cpu_per_example = 0.0, float("inf")
        for _ in range(2):
            wall, cpu = time.perf_counter(), time.process_time()
            with torch.inference_mode():
                scores = lm._loglikelihood_tokens(requests, disable_tqdm=True)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rate, cpu_per_example = max(rate, len(items) / wall), min(cpu_per_example, cpu / len(items))
        predictions = [max(range(3), key=lambda k, i=i: scores[3 * i + k][0]) for i in range(len(items))]
        report[name] = {
            "examples_per_s": round(rate, 2),
            "cpu_s_per_example": round(cpu_per_example, 4),
            "same_predictions": predictions == ours[name],
            "torch_threads": torch.get_num_threads(),
            "load_average_1min": round(os.getloadavg()[0], 2),
        }
        print(name, report[name], flush=True)
    (folder / "lm_eval.json").write_text(json.dumps(report, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--export", type=Path, help="write the items, models and our predictions here")
    mode.add_argument("--run", type=Path, help="time lm-eval on what --export wrote here")
    args = parser.parse_args()
    export(args.export) if args.export else run(args.run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
