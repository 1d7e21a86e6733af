"""Benchmark: merging Llama-2-7B-shaped adapters, adamergex_pl.merging against PEFT's add_weighted_adapter.

    .venv/bin/python bench/bench_merge.py    # ~6 min on 2 cores: prints a table, writes results/merge.json

Inputs are random adapters with Llama-2-7B's shapes (32 layers, hidden 4096, intermediate 11008, vocabulary
32000), written as standard PEFT adapter directories:

* LoRA r=8, alpha=16 on q, k, v, o, gate, up, down (224 modules, 20.0 M parameters per adapter);
* (IA)³ on k, v, down (down as feedforward; 96 modules, 0.6 M parameters per adapter).

Each variant runs in a fresh subprocess (so peak memory is its own): the three inputs are loaded first, then
the merge ``A(T,src) + t·(A(R,tgt) − A(R,src))`` (``t = 0.5``) is timed alone (median of 5 runs). Memory
is the process RSS sampled every 2 ms during a first, untimed run (``extra``: peak minus the RSS just before
it), and the process peak (``ru_maxrss``), which includes Python, torch and the inputs.

PEFT needs a model: a ``LlamaForCausalLM`` of the 7B shape is built on the ``meta`` device and every base
weight is replaced by a zero-stride view of one scalar (full shape, no memory), which PEFT's merge never
reads.

Every variant runs with one torch thread by default (``--threads``): the machine is shared, and with two
intra-op threads on two busy cores the many small per-module operations of a merge (ours and PEFT's) were
measured 5-20x slower than with one, dominated by thread synchronisation rather than work. CPU seconds
are reported beside wall seconds for the same reason.

PEFT's ``svd`` forms each dense ``ΔW`` and runs a full SVD of it (``full_matrices=True``, its
default), one to several minutes per module on this machine, so it is measured on two modules (layer 0's
q_proj, 4096×4096, and gate_proj, 11008×4096, on a one-layer model) and extrapolated linearly to the 224
modules, down_proj (4096×11008) counted at gate_proj's cost. That makes the estimate conservative: a run
that also measured down_proj found its SVD 1.4x slower than gate_proj's. The figure is marked as an
estimate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

LAYERS, HIDDEN, INTERMEDIATE, VOCAB = 32, 4096, 11008, 32000
RANK, ALPHA, SCALE, SVD_RANK = 8, 16, 0.5, 8
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
IA3_TARGETS, IA3_FEEDFORWARD = ["k_proj", "v_proj", "down_proj"], ["down_proj"]
SVD_SAMPLE = ["q_proj", "gate_proj"]  # ΔW of 4096×4096 and 11008×4096 (down_proj: the transpose)
ROLES = ("task_src", "ref_src", "ref_tgt")
RESULTS = Path(__file__).parent / "results" / "merge.json"
REPEATS = 5


def module_shape(name: str) -> tuple[int, int]:
    """(out, in) of a Llama-2-7B projection."""
    if name in ("gate_proj", "up_proj"):
        return INTERMEDIATE, HIDDEN
    if name == "down_proj":
        return HIDDEN, INTERMEDIATE
    return HIDDEN, HIDDEN


def module_name(layer: int, name: str) -> str:
    block = "mlp" if name in ("gate_proj", "up_proj", "down_proj") else "self_attn"
    return f"model.layers.{layer}.{block}.{name}"


# ---------------------------------------------------------------------------------------------- inputs


def write_inputs(root: Path) -> dict[str, dict[str, str]]:
    """Random LoRA and (IA)³ adapters (three of each), plus the one-layer subsets for PEFT's svd."""
    from peft import IA3Config, LoraConfig

    from adamergex_pl.merging.adapters import AdapterWeights

    lora_config = _config_dict(
        LoraConfig(
            r=RANK, lora_alpha=ALPHA, lora_dropout=0.05, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"
        )
    )
    ia3_config = _config_dict(
        IA3Config(target_modules=IA3_TARGETS, feedforward_modules=IA3_FEEDFORWARD, task_type="CAUSAL_LM")
    )
    subset_config = {**lora_config, "target_modules": SVD_SAMPLE}
    paths: dict[str, dict[str, str]] = {"lora": {}, "ia3": {}, "lora_subset": {}}
    for index, role in enumerate(ROLES):
        generator = torch.Generator().manual_seed(index)
        lora = {}
        for layer in range(LAYERS):
            for name in LORA_TARGETS:
                out, inp = module_shape(name)
                lora[module_name(layer, name)] = {
                    "lora_A": torch.randn(RANK, inp, generator=generator) / inp**0.5,
                    "lora_B": torch.randn(out, RANK, generator=generator) * 0.01,
                }
        ia3 = {}
        for layer in range(LAYERS):
            for name in IA3_TARGETS:
                out, inp = module_shape(name)
                shape = (1, inp) if name in IA3_FEEDFORWARD else (out, 1)
                ia3[module_name(layer, name)] = {"ia3_l": 0.8 + 0.4 * torch.rand(shape, generator=generator)}
        subset = {module_name(0, n): lora[module_name(0, n)] for n in SVD_SAMPLE}
        for kind, config, tensors in (
            ("lora", lora_config, lora),
            ("ia3", ia3_config, ia3),
            ("lora_subset", subset_config, subset),
        ):
            directory = root / kind / role
            directory.mkdir(parents=True)
            AdapterWeights(config, tensors).save(directory)
            paths[kind][role] = str(directory)
    return paths


def _config_dict(config) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        config.base_model_name_or_path = "meta-llama/Llama-2-7b-hf"
        config.save_pretrained(tmp)
        return json.loads((Path(tmp) / "adapter_config.json").read_text())


# ---------------------------------------------------------------------------------------------- measuring


class PeakRss:
    """Peak resident set size of this process while the ``with`` block runs (sampled every 2 ms)."""

    def __enter__(self):
        import psutil

        self._process = psutil.Process()
        self.before = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def extra_mib(self) -> float:
        return (self.peak - self.before) / 2**20


class Stopwatch:
    """Wall and CPU seconds (all threads of this process) of the ``with`` block.

    CPU time is reported beside wall time because the machine is shared: other work slows the wall clock
    more than it changes the CPU time a merge needs.
    """

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu


def timed(operation, repeats: int) -> dict:
    """The extra RSS of a first (cold) run, then wall and CPU times of ``repeats`` more runs.

    Memory is measured first, before the allocator holds freed blocks from earlier runs, and apart from the
    timed runs: the sampler thread competes for the GIL and the two cores.
    """
    with PeakRss() as rss:
        result = operation()
    del result
    record = {"times_s": [], "cpu_s": [], "extra_mib": rss.extra_mib}
    for _ in range(repeats):
        with Stopwatch() as watch:
            result = operation()
        del result
        record["times_s"].append(watch.wall)
        record["cpu_s"].append(watch.cpu)
    return record


def process_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------- workers


def worker_ours(variant: str, paths: dict) -> dict:
    from adamergex_pl.merging.adapters import AdapterWeights
    from adamergex_pl.merging.merge import merge_adapters

    kind = "ia3" if variant == "ia3-paper" else "lora"
    task, src, tgt = (AdapterWeights.load(paths[kind][role]) for role in ROLES)
    options = {
        "exact": dict(lora_mode="exact"),
        "factor": dict(lora_mode="factor"),
        "svd": dict(lora_mode="svd", svd_rank=SVD_RANK),
        "ia3-paper": dict(ia3_mode="paper"),
    }[variant]
    record = timed(lambda: merge_adapters(task, src, tgt, scale=SCALE, **options), REPEATS)
    result = merge_adapters(task, src, tgt, scale=SCALE, **options)
    record["modules"] = len(result.adapter.tensors)
    if result.svd:
        record["svd_relative_error"] = result.svd["relative_error"]
    return record


def worker_ours_cli(paths: dict) -> dict:
    from adamergex_pl.merging.command import main

    argv = [f"--{r.replace('_', '-')}={paths['lora'][r]}" for r in ROLES]
    with tempfile.TemporaryDirectory() as tmp:
        runs = iter(range(REPEATS + 1))

        def run() -> None:
            with open(os.devnull, "w") as sink:
                stdout, sys.stdout = sys.stdout, sink
                try:
                    code = main([*argv, f"--out={tmp}/out{next(runs)}", f"--scale={SCALE}"])
                finally:
                    sys.stdout = stdout
            if code != 0:
                raise RuntimeError("adamergex merge failed")

        return timed(run, REPEATS)


def _meta_llama(layers: int):
    """A Llama-2-7B-shaped model whose weights are zero-stride views of one scalar (no memory)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=VOCAB,
    )
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None:
                module._parameters[name] = torch.nn.Parameter(
                    torch.zeros((), dtype=torch.float32).expand(param.shape), requires_grad=False
                )
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.is_meta:
                module._buffers[name] = torch.zeros(buffer.shape, dtype=buffer.dtype)
    return model


def _peft_model(paths: dict[str, str], layers: int):
    from peft import PeftModel

    model = PeftModel.from_pretrained(_meta_llama(layers), paths["task_src"], adapter_name="task_src")
    for role in ("ref_tgt", "ref_src"):
        model.load_adapter(paths[role], adapter_name=role)
    return model


def worker_peft_cat(paths: dict) -> dict:
    from peft.tuners.lora import LoraLayer

    from adamergex_pl.merging.merge import merge_adapters

    start = time.perf_counter()
    model = _peft_model(paths["lora"], LAYERS)
    load_s = time.perf_counter() - start
    names = iter(f"merged{i}" for i in range(REPEATS + 1))

    def run() -> str:
        name = next(names)
        model.add_weighted_adapter(
            ["task_src", "ref_tgt", "ref_src"], [1.0, SCALE, -SCALE], name, combination_type="cat"
        )
        return name

    with PeakRss() as rss:
        name = run()
    record = {"times_s": [], "cpu_s": [], "extra_mib": rss.extra_mib, "load_s": load_s}
    for _ in range(REPEATS):
        model.delete_adapter(name)
        with Stopwatch() as watch:
            name = run()
        record["times_s"].append(watch.wall)
        record["cpu_s"].append(watch.cpu)
    # the two agree: compare one module's ΔW
    ours = merge_adapters(*(paths["lora"][r] for r in ROLES), scale=SCALE).adapter
    module = module_name(0, "q_proj")
    layer = model.base_model.model.get_submodule(module)
    if not isinstance(layer, LoraLayer):
        raise RuntimeError(f"{module} is not a LoRA layer")
    theirs = layer.get_delta_weight(name).double()
    mine = ours.tensors[module]["lora_B"].double() @ ours.tensors[module]["lora_A"].double()
    record["relative_difference_to_ours"] = float((theirs - mine).norm() / mine.norm())
    return record


def worker_peft_svd(paths: dict) -> dict:
    """PEFT's svd on one module per distinct shape; per-module SVD times are recorded for extrapolation."""
    model = _peft_model(paths["lora_subset"], 1)
    per_shape: dict[str, Stopwatch] = {}
    original = torch.linalg.svd

    def timed_svd(matrix, *args, **kwargs):
        with Stopwatch() as watch:
            out = original(matrix, *args, **kwargs)
        per_shape["x".join(map(str, matrix.shape))] = watch
        return out

    torch.linalg.svd = timed_svd
    try:
        with PeakRss() as rss, Stopwatch() as total:
            model.add_weighted_adapter(
                ["task_src", "ref_tgt", "ref_src"],
                [1.0, SCALE, -SCALE],
                "merged",
                combination_type="svd",
                svd_rank=SVD_RANK,
            )
    finally:
        torch.linalg.svd = original

    def size(shape: str) -> str:  # a shape and its transpose count alike
        return "x".join(sorted(shape.split("x"), key=int))

    def estimate(kind: str) -> float:
        """Σ over the 224 modules of the SVD time of its size plus the mean non-SVD time per module."""
        svd = {size(shape): getattr(watch, kind) for shape, watch in per_shape.items()}
        rest = (getattr(total, kind) - sum(svd.values())) / len(SVD_SAMPLE)
        return LAYERS * sum(svd[size("x".join(map(str, module_shape(n))))] + rest for n in LORA_TARGETS)

    return {
        "times_s": [total.wall],
        "cpu_s": [total.cpu],
        "extra_mib": rss.extra_mib,
        "measured_modules": len(SVD_SAMPLE),
        "svd_s_per_shape": {shape: watch.wall for shape, watch in per_shape.items()},
        "svd_cpu_s_per_shape": {shape: watch.cpu for shape, watch in per_shape.items()},
        "estimated_s_for_224_modules": estimate("wall"),
        "estimated_cpu_s_for_224_modules": estimate("cpu"),
    }


def run_worker(name: str, paths: dict) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    if name.startswith("ours-cli"):
        record = worker_ours_cli(paths)
    elif name.startswith("ours-"):
        record = worker_ours(name.removeprefix("ours-"), paths)
    elif name == "peft-cat":
        record = worker_peft_cat(paths)
    elif name == "peft-svd":
        record = worker_peft_svd(paths)
    else:
        raise ValueError(f"unknown worker {name!r}")
    record["process_peak_mib"] = process_peak_mib()
    return record


# ---------------------------------------------------------------------------------------------- driver

VARIANTS = [
    ("ours-exact", "ours, LoRA exact (rank 24)"),
    ("ours-factor", "ours, LoRA factor (rank 8)"),
    ("ours-svd", f"ours, LoRA svd (rank {SVD_RANK})"),
    ("ours-ia3-paper", "ours, (IA)³ paper"),
    ("ours-cli", "ours, adamergex merge (load+merge+write)"),
    ("peft-cat", "PEFT add_weighted_adapter cat"),
    ("peft-svd", f"PEFT add_weighted_adapter svd (rank {SVD_RANK})"),
]


def machine() -> dict:
    import peft

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    memory = next((int(line.split()[1]) for line in meminfo if line.startswith("MemTotal")), 0)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "default_torch_threads": torch.get_num_threads(),
        "memory_gib": round(memory / 2**20, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "peft": peft.__version__,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="*", help="run these variants only (names from the table)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads in every variant (default 1, see above)",
    )
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_worker(args.worker, json.loads(args.paths))))
        return 0

    results: dict[str, dict] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp:
        start = time.perf_counter()
        paths = write_inputs(Path(tmp))
        print(f"inputs written in {time.perf_counter() - start:.1f} s", flush=True)
        for name, label in VARIANTS:
            if args.only and name not in args.only:
                continue
            command = [sys.executable, __file__, "--worker", name, "--paths", json.dumps(paths)]
            threads = str(args.threads)
            env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
            done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"worker {name} failed")
            results[name] = {"label": label, **json.loads(done.stdout.strip().splitlines()[-1])}
            print(f"{label}: {statistics.median(results[name]['times_s']):.2f} s", flush=True)

    def median(name: str, kind: str = "times_s") -> float:
        if name == "peft-svd":  # measured on 3 modules; the 224-module figure is an estimate
            key = "estimated_s_for_224_modules" if kind == "times_s" else "estimated_cpu_s_for_224_modules"
            return results[name][key]
        return statistics.median(results[name][kind])

    ratios = {}
    for theirs, ours in (("peft-cat", "ours-exact"), ("peft-svd", "ours-svd")):
        if {theirs, ours} <= results.keys():
            ratios[f"{theirs} / {ours}"] = {
                "wall": median(theirs) / median(ours),
                "cpu": median(theirs, "cpu_s") / median(ours, "cpu_s"),
                "extra_memory": results[theirs]["extra_mib"] / max(results[ours]["extra_mib"], 1.0),
                "process_peak": results[theirs]["process_peak_mib"] / results[ours]["process_peak_mib"],
            }
    report = {
        "machine": {**machine(), "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]}},
        "shape": {"layers": LAYERS, "hidden": HIDDEN, "intermediate": INTERMEDIATE, "vocab": VOCAB},
        "lora": {"r": RANK, "alpha": ALPHA, "targets": LORA_TARGETS, "modules": LAYERS * len(LORA_TARGETS)},
        "ia3": {"targets": IA3_TARGETS, "feedforward": IA3_FEEDFORWARD, "modules": LAYERS * len(IA3_TARGETS)},
        "scale": SCALE,
        "repeats": REPEATS,
        "torch_threads": args.threads,
        "results": results,
        "ratios": ratios,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")

    print(f"\n{'variant':<46} {'wall s':>9} {'CPU s':>9} {'extra MiB':>10} {'peak MiB':>9}")
    for name, record in results.items():
        mark = "~" if name == "peft-svd" else ""
        wall, cpu = f"{mark}{median(name):.2f}", f"{mark}{median(name, 'cpu_s'):.2f}"
        extra, peak = record["extra_mib"], record["process_peak_mib"]
        print(f"{record['label']:<46} {wall:>9} {cpu:>9} {extra:>10.0f} {peak:>9.0f}")
    if "peft-svd" in results:
        r = results["peft-svd"]
        print(
            f"  ~ PEFT svd: estimated from {r['times_s'][0]:.0f} s wall for {r['measured_modules']} modules;"
        )
        print(f"    torch.linalg.svd wall s per ΔW shape: {json.dumps(r['svd_s_per_shape'])}")
    if "peft-cat" in results:
        difference = results["peft-cat"]["relative_difference_to_ours"]
        print(f"  PEFT cat vs ours exact, relative ΔW difference on layer 0 q_proj: {difference:.1e}")
    for pair, values in ratios.items():
        print(f"  {pair}: " + ", ".join(f"{key} {value:.2f}x" for key, value in values.items()))
    load = report["machine"]["load_average_1min"]
    cores = os.cpu_count()
    print(f"  load average (1 min) before/after: {load['before']:.1f}/{load['after']:.1f} ({cores} cores)")
    print(f"written {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
