"""Benchmark: TIES, DARE-TIES and their core-space variants on Llama-2-7B-shaped LoRA adapters.

    .venv/bin/python bench/bench_merge_ties.py              # ~25 min on 2 shared cores -> results/merge_ties.json
    .venv/bin/python bench/bench_merge_ties.py --skip-dense # without the previous dense path (~10 min less)
    .venv/bin/python bench/bench_merge_ties.py --skip-dense --parallel  # the variants' processes side by side
    .venv/bin/python bench/bench_merge_ties.py --only ties@all dare_ties@all --wait-load 1.5  # some, when idle
    git show 0050d2d:adamergex_pl/merging/ties.py > /tmp/ties_0050d2d.py  # an earlier ties.py, same inputs:
    .venv/bin/python bench/bench_merge_ties.py --only ties@all --ties-module /tmp/ties_0050d2d.py

Inputs are three random LoRA adapters (r=8, alpha=16) with Llama-2-7B's shapes on q, k, v, o, gate, up, down of
32 layers (224 modules), made in memory from fixed seeds as in ``bench_merge.py``; ``t = 0.5``,
``density = 0.2``. Every variant runs in its own subprocess with torch's default number of threads (the
machine's cores; ``--threads`` sets it): the inputs are made, then one merge is timed (wall and CPU seconds,
the 1-minute load average before and after) while a sampler records the RSS peak above the RSS before it
("extra MiB": the merge's own memory, the inputs excluded). ``--wait-load X`` waits (up to ``--wait-max``
seconds) before each variant until the load average is below ``X``; ``--only`` runs some variants and keeps
the others' results in the JSON; ``--ties-module FILE`` times ``ties_merge`` from another copy of ``ties.py``
(results keyed ``<variant> (<file name>)``; with ``--threads N``, ``(N threads)`` too).

* ``ties``, ``dare_ties`` (stored at rank 8), ``ties_core``, ``dare_ties_core`` on all 224 modules;
* on layer 0 only (7 modules): the same ``ties`` and the previous dense path (float64 ``ΔW``, PEFT's
  ``magnitude_based_pruning`` / ``calculate_majority_sign_mask`` / ``disjoint_merge``, a full
  ``torch.linalg.svd``), which is far too slow for 224 modules; the ratio of the two is measured on that layer;
* the relative storage error of ``ties`` and ``dare_ties`` on layer 0 at ranks 8-64 (what the paper config's
  ``svd_rank`` is chosen from), beside the best rank-k error of layer 0's q_proj merged ``ΔW`` (exact SVD).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from bench_merge import LAYERS, LORA_TARGETS, PeakRss, Stopwatch, machine, module_name, module_shape

RANK, ALPHA, SCALE, DENSITY, SVD_RANK = 8, 16, 0.5, 0.2, 8
SWEEP_RANKS = (8, 16, 32, 64)
RESULTS = Path(__file__).parent / "results" / "merge_ties.json"


def adapters(layers: int) -> list:
    """task_src, ref_src, ref_tgt: random LoRA r=8 factors of Llama-2-7B's shapes on ``layers`` layers."""
    from adamergex_pl.merging.adapters import AdapterWeights

    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": "meta-llama/Llama-2-7b-hf",
        "r": RANK,
        "lora_alpha": ALPHA,
        "target_modules": LORA_TARGETS,
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    made = []
    for seed in range(3):
        generator = torch.Generator().manual_seed(seed)
        tensors = {}
        for layer in range(layers):
            for name in LORA_TARGETS:
                out, inp = module_shape(name)
                tensors[module_name(layer, name)] = {
                    "lora_A": torch.randn(RANK, inp, generator=generator) / inp**0.5,
                    "lora_B": torch.randn(out, RANK, generator=generator) * 0.01,
                }
        made.append(AdapterWeights(dict(config), tensors))
    return made


def previous_dense_ties(task, src, tgt) -> dict[str, float]:
    """The path this replaces, module by module: float64 ΔW, PEFT's TIES functions, a full SVD at rank 8."""
    from peft.utils.merge_utils import calculate_majority_sign_mask, disjoint_merge, magnitude_based_pruning

    def delta(adapter, module):
        parts = adapter.tensors[module]
        return (ALPHA / RANK) * (parts["lora_B"].double() @ parts["lora_A"].double())

    errors = {}
    for module in task.tensors:
        vectors = [delta(task, module), SCALE * (delta(tgt, module) - delta(src, module))]
        stacked = torch.stack([magnitude_based_pruning(v, DENSITY) for v in vectors])
        merged = disjoint_merge(stacked, calculate_majority_sign_mask(stacked, method="total"))
        del stacked, vectors
        s = torch.linalg.svd(merged, full_matrices=False).S
        errors[module] = float(s[SVD_RANK:].square().sum().sqrt() / s.square().sum().sqrt())
    return errors


def run(variant: str, threads: int | None, ties_module: str | None) -> dict:
    if ties_module:
        import importlib.util

        spec = importlib.util.spec_from_file_location("bench_ties_module", ties_module)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        ties_merge = module.ties_merge
    else:
        from adamergex_pl.merging.ties import ties_merge

    if threads:
        torch.set_num_threads(threads)
    method, _, scope = variant.partition("@")
    task, src, tgt = adapters(1 if scope == "layer0" else LAYERS)
    if method == "previous_dense":
        operation = lambda: previous_dense_ties(task, src, tgt)  # noqa: E731
    else:
        rank = None if method.endswith("_core") else SVD_RANK
        operation = lambda: ties_merge(  # noqa: E731
            task, src, tgt, scale=SCALE, density=DENSITY, method=method, svd_rank=rank
        )
    load_before = os.getloadavg()[0]
    with PeakRss() as rss, Stopwatch() as watch:
        result = operation()
    record = {
        "wall_s": watch.wall,
        "cpu_s": watch.cpu,
        "extra_mib": rss.extra_mib,
        "modules": len(task.tensors),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
    }
    if method == "previous_dense":
        record["per_module_error"] = result
    else:
        record["relative_error"] = result.svd["relative_error"] if result.svd else 0.0
        record["per_module_error"] = result.svd["per_module"] if result.svd else None
        ranks = {parts["lora_A"].shape[0] for parts in result.adapter.tensors.values()}
        record["ranks"] = sorted(ranks)
    return record


def sweep() -> dict:
    """Storage errors of layer 0 at SWEEP_RANKS; for q_proj also the best rank-k errors, from the exact singular
    values (``svdvals``) of its merged ``ΔW``."""
    from adamergex_pl.merging.ties import Vector, _lora_terms, _Merger, ties_merge

    task, src, tgt = adapters(1)
    named = {"task_src": task, "ref_tgt": tgt, "ref_src": src}
    sampled = [module_name(0, "q_proj")]  # an exact svdvals of a 4096 x 4096 merged ΔW per method
    out: dict = {}
    for method in ("ties", "dare_ties"):
        rows = {}
        for rank in SWEEP_RANKS:
            with Stopwatch() as watch:
                result = ties_merge(
                    task, src, tgt, scale=SCALE, density=DENSITY, method=method, svd_rank=rank
                )
            rows[rank] = {
                "relative_error": result.svd["relative_error"],
                "sampled_modules_error": {m: result.svd["per_module"][m] for m in sampled},
                "cpu_s": watch.cpu,
            }
        merger = _Merger(DENSITY, method == "dare_ties", 0)
        for module in sampled:
            terms = _lora_terms(named, module, SCALE)
            vectors = [
                Vector(
                    factors=(
                        torch.cat([b for _, b, _ in part], 1).float(),
                        torch.cat([a for _, _, a in part]).float(),
                    )
                )
                for part in (
                    [t for t in terms if t[0] == "task_src"],
                    [t for t in terms if t[0] != "task_src"],
                )
            ]
            s = torch.linalg.svdvals(merger(*vectors, module)).double()
            for rank in SWEEP_RANKS:
                best = float(s[rank:].square().sum().sqrt() / s.square().sum().sqrt())
                rows[rank].setdefault("sampled_modules_best", {})[module] = best
        out[method] = rows
    return out


def wait_for_load(below: float, at_most: float) -> float:
    """Seconds waited (polling every 15 s, at most ``at_most``) for a 1-minute load average below ``below``."""
    start = time.perf_counter()
    while os.getloadavg()[0] >= below and time.perf_counter() - start < at_most:
        time.sleep(15)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--skip-dense", action="store_true", help="skip the previous dense path on layer 0")
    parser.add_argument(
        "--parallel",
        action="store_true",
        help="run the variants' processes at the same time (less wall time)",
    )
    parser.add_argument("--threads", type=int, help="torch threads per process (default: torch's, the cores)")
    parser.add_argument("--only", nargs="*", help="run these variants only (e.g. ties@all sweep)")
    parser.add_argument(
        "--wait-load", type=float, help="before each variant, wait for a load average below it"
    )
    parser.add_argument("--wait-max", type=float, default=600.0, help="seconds to wait at most (default 600)")
    parser.add_argument("--ties-module", help="time ties_merge from this copy of ties.py")
    args = parser.parse_args()
    if args.worker:
        record = sweep() if args.worker == "sweep" else run(args.worker, args.threads, args.ties_module)
        print(json.dumps(record))
        return 0
    variants = ["ties@layer0", *([] if args.skip_dense else ["previous_dense@layer0"])]
    variants += ["ties@all", "dare_ties@all", "ties_core@all", "dare_ties_core@all", "sweep"]
    variants = args.only or variants
    load_before = os.getloadavg()[0]
    results = json.loads(RESULTS.read_text())["results"] if args.only and RESULTS.exists() else {}
    env = dict(os.environ)
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    options = [*(["--threads", str(args.threads)] if args.threads else [])]
    options += ["--ties-module", args.ties_module] if args.ties_module else []
    labels = [Path(args.ties_module).name] if args.ties_module else []
    labels += [f"{args.threads} thread{'s' if args.threads > 1 else ''}"] if args.threads else []
    suffix = f" ({', '.join(labels)})" if labels else ""
    pending = list(variants)
    while pending:
        batch, pending = (pending, []) if args.parallel else (pending[:1], pending[1:])
        waited = wait_for_load(args.wait_load, args.wait_max) if args.wait_load else 0.0
        start = time.perf_counter()
        running = {
            v: subprocess.Popen(
                [sys.executable, __file__, "--worker", v, *options],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            for v in batch
        }
        for variant, process in running.items():
            stdout, stderr = process.communicate()
            if process.returncode != 0:
                print(stderr.decode()[-3000:], file=sys.stderr)
                raise SystemExit(f"worker {variant} failed")
            results[variant + suffix] = json.loads(stdout.decode().strip().splitlines()[-1])
            if waited >= 1 and variant != "sweep":
                results[variant + suffix]["waited_for_load_s"] = round(waited)
            print(f"{variant}{suffix}: done after {time.perf_counter() - start:.0f} s", flush=True)
    ratios = {}
    if "previous_dense@layer0" in results and "ties@layer0" in results:
        ours, previous = results["ties@layer0"], results["previous_dense@layer0"]
        ratios["previous_dense / ties, layer 0"] = {
            "wall": previous["wall_s"] / ours["wall_s"],
            "cpu": previous["cpu_s"] / ours["cpu_s"],
            "extra_memory": previous["extra_mib"] / max(ours["extra_mib"], 1.0),
        }
        best, randomized = previous["per_module_error"], ours["per_module_error"]
        ratios["storage error, randomized / exact SVD, layer 0 (max over modules)"] = max(
            randomized[m] / best[m] for m in best
        )
    report = {
        "machine": {**machine(), "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}},
        "lora": {"r": RANK, "alpha": ALPHA, "targets": LORA_TARGETS, "layers": LAYERS},
        "scale": SCALE,
        "density": DENSITY,
        "svd_rank": SVD_RANK,
        "torch_threads": args.threads or "default (per result: torch_threads)",
        "results": results,
        "ratios": ratios,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'variant':<40} {'modules':>7} {'wall s':>8} {'CPU s':>8} {'extra MiB':>9} {'error':>7} load")
    for name, r in results.items():
        if name == "sweep":
            continue
        error = r.get("relative_error", "")
        error = f"{error:.3f}" if error != "" else ""
        load = r.get("load_average_1min")
        load = f"{load['before']:.1f}/{load['after']:.1f}" if load else ""
        print(
            f"{name:<40} {r['modules']:>7} {r['wall_s']:>8.1f} {r['cpu_s']:>8.1f} {r['extra_mib']:>9.0f} {error:>7}"
            f" {load}"
        )
    for pair, value in ratios.items():
        print(f"  {pair}: {json.dumps(value)}")
    print("storage error on layer 0 at rank k:")
    for method, rows in results.get("sweep", {}).items():
        if not isinstance(rows, dict):
            continue
        print(f"  {method}: " + ", ".join(f"{k}: {v['relative_error']:.3f}" for k, v in rows.items()))
        for module in next(iter(rows.values()))["sampled_modules_best"]:
            cells = ", ".join(
                f"{k}: {v['sampled_modules_error'][module]:.3f}/{v['sampled_modules_best'][module]:.3f}"
                for k, v in rows.items()
            )
            print(f"    {module} (randomized/best): {cells}")
    load = report["machine"]["load_average_1min"]
    print(
        f"  load average (1 min) before/after: {load['before']:.1f}/{load['after']:.1f} ({os.cpu_count()} cores)"
    )
    print(f"written {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
