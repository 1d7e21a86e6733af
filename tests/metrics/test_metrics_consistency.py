"""CrossX accuracy, Consistency_k, AC3_k: hand-built cases, random answerer, DDP merge, published numbers."""

from __future__ import annotations

import functools
import json
import math
import random

import pytest
import torch
from conftest import REPO_ROOT, SHARED

from adamergex_pl.metrics.consistency import CrossLingualConsistency, consistency_scores

# conftest's SHARED is ../shared of the checkout; from a git worktree (/work/wt/<name>) the shared folder
# sits one level higher, so look upward from there.
_SHARED = next((p / "shared" for p in [REPO_ROOT, *REPO_ROOT.parents] if (p / "shared").is_dir()), SHARED)
VECTORS = _SHARED / "anchor_data" / "crossin" / "test_vectors"
VECTOR_FILES = [
    f"{dataset}__{model}__p1.json"
    for dataset in ("cross_mmlu", "cross_logiqa")
    for model in ("random", "gpt4_1106_preview", "llama_2_7b_chat", "mistral_7b_instruct_v0_2")
]


@functools.cache
def _vector(name: str) -> dict:
    path = VECTORS / name
    if not path.is_file():
        pytest.skip(
            f"CrossX test vectors are absent: {path} (the shared folder ../shared is not checked out)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def _letters(data: dict, languages: list[str], field: str) -> dict[str, list[str]]:
    return {language: [item[language][field] for item in data["items"]] for language in languages}


def _assert_scores(scores: dict[str, float], expected: dict, languages: list[str]) -> None:
    """Compare with a SeaEval score dict (overall_acc, language_acc, consistency_score_k, AC3_k) to 1e-6."""
    assert scores["accuracy"] == pytest.approx(expected["overall_acc"], abs=1e-6)
    for language in languages:
        assert scores[f"{language}/accuracy"] == pytest.approx(expected["language_acc"][language], abs=1e-6)
    for k in range(2, len(languages) + 1):
        assert scores[f"consistency_{k}"] == pytest.approx(expected[f"consistency_score_{k}"], abs=1e-6)
        assert scores[f"ac3_{k}"] == pytest.approx(expected[f"AC3_{k}"], abs=1e-6)
    assert f"consistency_{len(languages) + 1}" not in scores


# ---- hand-built cases --------------------------------------------------------------------------------------


def test_hand_computed_three_languages() -> None:
    #          item:   0    1    2    3
    gold = {"en": list("ABAD"), "zh": list("ABAD"), "vi": list("ABAD")}
    pred = {"en": list("ABCD"), "zh": list("ABDD"), "vi": list("ACCD")}
    # Acc: en items 0,1,3 -> 3/4; zh 0,1,3 -> 3/4; vi 0,3 -> 1/2; Acc = 2/3.
    # Pairs agree: (en,zh) on 0,1,3 -> 3/4; (en,vi) on 0,2,3 -> 3/4 (item 2: both the wrong C);
    # (zh,vi) on 0,3 -> 1/2.
    # Consistency_2 = 2/3; triple 0,3 -> Consistency_3 = 1/2.
    # AC3_2 = 2·(2/3)(2/3)/(4/3) = 2/3; AC3_3 = 2·(2/3)(1/2)/(7/6) = 4/7.
    scores = consistency_scores(pred, gold)
    assert scores["en/accuracy"] == 0.75 and scores["zh/accuracy"] == 0.75 and scores["vi/accuracy"] == 0.5
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert scores["consistency_2"] == pytest.approx(2 / 3)
    assert scores["consistency_3"] == pytest.approx(1 / 2)
    assert scores["ac3_2"] == pytest.approx(2 / 3)
    assert scores["ac3_3"] == pytest.approx(4 / 7)
    assert list(scores) == [
        "en/accuracy", "zh/accuracy", "vi/accuracy", "accuracy",
        "consistency_2", "ac3_2", "consistency_3", "ac3_3",
    ]  # fmt: skip


def test_all_agree_but_all_wrong() -> None:
    gold = {language: list("ABCD") for language in ("en", "zh", "vi", "es")}
    pred = {language: list("BCDA") for language in gold}
    scores = consistency_scores(pred, gold)
    assert scores["accuracy"] == 0.0
    for k in (2, 3, 4):
        assert scores[f"consistency_{k}"] == 1.0
        assert scores[f"ac3_{k}"] == 0.0


def test_all_correct() -> None:
    gold = {language: list("ABCDDCBA") for language in ("en", "zh", "vi", "es")}
    scores = consistency_scores(gold, gold)
    for key, value in scores.items():
        assert value == pytest.approx(1.0, abs=1e-9), key  # AC3 = 2/(2 + 1e-10)


def test_choice_strings_and_tags_are_read_as_letters() -> None:
    gold = {"en": ["(A) responsible", "(B) funny"], "zh": ["(A) 负责任的", "(B) 有趣的"]}
    pred = {"en": ["A", "(C)"], "zh": ["(A) 负责任的", "(C) 善于交际的"]}
    scores = consistency_scores(pred, gold)
    assert scores["accuracy"] == 0.5 and scores["consistency_2"] == 1.0


def test_no_answer_is_wrong_and_never_consistent() -> None:
    gold = {"en": ["A", "B"], "zh": ["A", "B"]}
    pred = {"en": [None, "B"], "zh": [None, "B"]}
    scores = consistency_scores(pred, gold)
    assert scores["en/accuracy"] == 0.5
    assert scores["consistency_2"] == 0.5  # two refusals do not agree


def test_missing_cells_are_excluded_from_the_subsets_that_contain_them() -> None:
    # Item 2 exists in en and zh but not in vi (gold None).
    gold = {"en": list("AAA"), "zh": list("AAA"), "vi": ["A", "A", None]}
    pred = {"en": list("AAB"), "zh": list("ABB"), "vi": ["B", "A", None]}
    scores = consistency_scores(pred, gold)
    # vi accuracy over its 2 items: item 1 -> 1/2. en: 2/3, zh: 1/3.
    assert scores["vi/accuracy"] == 0.5
    # (en,zh) over items 0,1,2: agree on 0 (A/A) and 2 (B/B) -> 2/3; (en,vi) over items 0,1: agree on 1
    # (A/A) -> 1/2; (zh,vi) over items 0,1: A/B, B/A -> 0. Consistency_2 = (2/3 + 1/2 + 0)/3.
    assert scores["consistency_2"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    # Triple over items 0,1: none agree.
    assert scores["consistency_3"] == 0.0
    with pytest.raises(ValueError, match="no gold"):
        consistency_scores({"en": ["A"], "zh": ["A"]}, {"en": ["A"], "zh": [None]})


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="outside the option set A-D"):
        consistency_scores({"en": ["E"], "zh": ["A"]}, {"en": ["A"], "zh": ["A"]})
    with pytest.raises(ValueError, match="not an option letter"):
        consistency_scores({"en": ["maybe A"], "zh": ["A"]}, {"en": ["A"], "zh": ["A"]})
    with pytest.raises(ValueError, match="align items by index"):
        consistency_scores({"en": ["A", "B"], "zh": ["A"]}, {"en": ["A", "B"], "zh": ["A"]})
    with pytest.raises(ValueError, match="same languages"):
        consistency_scores({"en": ["A"], "zh": ["A"]}, {"en": ["A"], "vi": ["A"]})
    with pytest.raises(ValueError, match="fewer than 2 languages"):
        consistency_scores({"en": ["A"]}, {"en": ["A"]})


# ---- a uniformly random answerer ---------------------------------------------------------------------------


def test_random_answerer_consistency_3_is_one_sixteenth() -> None:
    """4 languages, 150 items, answers uniform over 4 options, seeded; R = 400 replicates.

    Per item, X_S = 1[the 3 languages of S agree]: P(X_S) = 1/16. Sum over the 4 triples Σ = 4 when all 4
    languages agree (p = 1/64), Σ = 1 when exactly 3 agree (p = 4·(1/16 − 1/64) = 12/64), else 0. So
    E[(Σ/4)²] = (16/64 + 12/64)/16 = 28/1024 and Var per item = 28/1024 − (1/16)² = 24/1024. Consistency_3
    of 150 items has sd √(24/1024/150) = 0.0125, and the mean of 400 replicates sd 0.000625; the tolerance
    is 5 sd = 0.003125 (a false failure has probability < 1e-6). Consistency_2 ≈ 1/4 and Consistency_4 ≈ 1/64
    are checked with the same 5-sd rule (per-replicate sd ≤ √(p(1−p)/150)).
    """
    rng = random.Random(0)
    languages = ["en", "zh", "vi", "es"]
    replicates = 400
    totals = {2: 0.0, 3: 0.0, 4: 0.0}
    for _ in range(replicates):
        gold = [rng.choice("ABCD") for _ in range(150)]
        golds = {language: gold for language in languages}
        preds = {language: [rng.choice("ABCD") for _ in range(150)] for language in languages}
        scores = consistency_scores(preds, golds)
        for k in totals:
            totals[k] += scores[f"consistency_{k}"] / replicates
    assert totals[3] == pytest.approx(1 / 16, abs=5 * 0.0125 / math.sqrt(replicates))
    assert totals[2] == pytest.approx(1 / 4, abs=5 * math.sqrt(0.25 * 0.75 / 150) / math.sqrt(replicates))
    assert totals[4] == pytest.approx(
        1 / 64, abs=5 * math.sqrt(1 / 64 * 63 / 64 / 150) / math.sqrt(replicates)
    )


# ---- the torchmetrics metric: DDP sharding, duplicates, conflicts ------------------------------------------


def _records(num_items: int, languages: list[str], seed: int) -> list[tuple[int, str, str | None, str]]:
    rng = random.Random(seed)
    gold = [rng.choice("ABCD") for _ in range(num_items)]
    return [
        (item, language, rng.choice(["A", "B", "C", "D", gold[item], gold[item], None]), gold[item])
        for language in languages
        for item in range(num_items)
    ]


def _feed(metric: CrossLingualConsistency, records: list, batch: int) -> None:
    for start in range(0, len(records), batch):
        chunk = records[start : start + batch]
        metric.update(
            [pred for _, _, pred, _ in chunk],
            [gold for *_, gold in chunk],
            language=[language for _, language, _, _ in chunk],
            item_index=torch.tensor([item for item, *_ in chunk]),
        )


def _pure(records: list, languages: list[str], num_items: int) -> dict[str, float]:
    pred = {language: [None] * num_items for language in languages}
    gold = {language: [None] * num_items for language in languages}
    for item, language, one_pred, one_gold in records:
        pred[language][item], gold[language][item] = one_pred, one_gold
    return consistency_scores(pred, gold)


def _assert_same(result: dict[str, torch.Tensor], expected: dict[str, float]) -> None:
    assert list(result) == list(expected)
    for key, value in expected.items():
        assert float(result[key]) == pytest.approx(value, abs=1e-12), key


def test_two_ranks_with_padding_duplicates_equal_one_process() -> None:
    languages = ["en", "zh", "vi", "es"]
    records = _records(num_items=37, languages=languages, seed=1)
    expected = _pure(records, languages, 37)
    rng = random.Random(2)
    rng.shuffle(records)
    # DistributedSampler-like: interleaved shards, then the first records repeated to pad rank 1.
    shards = [records[0::2], records[1::2]]
    shards[1] += records[: len(shards[0]) - len(shards[1]) + 3]
    ranks = [CrossLingualConsistency(languages, num_items=37) for _ in range(2)]
    for metric, shard in zip(ranks, shards, strict=True):
        _feed(metric, shard, batch=5)
    ranks[0].merge_state(ranks[1])
    _assert_same(ranks[0].compute(), expected)

    # The same (item, language) recorded again, even many times, counts once.
    single = CrossLingualConsistency(languages)
    _feed(single, records + records[:50] + records, batch=7)
    _assert_same(single.compute(), expected)


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")  # the idle instance was never updated
def test_sync_with_an_idle_rank_keeps_integer_records() -> None:
    """What a DDP sync does with dist_reduce_fx="cat" when one rank saw nothing: concatenate the lists."""
    languages = ["en", "zh"]
    records = _records(num_items=10, languages=languages, seed=3)
    busy, idle = CrossLingualConsistency(languages), CrossLingualConsistency(languages)
    _feed(busy, records, batch=4)
    assert all(state[0].dtype == torch.long and state[0].numel() == 0 for state in idle.metric_state.values())
    idle.merge_state(busy)
    _assert_same(idle.compute(), _pure(records, languages, 10))


def test_conflicting_duplicates() -> None:
    metric = CrossLingualConsistency(["en", "zh"])
    metric.update(["B", "A"], ["A", "A"], language="en", item_index=[0, 1])
    metric.update(["A"], ["A"], language="zh", item_index=[0])
    metric.update([None], ["A"], language="zh", item_index=[1])
    metric.update(["C", "A"], ["A", "A"], language="en", item_index=[0, 1])  # item 0 predicted B, then C
    with pytest.warns(UserWarning, match="predicted twice with different options"):
        result = metric.compute()
    assert float(result["en/accuracy"]) == 0.5  # the earliest letter, B, is kept: item 0 wrong, item 1 right
    metric.update(["A"], ["B"], language="zh", item_index=[0])  # a different gold for item 0 in zh
    with pytest.raises(ValueError, match="different gold options"):
        metric.compute()


def test_missing_cells_exclude_or_error() -> None:
    metric = CrossLingualConsistency(["en", "zh"], num_items=3)
    metric.update(["A", "B", "C"], ["A", "B", "C"], language="en", item_index=[0, 1, 2])
    metric.update(["A"], ["A"], language="zh", item_index=[0])
    result = metric.compute()
    assert float(result["zh/accuracy"]) == 1.0 and float(result["consistency_2"]) == 1.0
    strict = CrossLingualConsistency(["en", "zh"], num_items=3, missing="error")
    strict.update(["A"], ["A"], language="en", item_index=[0])
    strict.merge_state(metric)
    with pytest.raises(
        ValueError, match=r"2 of 6 \(item, language\) cells have no prediction, e.g. item 1 in 'zh'"
    ):
        strict.compute()
    empty = CrossLingualConsistency(["en", "zh"])
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(float(empty.compute()["accuracy"]))


def test_reset_and_forward() -> None:
    metric = CrossLingualConsistency(["en", "zh"])
    batch = metric(["A"], ["B"], language="en", item_index=[0])  # forward: this batch's value, and accumulate
    assert float(batch["en/accuracy"]) == 0.0
    metric.update(["B"], ["B"], language="zh", item_index=[0])
    assert float(metric.compute()["zh/accuracy"]) == 1.0
    metric.reset()
    metric.update(["B", "B"], ["B", "B"], language=["en", "zh"], item_index=[0, 0])
    result = metric.compute()
    assert float(result["en/accuracy"]) == 1.0 and float(result["consistency_2"]) == 1.0


def test_metric_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="list each language once"):
        CrossLingualConsistency(["en", "en"])
    with pytest.raises(ValueError, match="missing='skip' is not supported"):
        CrossLingualConsistency(["en", "zh"], missing="skip")  # type: ignore[arg-type]
    metric = CrossLingualConsistency(["en", "zh"], num_items=5, num_options=3)
    with pytest.raises(ValueError, match="outside the option set A-C"):
        metric.update(["D"], ["A"], language="en", item_index=[0])
    with pytest.raises(ValueError, match="below num_items=5"):
        metric.update(["A"], ["A"], language="en", item_index=[5])
    with pytest.raises(ValueError, match="not one of this metric's languages"):
        metric.update(["A"], ["A"], language="fr", item_index=[0])
    with pytest.raises(ValueError, match="one gold option per prediction"):
        metric.update(["A", "B"], ["A"], language="en", item_index=[0, 1])
    with pytest.raises(ValueError, match="1 item indices"):
        metric.update(["A", "B"], ["A", "B"], language="en", item_index=[0])
    with pytest.raises(TypeError, match="integer tensor"):
        metric.update(["A"], ["A"], language="en", item_index=torch.tensor([0.0]))


# ---- published numbers: SeaEval's scorer on the pinned predictions ----------------------------------------


@pytest.mark.parametrize("name", VECTOR_FILES)
@pytest.mark.parametrize("subset", ["4_langs", "all_langs"])
def test_reproduces_published_scores(name: str, subset: str) -> None:
    data = _vector(name)
    languages = data["languages_4"] if subset == "4_langs" else data["languages_all"]
    pred, gold = _letters(data, languages, "pred_letter"), _letters(data, languages, "gold_letter")
    # SeaEval's accuracy compares full choice strings, consistency the 3-character tags. Every pinned
    # prediction is one of the item's choices, so comparing letters is the same thing here:
    for item in data["items"]:
        for language in languages:
            cell = item[language]
            assert cell["pred"] in cell["choices"]
            assert (cell["pred"] == cell["gold"]) == (cell["pred_letter"] == cell["gold_letter"])
    scores = consistency_scores(pred, gold)
    _assert_scores(scores, data["expected"][f"scorer_on_pinned_pred_{subset}"], languages)
    published = (
        "repo_score_file_all_langs" if subset == "all_langs" else "repo_score_file_restricted_to_4_langs"
    )
    _assert_scores(scores, data["expected"][published], languages)

    # The metric, fed in shuffled batches of mixed languages over two simulated ranks, gives the same.
    records = [
        (position, language, item[language]["pred"], item[language]["gold"])
        for position, item in enumerate(data["items"])
        for language in languages
    ]
    random.Random(name).shuffle(records)
    ranks = [CrossLingualConsistency(languages, num_items=data["n_items"], missing="error") for _ in range(2)]
    _feed(ranks[0], records[: len(records) // 3], batch=16)
    _feed(ranks[1], records[len(records) // 3 :], batch=16)
    ranks[0].merge_state(ranks[1])
    _assert_same(ranks[0].compute(), scores)


def test_matches_the_crossin_reference_score_table() -> None:
    """The 4-language numbers equal the p1 entries of reference_scores_seaeval_v0.1_4lang.json."""
    path = VECTORS.parent / "reference_scores_seaeval_v0.1_4lang.json"
    if not path.is_file():
        pytest.skip(f"CrossIn reference scores are absent: {path}")
    table = json.loads(path.read_text(encoding="utf-8"))
    checked = 0
    for name in VECTOR_FILES:
        data = _vector(name)
        entry = table.get(f"{data['dataset']}|{data['model']}")
        if entry is None:
            continue
        p1 = next(row for row in entry["per_prompt"] if row["p"] == 1)
        languages = data["languages_4"]
        scores = consistency_scores(
            _letters(data, languages, "pred_letter"), _letters(data, languages, "gold_letter")
        )
        assert scores["accuracy"] == pytest.approx(p1["acc"], abs=1e-6)
        for language in languages:
            assert scores[f"{language}/accuracy"] == pytest.approx(p1[f"acc_{language}"], abs=1e-6)
        for k in (2, 3, 4):
            assert scores[f"consistency_{k}"] == pytest.approx(p1[f"c{k}"], abs=1e-6)
            assert scores[f"ac3_{k}"] == pytest.approx(p1[f"ac3_{k}"], abs=1e-6)
        checked += 1
    assert checked == len(VECTOR_FILES)
