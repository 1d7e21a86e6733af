"""Reference-corpus preparation: does keeping ``max_windows`` windows cost the same on a 10x larger corpus?

    .venv/bin/python bench/bench_reference_data.py            # ~3 min on 2 CPU cores
    .venv/bin/python bench/bench_reference_data.py --quick    # smaller corpora, ~45 s

``ReferenceLMDataModule`` (the AdaMergeX reference task) builds its training windows from a Wikipedia-shaped
corpus (id, url, title, text; articles of 1-6 KB) written twice, ``--articles`` articles and ten times as many,
in two layouts:

* ``parquet file``: one local Parquet file in row groups of 100 articles;
* ``hub folder``: a folder laid out as the hub's ``wikimedia/wikipedia`` (dataset card, configuration
  ``20231101.es``, ``train-0000k-of-0000n.parquet`` files of 1,000 articles), read through ``datasets``'
  streaming as a hub id would be (``ADAMERGEX_DATASET_MIRROR``).

For each, the data preparation (``build_examples``, tokenizer already loaded) keeps ``max_windows=20`` windows
of 512 tokens with ``val_fraction=0.02`` (the recipe's), and, as the baseline, ``max_windows: null`` reads
and tokenizes the whole corpus (what every ``max_windows`` cost before preparation was lazy). Reported: rows
read from the files, documents tokenized, and seconds (best of ``--repeats``, the corpora interleaved).
Tokenizer: ``builtin:tiny-llama`` (byte-level, so a token is a byte: more tokens per article than Llama's).

Prints a table and writes ``bench/results/reference_data.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = ("el", "la", "de", "que", "y", "en", "un", "una", "ciudad", "río", "historia", "año", "siglo", "fue")


def articles(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        length = rng.randint(150, 900)  # words: 1-6 KB of text
        text = " ".join(rng.choice(WORDS) for _ in range(length))
        rows.append(
            {"id": str(i), "url": f"https://es.wikipedia.org/wiki?curid={i}", "title": f"A{i}", "text": text}
        )
    return rows


def write_corpora(root: Path, count: int) -> dict[str, dict[str, Path]]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    corpora = {}
    for label, n in (("1x", count), ("10x", 10 * count)):
        rows = articles(n)
        table = pa.Table.from_pylist(rows)
        file = root / f"wiki_{label}.parquet"
        pq.write_table(table, file, row_group_size=100)
        mirror = root / f"mirror_{label}"
        repo = mirror / "wikimedia" / "wikipedia"
        config = "20231101.es"
        shards = max(1, -(-n // 1000))
        for k in range(shards):
            part = repo / config / f"train-{k:05d}-of-{shards:05d}.parquet"
            part.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table.slice(k * 1000, 1000), part, row_group_size=100)
        card = {
            "configs": [
                {"config_name": config, "data_files": [{"split": "train", "path": f"{config}/train-*"}]}
            ]
        }
        (repo / "README.md").write_text("---\n" + yaml.safe_dump(card) + "---\n", encoding="utf-8")
        corpora[label] = {"parquet file": file, "hub folder": mirror}
    return corpora


def prepare(layout: str, location: Path, max_windows: int | None, tokenizer) -> dict:
    from data_modules import DataSource, ReferenceLMDataModule

    if layout == "hub folder":
        os.environ["ADAMERGEX_DATASET_MIRROR"] = str(location)
        source = DataSource("wikimedia/wikipedia", name="20231101.es", split="train")
    else:
        source = DataSource(str(location))
    module = ReferenceLMDataModule(
        train=source,
        window_tokens=512,
        max_windows=max_windows,
        val_fraction=0.02,
        tokenizer="builtin:tiny-llama",
        seed=42,
    )
    module.tokenizer = tokenizer
    start = time.perf_counter()
    train, val, _ = module.build_examples()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "rows_read": module.read_counter.rows,
        "documents_tokenized": module.documents_tokenized,
        "train_windows": len(train),
        "val_windows": sum(len(v) for v in val.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--articles", type=int, default=3000, help="articles in the small corpus")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="--articles 500 --repeats 2")
    args = parser.parse_args()
    if args.quick:
        args.articles, args.repeats = 500, 2

    from adamergex_pl.training.base_model import load_tokenizer

    tokenizer = load_tokenizer("builtin:tiny-llama")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-reference-") as tmp:
        corpora = write_corpora(Path(tmp), args.articles)
        for layout in ("parquet file", "hub folder"):
            for max_windows in (20, None):
                best: dict[str, dict] = {}
                for _ in range(args.repeats):
                    for label in ("1x", "10x"):  # interleaved: load drifts on a shared machine
                        run = prepare(layout, corpora[label][layout], max_windows, tokenizer)
                        if label not in best or run["seconds"] < best[label]["seconds"]:
                            best[label] = run
                results.append({"layout": layout, "max_windows": max_windows, **best})

    print(
        f"small corpus {args.articles} articles, large {10 * args.articles}; 512-token windows; best of {args.repeats}"
    )
    print(
        "| layout | max_windows | rows read 1x / 10x | docs tokenized 1x / 10x | seconds 1x / 10x | **10x / 1x** |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for row in results:
        small, large = row["1x"], row["10x"]
        print(
            f"| {row['layout']} | {row['max_windows']} | {small['rows_read']:,} / {large['rows_read']:,} | "
            f"{small['documents_tokenized']:,} / {large['documents_tokenized']:,} | "
            f"{small['seconds']:.3f} / {large['seconds']:.3f} | **{large['seconds'] / small['seconds']:.2f}x** |"
        )
    meta = {
        "articles_small": args.articles,
        "repeats": args.repeats,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }
    (HERE / "results").mkdir(exist_ok=True)
    out = HERE / "results" / "reference_data.json"
    out.write_text(json.dumps({"meta": meta, "rows": results}, indent=2) + "\n")
    print(f"wrote {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
