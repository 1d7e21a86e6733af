"""CrossX: item loading, option scoring, and the evaluator path reproducing SeaEval's published numbers."""

from __future__ import annotations

import functools
import json
from types import SimpleNamespace

import pytest
import torch
from conftest import REPO_ROOT, SHARED
from torch import nn

from adamergex_pl.errors import InvalidValueError
from adamergex_pl.evaluation.crossx_evaluator import CrossXEvaluator
from adamergex_pl.evaluation.option_scoring import choice_scores
from adamergex_pl.metrics.consistency import consistency_scores
from data_modules import CrossXDataModule, DataSource
from data_modules.crossx import load_crossx_items

# From a git worktree (/work/wt/<name>) the shared folder may sit one level higher than conftest's SHARED.
_SHARED = next((p / "shared" for p in [REPO_ROOT, *REPO_ROOT.parents] if (p / "shared").is_dir()), SHARED)
ANCHOR = _SHARED / "anchor_data" / "crossin"
NAMES = {"en": "English", "zh": "Chinese", "vi": "Vietnamese", "es": "Spanish", "id": "Indonesian",
         "ms": "Malay", "fil": "Filipino"}  # fmt: skip
FOUR, SEVEN = ["en", "zh", "vi", "es"], list(NAMES)
MODELS = ("random", "gpt4_1106_preview", "llama_2_7b_chat", "mistral_7b_instruct_v0_2")


@functools.cache
def _vector(dataset: str, model: str) -> dict:
    path = ANCHOR / "test_vectors" / f"{dataset}__{model}__p1.json"
    if not path.is_file():
        pytest.skip(f"CrossX test vectors are absent: {path} (the shared folder is not checked out)")
    return json.loads(path.read_text(encoding="utf-8"))


def _expected(vector: dict, languages: list[str]) -> dict[str, float]:
    """A SeaEval score block in this package's key names, for ``languages``."""
    block = vector["expected"][
        "repo_score_file_all_langs" if len(languages) == 7 else "repo_score_file_restricted_to_4_langs"
    ]
    expected = {f"{lang}/accuracy": block["language_acc"][NAMES[lang]] for lang in languages}
    expected["accuracy"] = block["overall_acc"]
    for k in range(2, len(languages) + 1):
        expected[f"consistency_{k}"] = block[f"consistency_score_{k}"]
        expected[f"ac3_{k}"] = block[f"AC3_{k}"]
    return expected


def _assert_matches(results: dict, benchmark: str, expected: dict[str, float]) -> None:
    assert set(results) == {f"{benchmark}/{key}" for key in expected}
    for key, value in expected.items():
        assert float(results[f"{benchmark}/{key}"]) == pytest.approx(value, abs=1e-6), key


class PinnedAnswerModel(nn.Module):
    """A stand-in causal LM that prefers exactly the given ``prompt + option`` token rows.

    Every row gets uniform next-token scores except the favoured rows, whose own next tokens get logit 10, so
    option scoring picks the favoured option of every item.
    """

    def __init__(self, favoured: set[tuple[int, ...]], vocab_size: int) -> None:
        super().__init__()
        self.favoured, self.vocab_size = favoured, vocab_size

    def forward(self, input_ids, attention_mask):
        logits = torch.zeros(*input_ids.shape, self.vocab_size)
        for row in range(input_ids.shape[0]):
            length = int(attention_mask[row].sum())
            if tuple(input_ids[row, :length].tolist()) in self.favoured:
                logits[row, torch.arange(length - 1), input_ids[row, 1:length]] = 10.0
        return SimpleNamespace(logits=logits)


# ---- the evaluator reproduces the published numbers --------------------------------------------------------


@pytest.mark.parametrize("languages", [FOUR, SEVEN], ids=["4_languages", "7_languages"])
def test_pinned_predictions_through_datamodule_scoring_and_evaluator_reproduce_seaeval(
    tiny_llama_path, languages
):
    """End to end but for the model: items read by the DataModule, batches from its dataloaders, option scoring
    by ``choice_scores`` of a model that prefers the pinned answers, the evaluator's metric."""
    vector = _vector("cross_mmlu", "random")
    source = DataSource(str(ANCHOR / "SeaEval_datasets_reconstructed" / "cross_mmlu.json"))
    module = CrossXDataModule(benchmarks=[source], languages=languages, tokenizer=tiny_llama_path,
                              eval_batch_size=8, max_length=4096)  # fmt: skip
    module.setup("validate")
    assert module.val_languages == [f"cross_mmlu/{lang}" for lang in languages]
    # per language: a few items are word for word the same in Indonesian and Malay, with different pinned answers
    favoured = {label: set() for label in module.val_languages}
    for label, examples in module.val_examples.items():
        lang = label.split("/")[1]
        for example in examples:
            pinned = vector["items"][example["index"]][NAMES[lang]]["pred_letter"]  # "(B)"
            option = "ABCD".index(pinned[1])
            favoured[label].add(tuple(example["prompt_ids"] + example["option_ids"][option]))
    evaluator = module.build_evaluator()
    for label, loader in zip(module.val_languages, module.val_dataloader(), strict=True):
        model = PinnedAnswerModel(favoured[label], len(module.tokenizer))
        for batch in loader:
            evaluator.update(model, batch, label)
    _assert_matches(evaluator.compute(), "cross_mmlu", _expected(vector, languages))


@pytest.mark.parametrize("dataset", ["cross_mmlu", "cross_logiqa"])
@pytest.mark.parametrize("model", MODELS)
def test_pinned_letters_through_the_evaluator_reproduce_every_vector_file(dataset, model):
    vector = _vector(dataset, model)
    for languages in (FOUR, SEVEN):
        evaluator = CrossXEvaluator({dataset: (vector["n_items"], 4)}, languages)
        for lang in reversed(languages):  # language order of the updates does not matter
            cells = [item[NAMES[lang]] for item in vector["items"]]
            for start in range(0, len(cells), 32):  # batches, as from a dataloader
                chunk = range(start, min(start + 32, len(cells)))
                batch = {"index": torch.tensor(list(chunk)),
                         "label": torch.tensor(["ABCD".index(cells[i]["gold_letter"][1]) for i in chunk])}  # fmt: skip
                predicted = ["ABCD".index(cells[i]["pred_letter"][1]) for i in chunk]
                evaluator.update_predictions(predicted, batch, f"{dataset}/{lang}")
        _assert_matches(evaluator.compute(), dataset, _expected(vector, languages))


def test_uniformly_random_answerer_scores_consistency_3_near_one_sixteenth():
    generator = torch.Generator().manual_seed(0)
    evaluator = CrossXEvaluator({"cross_mmlu": (150, 4)}, FOUR)
    gold = torch.randint(0, 4, (150,), generator=generator)
    values = []
    for _ in range(20):  # 20 random answerers of 150 items: the mean is within a few standard errors of 1/16
        for lang in FOUR:
            predicted = torch.randint(0, 4, (150,), generator=generator)
            evaluator.update_predictions(
                predicted, {"index": torch.arange(150), "label": gold}, f"cross_mmlu/{lang}"
            )
        values.append(float(evaluator.compute()["cross_mmlu/consistency_3"]))
        evaluator.reset()
    assert sum(values) / len(values) == pytest.approx(1 / 16, abs=0.01)


# ---- the DataModule ----------------------------------------------------------------------------------------


def test_shipped_subsets_match_the_anchor_items():
    for name in ("cross_mmlu", "cross_logiqa"):
        shipped = load_crossx_items(DataSource(f"builtin:crossx/{name}.json"), FOUR)
        anchor_path = ANCHOR / "SeaEval_datasets_reconstructed" / f"{name}.json"
        if not anchor_path.is_file():
            pytest.skip("the shared anchor data is not checked out")
        anchor = load_crossx_items(DataSource(str(anchor_path)), FOUR)
        assert shipped == anchor[: len(shipped)] and len(shipped) in (20, 8)


def test_prompts_options_and_labels(tiny_llama_path):
    module = CrossXDataModule(
        benchmarks=[
            DataSource("builtin:crossx/cross_mmlu.json"),
            DataSource("builtin:crossx/cross_logiqa.json"),
        ],
        languages=["English", "zh-CN"],
        option_template=" {tag} {text}",
        max_items=5,
        tokenizer=tiny_llama_path,
    )
    module.setup("validate")
    tok = module.tokenizer
    assert module.val_languages == ["cross_mmlu/en", "cross_mmlu/zh", "cross_logiqa/en", "cross_logiqa/zh"]
    assert module.benchmark_sizes == {"cross_mmlu": (20, 4), "cross_logiqa": (8, 4)}
    items = load_crossx_items(DataSource("builtin:crossx/cross_mmlu.json"), ["zh"])
    indices = [e["index"] for e in module.val_examples["cross_mmlu/zh"]]
    assert indices == [e["index"] for e in module.val_examples["cross_mmlu/en"]] and len(indices) == 5
    example = module.val_examples["cross_mmlu/zh"][0]
    question = items[example["index"]]["zh"]
    prompt = tok.decode(example["prompt_ids"], skip_special_tokens=True)
    assert prompt.endswith(
        f"Question: {question.question}\nChoices:\n" + "\n".join(question.choices) + "\nAnswer:"
    )
    assert [tok.decode(o) for o in example["option_ids"]] == [f" {c}" for c in question.choices]
    assert example["label"] == question.answer
    logiqa = tok.decode(module.val_examples["cross_logiqa/en"][0]["prompt_ids"], skip_special_tokens=True)
    assert "\n\nQuestion: " in logiqa and len(logiqa) > 400  # the passage comes first
    batch = next(iter(module.val_dataloader()[0]))
    assert "labels" not in batch and batch["option_labels"].shape == batch["input_ids"].shape


def test_option_scoring_with_the_tiny_model_gives_every_metric(tiny_llama_path):
    from transformers import AutoModelForCausalLM

    module = CrossXDataModule(max_items=6, tokenizer=tiny_llama_path, eval_batch_size=3, max_length=1024)
    module.setup("validate")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path).eval()
    evaluator = module.build_evaluator()
    for label, loader in zip(module.val_languages, module.val_dataloader(), strict=True):
        for batch in loader:
            evaluator.update(model, batch, label)
    results = {k: float(v) for k, v in evaluator.compute().items()}
    keys = [f"cross_mmlu/{lang}/accuracy" for lang in FOUR] + ["cross_mmlu/accuracy"]
    keys += [f"cross_mmlu/{m}_{k}" for k in (2, 3, 4) for m in ("consistency", "ac3")]
    assert sorted(results) == sorted(keys) and all(0.0 <= v <= 1.0 for v in results.values())
    # the evaluator's prediction is the argmax of the option log-likelihoods
    batch = next(iter(module.val_dataloader()[0]))
    scores = choice_scores(model, {**batch, "labels": batch["option_labels"]})
    assert scores.shape == (3, 4) and torch.isfinite(scores).all()


def test_bad_configuration_is_refused(tiny_llama_path, tmp_path):
    with pytest.raises(InvalidValueError, match=r"at least two distinct languages"):
        CrossXDataModule(languages=["en"])
    with pytest.raises(InvalidValueError, match=r"names field\(s\) \['answer'\]"):
        CrossXDataModule(prompt_template="{question} {answer}")
    with pytest.raises(InvalidValueError, match=r"benchmarks \['cross_mmlu'\] are listed twice"):
        CrossXDataModule(benchmarks=[DataSource("builtin:crossx/cross_mmlu.json")] * 2)
    module = CrossXDataModule(languages=["en", "th"], tokenizer=tiny_llama_path)
    with pytest.raises(
        InvalidValueError, match=r"has no items in \['th'\]; its languages are \['en', 'es', 'vi', 'zh'\]"
    ):
        module.setup("validate")
    path = tmp_path / "bad.json"
    item = {"question": "q", "choices": ["(A) x", "(B) y"]}
    path.write_text(
        json.dumps(
            [{"id": "1", "English": {**item, "answer": "(A) x"}, "Chinese": {**item, "answer": "(B) y"}}]
        )
    )
    with pytest.raises(
        InvalidValueError, match=r"different gold options per language \{'en': 'A', 'zh': 'B'\}"
    ):
        load_crossx_items(DataSource(str(path)), ["en", "zh"])


def test_missing_cells_are_left_out(tmp_path):
    item = {"question": "q", "choices": ["(A) x", "(B) y"], "answer": "(A) x"}
    path = tmp_path / "partial.json"
    path.write_text(
        json.dumps(
            [{"id": "1", "English": item, "Chinese": item}, {"id": "2", "English": item, "Chinese": None}]
        )
    )
    items = load_crossx_items(DataSource(str(path)), ["en", "zh"])
    assert [sorted(i) for i in items] == [["en", "zh"], ["en"]]
    evaluator = CrossXEvaluator({"partial": (2, 2)}, ["en", "zh"])
    evaluator.update_predictions(
        [0, 1], {"index": torch.tensor([0, 1]), "label": torch.tensor([0, 0])}, "partial/en"
    )
    evaluator.update_predictions([0], {"index": torch.tensor([0]), "label": torch.tensor([0])}, "partial/zh")
    expected = consistency_scores(
        {"en": ["A", "B"], "zh": ["A", None]}, {"en": ["A", "A"], "zh": ["A", None]}, 2
    )
    assert {k: float(v) for k, v in evaluator.compute().items()} == {
        f"partial/{k}": v for k, v in expected.items()
    }


@pytest.mark.parametrize(
    ("prompt_format", "start", "end"),
    [
        ("plain", "Respond to the question", "\nAnswer:"),
        ("alpaca", "Below is an instruction that describes a task.", "\nAnswer:\n\n### Response:\n"),
        ("chat", "<s><|user|>\nRespond to the question", "\nAnswer:\n<|assistant|>\n"),
    ],
)
def test_prompt_formats(tiny_llama_path, prompt_format, start, end):
    module = CrossXDataModule(prompt_format=prompt_format, max_items=1, tokenizer=tiny_llama_path)
    module.setup("validate")
    prompt = module.tokenizer.decode(module.val_examples["cross_mmlu/en"][0]["prompt_ids"])
    assert prompt.startswith(start if prompt_format == "chat" else "<s>" + start) and prompt.endswith(end)
