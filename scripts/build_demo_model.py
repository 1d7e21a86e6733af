"""Build ``builtin:demo-bilingual``, the small English-Spanish Llama that the embedded demo runs on.

    .venv/bin/python scripts/build_demo_model.py [--shared ../shared] [--steps 1500]

What it does, deterministically for a seed:

1. trains a byte-level BPE tokenizer (2,048 tokens) on English and Spanish Wikipedia text (the AdaMergeX
   authors' demo windows in ``anchor_data/adamergex/dataset_demo``, CC BY-SA 4.0) and on number words;
2. pretrains a 4-layer Llama (hidden 128, ~1.3M parameters) from scratch as a causal LM on that text, mixed
   50/50 by language, plus short counting sentences in both languages ("one, two, three" / "uno, dos, tres")
   so that the base model knows the number words of both languages; the demo task itself (adding numbers
   written as words) is never shown to it;
3. writes the weights in bfloat16 (a few MB), the tokenizer and a model card to
   ``adamergex_pl/assets/demo-bilingual/``, and to ``adamergex_pl/assets/demo/`` the held-out Wikipedia
   windows that the demo's reference adapters train on and the demo task in both languages: the number that
   comes next, before, or two after a number, in words ("Next: three =" -> " four", "Siguiente: tres =" ->
   " cuatro"), all relations (``count_<lang>.jsonl``), "two after" alone (``count_two_after_<lang>.jsonl``,
   the embedded default's task) and the others (``count_sibling_<lang>.jsonl``, its sibling reference task).

``--data-only`` rewrites the data and trains nothing.

It takes about 15 minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch

ASSETS = Path(__file__).resolve().parents[1] / "adamergex_pl" / "assets"
WIKI_FILES = {"en": "English_Wiki_20k_LM_511_1_test.json", "es": "Spanish_Wiki_10k_LM_1_511_test.json"}
NUMBER_WORDS = {
    "en": [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
    ],
    "es": [
        "cero",
        "uno",
        "dos",
        "tres",
        "cuatro",
        "cinco",
        "seis",
        "siete",
        "ocho",
        "nueve",
        "diez",
        "once",
        "doce",
        "trece",
        "catorce",
        "quince",
        "dieciséis",
        "diecisiete",
        "dieciocho",
        "diecinueve",
        "veinte",
    ],
}
# The demo task: the number that comes next / before / two after, asked and answered in words.
TASK_PROMPTS = {
    "en": {"next": "Next: {x} =", "previous": "Before: {x} =", "two_after": "Two after: {x} ="},
    "es": {"next": "Siguiente: {x} =", "previous": "Anterior: {x} =", "two_after": "Dos después: {x} ="},
}
TASK_OFFSETS = {"next": 1, "previous": -1, "two_after": 2}
# the demo's task files: every relation (the ``count`` task spec), the task of the embedded default ("two after"),
# and its positive-control reference task (the other relations: the same language gap, none of the task's items)
RELATION_FILES = {"count": None, "count_two_after": ("two_after",), "count_sibling": ("next", "previous")}
HELD_OUT_RECORDS = 120  # per language, kept out of pretraining for the demo's reference adapters
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def wiki_texts(shared: Path, lang: str) -> list[str]:
    """The demo windows of one language, each record joined back into its text."""
    records = json.loads((shared / "anchor_data/adamergex/dataset_demo" / WIKI_FILES[lang]).read_text())
    return [f"{r['prompt']} {r['completion']}" for r in records]


def counting_sentences(lang: str, rng: random.Random, n: int) -> list[str]:
    words = NUMBER_WORDS[lang]
    out = []
    for _ in range(n):
        start = rng.randrange(0, len(words) - 3)
        stop = rng.randrange(start + 3, len(words) + 1)
        out.append(", ".join(words[start:stop]) + ".")
    return out


def task_records(lang: str) -> list[dict]:
    """Every item of the demo task in one language, in the layout of the ``count`` task.

    Fields: ``item`` (shared by the parallel items of all languages), ``question`` ("Siguiente: tres ="),
    ``answer`` (" cuatro"), ``options`` (the language's number words) and ``label`` (the answer's index).
    """
    words, records = NUMBER_WORDS[lang], []
    for relation, offset in TASK_OFFSETS.items():
        for x in range(len(words)):
            if 0 <= x + offset < len(words):
                records.append(
                    {
                        "item": f"{relation}-{x}",
                        "question": TASK_PROMPTS[lang][relation].format(x=words[x]),
                        "answer": " " + words[x + offset],
                        "options": words,
                        "label": x + offset,
                    }
                )
    return records


def write_demo_data(texts: dict[str, list[str]]) -> Path:
    """The demo's data: held-out Wikipedia windows and the task, per language."""
    demo_data = ASSETS / "demo"
    demo_data.mkdir(parents=True, exist_ok=True)
    for lang in WIKI_FILES:
        lines = [json.dumps({"text": t}, ensure_ascii=False) for t in texts[lang][:HELD_OUT_RECORDS]]
        (demo_data / f"wiki_{lang}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        for name, relations in RELATION_FILES.items():
            records = [
                r for r in task_records(lang) if relations is None or r["item"].split("-")[0] in relations
            ]
            lines = [json.dumps(r, ensure_ascii=False) for r in records]
            (demo_data / f"{name}_{lang}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return demo_data


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def windows(token_ids: list[int], length: int) -> torch.Tensor:
    n = len(token_ids) // length
    return torch.tensor(token_ids[: n * length]).view(n, length)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-only", action="store_true", help="rewrite the demo data; train nothing")
    args = parser.parse_args()
    if args.data_only:
        print(f"wrote {write_demo_data({lang: wiki_texts(args.shared, lang) for lang in WIKI_FILES})}")
        return
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    texts = {lang: wiki_texts(args.shared, lang) for lang in WIKI_FILES}
    pretrain = {lang: t[HELD_OUT_RECORDS:] for lang, t in texts.items()}
    counting = {lang: counting_sentences(lang, rng, 3000) for lang in WIKI_FILES}
    tokenizer = train_tokenizer([*pretrain["en"], *pretrain["es"], *counting["en"], *counting["es"]], 2048)

    streams = {}
    for lang in WIKI_FILES:
        docs = pretrain[lang] + counting[lang]
        rng.shuffle(docs)
        ids = tokenizer(" ".join(docs), add_special_tokens=False).input_ids
        streams[lang] = windows(ids, args.seq_len)
        print(f"{lang}: {streams[lang].shape[0]} windows of {args.seq_len} tokens")

    from transformers import LlamaForCausalLM

    from adamergex_pl.assets.builtin import tiny_llama_config

    config = tiny_llama_config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=352,
        num_hidden_layers=4,
        max_position_embeddings=512,
    )
    model = LlamaForCausalLM(config)
    print(f"parameters: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = args.steps // 20

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (args.steps - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    half = args.batch_size // 2
    start = time.time()
    model.train()
    for step in range(args.steps):
        rows = [streams[lang][torch.randint(len(streams[lang]), (half,))] for lang in WIKI_FILES]
        batch = torch.cat(rows)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  {time.time() - start:6.0f}s", flush=True)

    out = ASSETS / "demo-bilingual"
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "README.md").write_text(
        "# demo-bilingual\n\nA 4-layer Llama (hidden 128, ~1.3M parameters) pretrained from scratch by "
        "`scripts/build_demo_model.py` on English and Spanish Wikipedia text (the AdaMergeX authors' demo "
        "windows, CC BY-SA 4.0) and counting sentences in both languages, for "
        f"{args.steps} steps of {args.batch_size} x {args.seq_len} tokens (seed {args.seed}). "
        "It is a toy for the embedded AdaMergeX demo, not a language model for any real use.\n"
    )
    demo_data = write_demo_data(texts)
    print(f"wrote {out} and {demo_data} in {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()
