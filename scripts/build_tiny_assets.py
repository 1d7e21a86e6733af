"""Write the small datasets shipped in ``adamergex_pl/assets/tiny/`` (run from the repository root).

    python scripts/build_tiny_assets.py [--shared ../shared]

* ``add_{en,es}.jsonl``: a synthetic bilingual task, adding two numbers written as words ("two plus three
  =" -> " five" / "dos más tres =" -> " cinco"); every pair with a sum of at most ten, in both languages.
* ``wiki_{en,es}.jsonl``: the first records of the AdaMergeX authors' English and Spanish Wikipedia windows
  (``anchor_data/adamergex/dataset_demo``; Wikipedia text, CC BY-SA 4.0), ``{"prompt", "completion"}`` records
  that continue each other.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NUMBERS = {
    "en": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"],
    "es": ["cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve", "diez"],
}
PROMPTS = {"en": "Add: {a} plus {b} =", "es": "Suma: {a} más {b} ="}
WIKI_FILES = {
    "en": "English_Wiki_20k_LM_511_1_test.json",
    "es": "Spanish_Wiki_10k_LM_1_511_test.json",
}
OUT = Path("adamergex_pl/assets/tiny")


def addition_records(lang: str) -> list[dict]:
    words = NUMBERS[lang]
    return [
        {
            "prompt": PROMPTS[lang].format(a=words[a], b=words[b]),
            "completion": " " + words[a + b],
            "a": a,
            "b": b,
        }
        for a in range(11)
        for b in range(11)
        if a + b <= 10
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default="../shared", help="the shared folder holding anchor_data/")
    parser.add_argument("--wiki-records", type=int, default=40, help="Wikipedia records per language")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for lang in NUMBERS:
        lines = [json.dumps(r, ensure_ascii=False) for r in addition_records(lang)]
        (OUT / f"add_{lang}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        source = Path(args.shared) / "anchor_data" / "adamergex" / "dataset_demo" / WIKI_FILES[lang]
        records = json.loads(source.read_text(encoding="utf-8"))[: args.wiki_records]
        lines = [
            json.dumps({"prompt": r["prompt"], "completion": r["completion"]}, ensure_ascii=False)
            for r in records
        ]
        (OUT / f"wiki_{lang}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {sorted(p.name for p in OUT.iterdir())}")


if __name__ == "__main__":
    main()
