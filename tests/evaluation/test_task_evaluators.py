"""The task-suite evaluators: hand-computed scores, and prompts that cannot score.

Adversarial set-up. The official AdaMergeX evaluation parsed decoded text that still held the prompt, so a
prompt listing every label word made its XNLI fallback "correct", and MGSM read numbers from the question.
Each adversarial test below runs such a naive scorer on the same data and model and shows that it IS fooled,
then shows that the evaluators here are not.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from transformers import LlamaForCausalLM

from adamergex_pl.assets.builtin import tiny_llama_config
from adamergex_pl.evaluation.choice_evaluator import ChoiceEvaluator
from adamergex_pl.evaluation.generation import GenerationEvaluator, cut_at_stops
from adamergex_pl.metrics.numbers import extract_final_number
from adamergex_pl.results.tables import format_results_table
from data_modules import DataSource, TaskDataModule
from data_modules.collate import TaskCollator
from data_modules.tasks.xnli import LABELS

TOKENIZER = "builtin:tiny-llama"


def datamodule(task: str, languages=("de", "zh"), **kwargs) -> TaskDataModule:
    kwargs.setdefault(
        "val", [DataSource(f"builtin:tasks/{task}/{lang}.jsonl", language=lang) for lang in languages]
    )
    data = TaskDataModule(task, tokenizer=TOKENIZER, eval_samples="all", eval_batch_size=3, **kwargs)
    data.setup("validate")
    return data


def batches(data: TaskDataModule, language: str):
    return data.val_dataloader()[data.val_languages.index(language)]


def evaluate(data: TaskDataModule, model: nn.Module, evaluator=None) -> dict[str, float]:
    evaluator = evaluator or data.build_evaluator()
    for language in data.val_languages:
        for batch in batches(data, language):
            evaluator.update(model, batch, language)
    return {key: float(value) for key, value in evaluator.compute().items()}


def bigram_llama() -> LlamaForCausalLM:
    """A Llama without attention layers: the next token's distribution depends on the current token only."""
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(num_hidden_layers=0)).eval()


class ScriptedModel(nn.Module):
    """A stand-in whose greedy "generation" is scripted: the answer of the first key found in the prompt.

    ``generate`` returns the prompt followed by the answer's tokens, EOS and padding, as transformers does.
    """

    def __init__(self, tokenizer, answers: dict[str, str], default: str = "") -> None:
        super().__init__()
        self.tokenizer, self.answers, self.default = tokenizer, answers, default

    def generate(self, input_ids, attention_mask, generation_config):
        rows = []
        for ids, mask in zip(input_ids, attention_mask, strict=True):
            prompt = self.tokenizer.decode(ids[mask.bool()], skip_special_tokens=True)
            text = next((a for key, a in self.answers.items() if key in prompt), self.default)
            new = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
            rows.append(new[: generation_config.max_new_tokens])
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        generated = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
        return torch.cat([input_ids, generated], dim=1)


def naive_full_text(model, tokenizer, batch, max_new_tokens: int = 4) -> list[str]:
    """What the official evaluation parsed: prompt AND generation, decoded together."""
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
    )
    output = model.generate(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], generation_config=config
    )
    return tokenizer.batch_decode(output, skip_special_tokens=True)


# ------------------------------------------------------------------------------------- adversarial
def test_a_prompt_with_every_label_word_cannot_raise_option_scoring_accuracy(tmp_path):
    model = bigram_llama()
    plain = datamodule("xnli", prompt_template="Premise: {premise}\nHypothesis: {hypothesis}\nAnswer:")
    listing = datamodule("xnli")  # the default instruction lists all three label words
    leak_dir = tmp_path / "leak"
    leak_dir.mkdir()
    val = []
    for lang in ("de", "zh"):  # the gold label word itself appended to every hypothesis
        lines = DataSource(f"builtin:tasks/xnli/{lang}.jsonl").local_path().read_text(encoding="utf-8")
        rows = [json.loads(line) for line in lines.splitlines()]
        for row in rows:
            row["hypothesis"] += f" (answer: {LABELS[row['label']]})"
        (leak_dir / f"{lang}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        )
        val.append(DataSource(str(leak_dir / f"{lang}.jsonl"), language=lang))
    gold_leak = datamodule("xnli", val=val)

    # The naive scorer ("correct if the gold label word is in the decoded text") is fooled by both prompts ...
    def naive_accuracy(data: TaskDataModule) -> float:
        generation = datamodule("xnli", val=data.val_sources, prompt_template=data.template.template)
        collate = TaskCollator("generation", data.tokenizer.pad_token_id)
        hits = []
        for lang in ("de", "zh"):
            examples = [
                {"input_ids": e["prompt_ids"], "references": [LABELS[e["label"]]], "index": e["index"]}
                for e in generation.val_examples[lang]
            ]
            batch = collate(examples)
            texts = naive_full_text(model, data.tokenizer, batch)
            hits += [refs[0] in text for refs, text in zip(batch["references"], texts, strict=True)]
        return sum(hits) / len(hits)

    assert naive_accuracy(plain) == 0.0
    assert naive_accuracy(listing) == 1.0 and naive_accuracy(gold_leak) == 1.0

    # ... while option scoring gives exactly the same accuracy with or without the label words in the prompt
    scores = [evaluate(data, model)["xnli/accuracy"] for data in (plain, listing, gold_leak)]
    assert scores[0] == scores[1] == scores[2] < 1.0
    for data in (plain, listing, gold_leak):
        assert evaluate(data, model, ChoiceEvaluator("xnli", ["de", "zh"], 3, True))["xnli/accuracy"] < 1.0


def test_numbers_in_an_mgsm_question_are_never_taken_as_the_answer(tmp_path):
    rows = [  # the gold number is the last number of every question
        {
            "question": "Ein Laden verkauft morgens 3 und abends 5 Kuchen, zusammen 8. Wie viele?",
            "answer_number": 8,
        },
        {
            "question": "Tom hat 2 Katzen und 4 Hunde, also 6 Tiere. Wie viele Tiere hat Tom?",
            "answer_number": 6,
        },
    ]
    path = tmp_path / "de.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    data = datamodule("mgsm", val=[DataSource(str(path), language="de")], max_new_tokens=16)
    batch = next(iter(batches(data, "de")))
    tokenizer = data.tokenizer

    clueless = ScriptedModel(tokenizer, {}, default="Das weiß ich nicht.")
    naive = [extract_final_number(text, "de") for text in naive_full_text(clueless, tokenizer, batch, 16)]
    assert naive == [8, 6]  # parsing prompt + generation "solves" every question

    results = evaluate(data, clueless)
    assert results["mgsm/de/accuracy"] == 0.0 and results["mgsm/de/no_number_rate"] == 1.0
    solver = ScriptedModel(tokenizer, {"Kuchen": "3 + 5 = 8. Die Antwort ist 8.", "Tiere": "Es sind 6."})
    assert evaluate(data, solver)["mgsm/de/accuracy"] == 1.0  # a generated answer does count


# ------------------------------------------------------------------------------------- hand-computed scores
def test_xquad_exact_match_and_f1_are_aggregated_per_language():
    data = datamodule("xquad")
    model = ScriptedModel(
        data.tokenizer,
        {
            "Wo entspringt": "den Schweizer Alpen",  # EM 0, F1 2·1·(3/4)/(1+3/4) = 6/7
            "Wie lang": "1.230 Kilometer\nFrage: und der Main?",  # cut at the newline; EM 0, F1 2·1·(2/3)/(5/3) = 0.8
            "Wann wurde": "1889",  # EM 1, F1 1
            "Wessen Firma": "Paris",  # EM 0, F1 0
            "发源于哪里": "瑞士阿尔卑斯山",  # EM 1, F1 1
            "有多长": "1230公里",  # tokens [1230, 公, 里] vs [约, 1230, 公, 里]: EM 0, F1 6/7
            "哪一年": "1889年",  # EM 1, F1 1
            "谁的公司": "埃菲尔",  # 3 of the 7 characters of 古斯塔夫·埃菲尔: EM 0, F1 2·(3/7)/(10/7) = 0.6
        },
    )
    results = evaluate(data, model)
    de_f1, zh_f1 = (6 / 7 + 0.8 + 1 + 0) / 4, (1 + 6 / 7 + 1 + 0.6) / 4
    expected = {
        "xquad/de/exact_match": 0.25,
        "xquad/de/f1": de_f1,
        "xquad/zh/exact_match": 0.5,
        "xquad/zh/f1": zh_f1,
        "xquad/exact_match": 0.375,
        "xquad/f1": (de_f1 + zh_f1) / 2,
    }
    assert results == pytest.approx(expected, abs=1e-6)


def test_mgsm_final_numbers_are_read_from_the_generation_through_the_evaluator():
    data = datamodule("mgsm")
    model = ScriptedModel(
        data.tokenizer,
        {
            "Lena": "3 + 5 = 8. Die Antwort ist 8.",  # 8 (gold 8)
            "Buch kostet": "4 · 12 = 48 Euro",  # 48
            "Klasse": "keine Ahnung",  # no number
            "Tom liest": "Er liest 150 Seiten.\nQuestion: Was ist 7 mal 25?",  # cut at the stop: 150
            "Bauernhof": "Es bleiben 1.200 - 350 = 850 Hühner.",  # 850 (German 1.200 = 1200)
            "莉娜": "答案是8。",  # 8
            "一本书": "答案是四十八",  # Chinese numerals, no digits: 48
            "一个班": "答案是十五。",  # 15
            "汤姆": "150页",  # 150
            "农场": "还剩 850 只鸡，共 1200 只",  # the FINAL number is 1200, gold 850
        },
    )
    results = evaluate(data, model)
    assert results == pytest.approx(
        {
            "mgsm/de/accuracy": 0.8,
            "mgsm/de/no_number_rate": 0.2,
            "mgsm/zh/accuracy": 0.8,
            "mgsm/zh/no_number_rate": 0.0,
            "mgsm/accuracy": 0.8,
            "mgsm/no_number_rate": 0.1,
        },
        abs=1e-6,
    )


def test_xlsum_rouge_l_on_chinese_is_per_character_through_the_evaluator():
    data = datamodule("xlsum", languages=("zh",), max_new_tokens=128)  # byte tokens: 3 per character
    model = ScriptedModel(
        data.tokenizer,
        {
            "图书馆": "新图书馆开放",  # LCS 图书馆开放 = 5 of 6 and 23 characters: F1 2·(5/6)(5/23)/(5/6+5/23) = 50/145
            "高速列车": "一条新的高速铁路把北方两座城市之间的行程缩短到一小时。",  # the reference: F1 1
        },
        default="",  # the third article: nothing generated, F1 0
    )
    results = evaluate(data, model)
    assert results["xlsum/zh/rouge_l_f1"] == pytest.approx((50 / 145 + 1 + 0) / 3, abs=1e-6)
    assert results["xlsum/zh/rouge_l_precision"] == pytest.approx((5 / 6 + 1 + 0) / 3, abs=1e-6)


def test_length_normalisation_can_change_the_ranking():
    class ContextFree(nn.Module):
        """log p(x) = -2 and log p(y) = -1.5 for every next token, whatever came before."""

        def __init__(self, x: int, y: int, vocab: int) -> None:
            super().__init__()
            rest = math.log((1 - math.exp(-2) - math.exp(-1.5)) / (vocab - 2))
            self.logits = torch.full((vocab,), rest)
            self.logits[x], self.logits[y] = -2.0, -1.5

        def forward(self, input_ids, attention_mask):
            return type("Output", (), {"logits": self.logits.expand(*input_ids.shape, -1)})()

    x, y = 4 + ord("x"), 4 + ord("y")  # byte tokens
    model = ContextFree(x, y, 260)
    example = {"prompt_ids": [1, 50], "option_ids": [[x], [y, y]], "label": 1}
    batch = TaskCollator("choice", pad_token_id=0, share_prompt=False)([example])  # one row per option
    summed = ChoiceEvaluator("t", ["en"], 2).predict(model, batch)
    normalized = ChoiceEvaluator("t", ["en"], 2, length_normalized=True).predict(model, batch)
    assert summed.tolist() == [0] and normalized.tolist() == [1]  # sums: -2 > -3; means: -1.5 > -2


def test_accuracy_states_merge_across_shards_like_ddp_ranks(tiny_llama_path):
    model = LlamaForCausalLM.from_pretrained(tiny_llama_path).eval()
    data = datamodule("xnli", languages=("en", "de", "zh"))
    full, even, odd = (ChoiceEvaluator("xnli", ["en", "de", "zh"], 3) for _ in range(3))
    for lang in data.val_languages:
        for i, batch in enumerate(batches(data, lang)):
            full.update(model, batch, lang)
            (even if i % 2 == 0 else odd).update(model, batch, lang)
    for lang in data.val_languages:
        even.accuracy[lang].merge_state(odd.accuracy[lang])
    assert even.compute() == full.compute()
    assert set(full.compute()) == {
        "xnli/en/accuracy",
        "xnli/de/accuracy",
        "xnli/zh/accuracy",
        "xnli/accuracy",
    }


def test_shared_prompt_scoring_equals_one_row_per_option_on_the_adapted_model():
    from adamergex_pl import AdapterModule
    from adamergex_pl.evaluation.option_scoring import choice_scores
    from adamergex_pl.evaluation.shared_prompt_scoring import shared_prompt_scores

    module = AdapterModule("builtin:tiny-llama", lora_r=4, lora_dropout=0.0)
    module.configure_model()  # the PEFT-wrapped model that validation uses
    torch.manual_seed(1)
    for name, param in module.model.named_parameters():
        if "lora_B" in name:  # a trained-looking adapter instead of the identity
            param.data.normal_(0, 0.5)
    model = module.model.eval()
    data = datamodule("xcopa", languages=("tr", "zh"))  # multi-token options after prompts of unequal length
    for lang in ("tr", "zh"):
        examples = data.val_examples[lang]
        shared = TaskCollator("choice", 0, share_prompt=True)(examples)
        rows = TaskCollator("choice", 0, share_prompt=False)(examples)
        for normalized in (False, True):
            expected = choice_scores(model, {**rows, "labels": rows["option_labels"]}, normalized)
            torch.testing.assert_close(
                shared_prompt_scores(model, shared, normalized), expected, rtol=0, atol=1e-4
            )


def test_single_token_options_are_scored_from_the_prompts_last_logits_in_one_forward():
    from adamergex_pl import AdapterModule
    from adamergex_pl.evaluation.option_scoring import choice_scores
    from adamergex_pl.evaluation.shared_prompt_scoring import shared_prompt_scores

    module = AdapterModule("builtin:tiny-llama", lora_r=4, lora_dropout=0.0)
    module.configure_model()
    torch.manual_seed(2)
    for name, param in module.model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5)
    model = module.model.eval()
    calls = []

    def counting(**kwargs):
        calls.append(kwargs)
        return model(**kwargs)

    data = datamodule("xnli", languages=("en", "zh"))  # prompts of unequal length, left-padded together
    for lang in ("en", "zh"):
        examples = [  # one token per option (the last byte of each label word), 2 or 3 options per example
            {**e, "option_ids": [o[-1:] for o in e["option_ids"]][: 2 + i % 2]}
            for i, e in enumerate(data.val_examples[lang])
        ]
        shared = TaskCollator("choice", 0, share_prompt=True)(examples)
        rows = TaskCollator("choice", 0, share_prompt=False)(examples)
        for normalized in (False, True):
            calls.clear()
            scores = shared_prompt_scores(counting, shared, normalized)
            assert len(calls) == 1 and calls[0]["use_cache"] is False
            expected = choice_scores(model, {**rows, "labels": rows["option_labels"]}, normalized)
            torch.testing.assert_close(scores, expected, rtol=0, atol=1e-4)
            assert torch.equal(scores.argmax(-1), expected.argmax(-1))
            assert scores.isinf().sum() == expected.isinf().sum() > 0  # the 2-option examples' padding
    multi = TaskCollator("choice", 0, share_prompt=True)(data.val_examples["en"])
    calls.clear()
    shared_prompt_scores(counting, multi)
    assert len(calls) == 2  # longer options keep the cached second pass


# ------------------------------------------------------------------------------------- small pieces
def test_completions_are_cut_at_the_first_stop_string():
    assert cut_at_stops(" Paris\nQuestion: and Rome?", ["\n"]) == "Paris"
    assert cut_at_stops("a ### b \n c", ["\n", "###"]) == "a"
    assert cut_at_stops("  no stop  ", ["\n", ""]) == "no stop"


def test_generation_evaluator_refuses_bad_settings():
    with pytest.raises(ValueError, match="metric='bleu'"):
        GenerationEvaluator("t", ["en"], None, 8, "bleu")
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        GenerationEvaluator("t", ["en"], None, 0, "squad")
    with pytest.raises(ValueError, match="at least two options"):
        ChoiceEvaluator("t", ["en"], 1)


def test_results_table_has_a_row_per_language_and_a_mean_row():
    metrics = {
        "val/xquad/de/exact_match": 0.25,
        "val/xquad/de/f1": 0.5,
        "val/xquad/zh/exact_match": torch.tensor(0.5),
        "val/xquad/zh/f1": float("nan"),
        "val/xquad/exact_match": 0.375,
        "val/xquad/f1": 0.5,
        "train/loss": 1.0,
    }
    lines = format_results_table(metrics).splitlines()
    assert lines[0].split() == ["language", "xquad/exact_match", "xquad/f1"]
    assert [line.split() for line in lines[2:]] == [
        ["de", "0.2500", "0.5000"],
        ["zh", "0.5000", "nan"],
        ["mean", "0.3750", "0.5000"],
    ]
    lm = format_results_table({"val/en/loss": 2.0, "val/es/loss": 3.0, "val/loss": 2.5}).splitlines()
    assert [line.split() for line in lm[2:]] == [["en", "2.0000"], ["es", "3.0000"], ["mean", "2.5000"]]
    assert format_results_table({"train/loss": 1.0}) == ""


@pytest.mark.parametrize(
    "module_name",
    [
        "adamergex_pl.evaluation.choice_evaluator",
        "adamergex_pl.evaluation.generation",
        "adamergex_pl.results.tables",
        "adamergex_pl.evaluation.shared_prompt_scoring",
        "data_modules.collate",
    ],
)
def test_docstring_examples_of_the_task_suite(module_name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module_name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0, module_name
