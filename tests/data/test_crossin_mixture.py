"""CrossIn mixture composition: modes and variants, counts, tags, draws, determinism, validation split."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from adamergex_pl.errors import InvalidValueError
from data_modules import DataSource
from data_modules.crossin_mixture import (
    TRANSLATION_INSTRUCTION,
    CrossInMixture,
    ParallelInstructions,
    resolve_modes,
    variant_modes,
)

LANGS = ("en", "zh", "vi", "es")
PARALLEL = [DataSource(f"builtin:crossin/alpaca_{lang}.jsonl", language=lang) for lang in LANGS]
BASE = DataSource("builtin:crossin/base_en.jsonl")


def _mixture(**kwargs) -> CrossInMixture:
    kwargs.setdefault("parallel", PARALLEL)
    kwargs.setdefault("base", BASE)
    if "modes" not in kwargs:
        kwargs.setdefault("variant", "x2x+trans")
    return CrossInMixture(**kwargs)


def _synthetic(size: int = 50) -> ParallelInstructions:
    """In-memory parallel data whose text says which item and language it is."""
    return ParallelInstructions(
        {
            lang: [
                {
                    "instruction": f"I{i}-{lang}",
                    "input": f"N{i}-{lang}" if i % 2 else "",
                    "output": f"O{i}-{lang}",
                }
                for i in range(size)
            ]
            for lang in LANGS
        },
        list(range(size)),
    )


BASE_ROWS = [{"instruction": f"B{i}", "input": "", "output": f"b{i}"} for i in range(30)]


# ---- variants and modes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "modes"),
    [
        ("base", (0,)),
        ("en2x", (0, 1)),
        ("x2en", (0, 2)),
        ("x2x", (0, 1, 2)),
        ("x2x+trans", (0, 1, 2, 3)),
        ("X2X+Trans", (0, 1, 2, 3)),
        ("en2x + trans", (0, 1, 3)),
        ("base+trans", (0, 3)),
    ],
)
def test_variants_map_to_the_papers_modes(variant, modes):
    assert variant_modes(variant) == modes
    assert resolve_modes(variant, None) == modes
    assert resolve_modes(None, list(reversed(modes))) == modes


@pytest.mark.parametrize(
    ("variant", "modes", "message"),
    [
        ("x2x", [0, 1, 2], r"variant='x2x' and modes=\[0, 1, 2\] are both set; give one of them"),
        ("x2en", [0, 1], r"are both set"),
        (None, None, r"no CrossIn mixture chosen; set variant \(one of base, en2x, .*x2x\+trans\) or modes"),
        ("x2y", None, r"variant='x2y' is not a CrossIn variant; expected one of base, en2x, x2en, x2x"),
        ("trans", None, r"variant='trans' is not a CrossIn variant"),
        (None, [0, 4], r"modes=\[0, 4\] contains 4; every mode is one of 0 \(base\), 1 \(en2x\)"),
        (None, [1, 1], r"lists a mode twice"),
        (None, [], r"must be a non-empty list"),
    ],
)
def test_conflicting_or_unknown_mixtures_are_refused_with_the_fix(variant, modes, message):
    with pytest.raises(InvalidValueError, match=message):
        CrossInMixture(parallel=PARALLEL, base=BASE, variant=variant, modes=modes)


def test_missing_sources_and_bad_options_are_refused_at_construction():
    with pytest.raises(InvalidValueError, match=r"mode 0 \(base\) but no base source; set base"):
        CrossInMixture(parallel=PARALLEL, variant="x2x")
    with pytest.raises(InvalidValueError, match=r"cross-lingual modes \['en2x'\] but no parallel sources"):
        CrossInMixture(base=BASE, variant="en2x")
    with pytest.raises(InvalidValueError, match=r"n=0 must be a positive number of draws per mode, or 'all'"):
        _mixture(n=0)
    with pytest.raises(InvalidValueError, match=r"n='some'"):
        _mixture(n="some")
    with pytest.raises(InvalidValueError, match=r"language_tag='\[\{lang\}\]' names field\(s\) \['lang'\]"):
        _mixture(language_tag="[{lang}]")
    with pytest.raises(InvalidValueError, match=r"val_fraction=1.0 must be in \[0, 1\)"):
        _mixture(val_fraction=1.0)
    CrossInMixture(base=BASE, variant="base")  # the base variant needs no parallel data


# ---- counts, rows, tags ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("base", {"base": 30}),
        ("en2x", {"base": 30, "en2x": 40}),
        ("x2en", {"base": 30, "x2en": 40}),
        ("x2x", {"base": 30, "en2x": 40, "x2en": 40}),
        ("x2x+trans", {"base": 30, "en2x": 40, "x2en": 40, "trans": 40}),
    ],
)
def test_counts_per_mode(variant, expected):
    train, val = _mixture(variant=variant, n=40).compose(_synthetic(), BASE_ROWS)
    assert CrossInMixture.counts(train) == expected and val == []


def test_all_takes_every_item_once_per_mode():
    train, _ = _mixture(variant="x2en", n="ALL").compose(_synthetic(50), BASE_ROWS)
    x2en = [row for row in train if row["mode_name"] == "x2en"]
    assert sorted(row["index"] for row in x2en) == list(range(50))
    assert {row["language"] for row in x2en} == {"zh", "vi", "es"}


def test_row_contents_and_where_the_language_tag_goes():
    train, _ = _mixture(n=30).compose(_synthetic(), BASE_ROWS)
    assert train[:30] == [
        {"mode": 0, "mode_name": "base", "language": "en", "index": i, **BASE_ROWS[i]} for i in range(30)
    ]
    cross = train[30:]
    for en2x, x2en, trans in zip(cross[0::3], cross[1::3], cross[2::3], strict=True):
        i, x = en2x["index"], en2x["language"]
        assert x in ("zh", "vi", "es") and (x2en["index"], x2en["language"]) == (
            trans["index"],
            trans["language"],
        ) == (i, x)
        # en->x: English instruction, English input + "\n[x]" (the tag alone for an empty input), output in x
        assert en2x["instruction"] == f"I{i}-en" and en2x["output"] == f"O{i}-{x}"
        assert en2x["input"] == (f"N{i}-en\n[{x}]" if i % 2 else f"[{x}]")
        # x->en: instruction and input in x + "\n[en]", English output
        assert x2en["instruction"] == f"I{i}-{x}" and x2en["output"] == f"O{i}-en"
        assert x2en["input"] == (f"N{i}-{x}\n[en]" if i % 2 else "[en]")
        # translation: the x instruction in, the English instruction out, no tag
        assert trans == {
            **trans,
            "instruction": TRANSLATION_INSTRUCTION,
            "input": f"I{i}-{x}",
            "output": f"I{i}-en",
        }


def test_tag_format_and_no_tag():
    named, _ = _mixture(variant="en2x", n=5, language_tag="<{name}>").compose(_synthetic(), BASE_ROWS)
    names = {"zh": "Chinese", "vi": "Vietnamese", "es": "Spanish"}
    for row in named[30:]:
        assert row["input"].endswith(f"<{names[row['language']]}>")
    plain, _ = _mixture(variant="en2x", n=5, language_tag=None).compose(_synthetic(), BASE_ROWS)
    assert all(row["input"] == f"N{row['index']}-en" * (row["index"] % 2) for row in plain[30:])


def test_draws_are_uniform_over_languages_and_items_with_replacement():
    train, _ = _mixture(variant="en2x", n=3000).compose(_synthetic(50), BASE_ROWS)
    draws = [row for row in train if row["mode"] == 1]
    languages = Counter(row["language"] for row in draws)
    assert set(languages) == {"zh", "vi", "es"} and all(900 < c < 1100 for c in languages.values())
    items = Counter(row["index"] for row in draws)
    assert len(items) == 50 and max(items.values()) > 1  # with replacement, every item reached


# ---- determinism and the validation split ------------------------------------------------------------------


def test_deterministic_for_a_seed_and_different_for_another():
    first = _mixture(n=40, seed=0).build()
    assert _mixture(n=40, seed=0).build() == first
    other = _mixture(n=40, seed=1).build()
    assert [(r["language"], r["index"]) for r in other[0]] != [(r["language"], r["index"]) for r in first[0]]
    # the modes share their draws, so variants of one seed see the same items
    en2x = [(r["language"], r["index"]) for r in _mixture(variant="en2x", n=40).build()[0] if r["mode"]]
    x2en = [(r["language"], r["index"]) for r in _mixture(variant="x2en", n=40).build()[0] if r["mode"]]
    assert en2x == x2en


def test_seed_zero_draws_follow_the_documented_procedure():
    import random

    rng = random.Random(0)
    expected = []
    for _ in range(25):
        language = rng.choice(["zh", "vi", "es"])
        expected.append((language, rng.randrange(20)))
    train, _ = _mixture(variant="en2x", n=25).build()
    assert [(r["language"], r["index"]) for r in train if r["mode"] == 1] == expected


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_validation_items_never_appear_in_training(seed):
    mixture = _mixture(n=200, val_fraction=0.2, seed=seed)
    train, val = mixture.compose(_synthetic(50), BASE_ROWS)
    train_items = {r["index"] for r in train if r["mode"]}
    val_items = {r["index"] for r in val if r["mode"]}
    assert len(val_items) == 10 and not train_items & val_items
    assert len(train_items) == 40  # 200 draws with replacement over the 40 remaining items reach them all
    train_base = {r["index"] for r in train if not r["mode"]}
    val_base = {r["index"] for r in val if not r["mode"]}
    assert len(val_base) == 6 and not train_base & val_base and len(train_base | val_base) == 30
    assert CrossInMixture.counts(val) == {"base": 6, "en2x": 10, "x2en": 10, "trans": 10}
    # every text of a held-out item (in any language) is absent from training
    train_text = {r[f] for r in train for f in ("instruction", "input", "output")}
    assert not {f"I{i}-{lang}" for i in val_items for lang in LANGS} & train_text


# ---- parallel sources --------------------------------------------------------------------------------------


def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_alignment_by_position_or_by_key(tmp_path):
    en = [{"id": k, "instruction": f"E{k}", "output": f"e{k}"} for k in ("a", "b", "c")]
    zh = [{"id": k, "instruction": f"Z{k}", "input": None, "output": f"z{k}"} for k in ("c", "a")]
    sources = [DataSource(_write(tmp_path / "en.jsonl", en), language="English"),
               DataSource(_write(tmp_path / "zh.jsonl", zh), language="zh-CN")]  # fmt: skip
    with pytest.raises(
        InvalidValueError, match=r"different numbers of records \{'en': 3, 'zh': 2\}.*align_on: id"
    ):
        ParallelInstructions.load(sources)
    data = ParallelInstructions.load(sources, align_on="id")
    assert data.languages == ("en", "zh") and data.keys == ["a", "c"]
    assert data.record("zh", 1) == {"instruction": "Zc", "input": "", "output": "zc"}
    rows, _ = CrossInMixture(parallel=sources, modes=[1], n=3, align_on="id").build()
    assert all(r["input"] == "[zh]" and r["output"] == f"z{r['key']}" for r in rows)


def test_parallel_sources_must_name_their_language_and_include_english(tmp_path):
    path = _write(tmp_path / "zh.jsonl", [{"instruction": "x", "output": "y"}])
    with pytest.raises(InvalidValueError, match=r"has no language; give each parallel source its language"):
        ParallelInstructions.load([DataSource(path)])
    with pytest.raises(
        InvalidValueError, match=r"needs English and at least one other language.*got \['zh'\]"
    ):
        ParallelInstructions.load([DataSource(path, language="zh")])
    with pytest.raises(InvalidValueError, match=r"languages=\['en', 'fr'\] names \['fr'\]"):
        ParallelInstructions.load(PARALLEL, languages=["en", "fr"])
    with pytest.raises(InvalidValueError, match=r"language='Klingon' is not a known language"):
        ParallelInstructions.load([DataSource(path, language="Klingon")])
    bad = _write(tmp_path / "en.jsonl", [{"prompt": "x", "output": "y"}])
    with pytest.raises(InvalidValueError, match=r"lacks field\(s\) \['instruction'\]"):
        ParallelInstructions.load([DataSource(bad, language="en"), DataSource(path, language="zh")])


def test_languages_restrict_the_target_languages():
    train, _ = _mixture(variant="en2x", n=30, languages=["es", "en"]).build()
    assert {r["language"] for r in train if r["mode"]} == {"es"}
