"""Real DDP sync: two gloo processes, sharded and padded like DistributedSampler, one rank idle.

Each rank updates its shard; ``compute()`` then syncs through ``torch.distributed`` exactly as under Lightning
DDP. Both ranks must report the single-process numbers. The idle-rank case guards the typed empty records of
``CrossLingualConsistency``: without them torchmetrics gathers a float32 placeholder next to int64 records and
gloo aborts the process.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from adamergex_pl.metrics.consistency import CrossLingualConsistency, consistency_scores
from adamergex_pl.metrics.item_scores import ItemScoreMetric
from adamergex_pl.metrics.squad import SquadMetric

LANGUAGES = ["en", "zh", "vi", "es"]
NUM_ITEMS = 23
WORLD = 2


def _records() -> list[tuple[int, str, str | None, str]]:
    rng = random.Random(7)
    gold = [rng.choice("ABCD") for _ in range(NUM_ITEMS)]
    records = [
        (item, language, rng.choice(["A", "B", "C", "D", gold[item], None]), gold[item])
        for item in range(NUM_ITEMS)
        for language in LANGUAGES
    ]
    rng.shuffle(records)
    return records


def _qa() -> list[tuple[str, str, str]]:
    return [
        ("The Eiffel Tower", "Eiffel Tower", "en"),
        ("Barack Obama", "Obama", "en"),
        ("北京大学", "北京", "zh"),
        ("二〇二〇年", "2020年", "zh"),
        ("Paris", "Lyon", "en"),
        ("上海", "上海市", "zh"),
    ]  # an even count: DistributedSampler padding would repeat a row, and sums cannot tell repeats apart


def _shard(rows: list, rank: int) -> list:
    """DistributedSampler without shuffling: pad with the first rows to a multiple of WORLD, then stride."""
    padded = rows + rows[: (-len(rows)) % WORLD]
    return padded[rank::WORLD]


def _update_consistency(metric: CrossLingualConsistency, rows: list) -> None:
    for start in range(0, len(rows), 6):
        chunk = rows[start : start + 6]
        metric.update(
            [pred for _, _, pred, _ in chunk],
            [gold for *_, gold in chunk],
            language=[language for _, language, _, _ in chunk],
            item_index=[item for item, *_ in chunk],
        )


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        records = _records()
        sharded = CrossLingualConsistency(LANGUAGES, num_items=NUM_ITEMS)
        _update_consistency(sharded, _shard(records, rank))
        idle = CrossLingualConsistency(LANGUAGES)  # rank 1 records nothing at all
        if rank == 0:
            _update_consistency(idle, records)
        squad = SquadMetric(["en", "zh"])
        for pred, gold, language in _shard(_qa(), rank):
            squad.update([pred], [gold], language=language)
        results = {
            name: {key: float(value) for key, value in metric.compute().items()}
            for name, metric in (("sharded", sharded), ("idle", idle), ("squad", squad))
        }
        items, idle_items = ItemScoreMetric(["en", "zh"], ["em", "f1"]), ItemScoreMetric(["en", "zh"], ["em"])
        for item, (pred, gold, language) in _shard(list(enumerate(_qa())), rank):  # padded: a repeat
            items.update(
                language, [item], [SquadMetric(["en", "zh"]).score_items([pred], [gold], language)[0]]
            )
        if rank == 0:
            idle_items.update("zh", [5, 2], [[1.0], [0.0]])  # rank 1 records nothing
        results["items"] = {
            name: {
                lang: [ids.tolist(), scores.tolist()] for lang, (ids, scores) in metric.per_language().items()
            }
            for name, metric in (("sharded", items), ("idle", idle_items))
        }
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available in this build")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_two_gloo_processes_equal_one_process(tmp_path: Path) -> None:
    # fork: the children inherit the imported modules (0.3 s, against 6-12 s for spawn's new interpreters);
    # safe here because the tests run CPU-only with OMP_NUM_THREADS=1 (conftest).
    start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    context = mp.start_processes(
        _worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=False, start_method=start_method
    )
    deadline = time.monotonic() + 60
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the 2-process gloo run did not finish within 60 s")

    records = _records()
    pred = {language: [None] * NUM_ITEMS for language in LANGUAGES}
    gold = {language: [None] * NUM_ITEMS for language in LANGUAGES}
    for item, language, one_pred, one_gold in records:
        pred[language][item], gold[language][item] = one_pred, one_gold
    expected_consistency = consistency_scores(pred, gold)
    single_squad = SquadMetric(["en", "zh"])
    for one_pred, one_gold, language in _qa():
        single_squad.update([one_pred], [one_gold], language=language)
    expected_squad = {key: float(value) for key, value in single_squad.compute().items()}

    for rank in range(WORLD):
        results = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for name, expected in (
            ("sharded", expected_consistency),
            ("idle", expected_consistency),
            ("squad", expected_squad),
        ):
            assert results[name].keys() == expected.keys(), (rank, name)
            for key, value in expected.items():
                assert results[name][key] == pytest.approx(value, abs=1e-12), (rank, name, key)
    assert torch.tensor(expected_consistency["consistency_2"]).isfinite()
    squad = SquadMetric(["en", "zh"])
    expected_items = {"en": [[], []], "zh": [[], []]}
    for item, (one_pred, one_gold, language) in enumerate(_qa()):
        expected_items[language][0].append(item)
        expected_items[language][1].append(list(squad.score_items([one_pred], [one_gold], language)[0]))
    for rank in range(WORLD):  # every item once, on every rank, also with one rank idle
        items = json.loads((tmp_path / f"rank{rank}.json").read_text())["items"]
        assert items["sharded"].keys() == expected_items.keys(), rank
        for language, (ids, scores) in expected_items.items():  # fixed-point records: within 1e-12
            assert items["sharded"][language][0] == ids, (rank, language)
            assert items["sharded"][language][1] == [pytest.approx(row, abs=1e-12) for row in scores]
        assert items["idle"] == {"zh": [[2, 5], [[0.0], [1.0]]]}, rank
