"""SQuAD exact match and F1, hand-computed: articles (English only), punctuation, scripts, multiple golds."""

from __future__ import annotations

import unicodedata

import pytest

from adamergex_pl.metrics.squad import answer_tokens, exact_match, f1_score, normalize_answer, squad_scores


def test_english_articles_are_removed_for_english_only() -> None:
    assert exact_match("The Eiffel Tower", "Eiffel Tower", "en") == 1.0
    assert exact_match("the Eiffel tower", "Eiffel Tower", "English") == 1.0  # name and code alike
    # In French "the" is not an article: it stays, so tokens {the, eiffel, tower} vs {eiffel, tower}:
    # P = 2/3, R = 2/2, F1 = 2·(2/3)·1/(2/3 + 1) = 0.8.
    assert exact_match("The Eiffel Tower", "Eiffel Tower", "fr") == 0.0
    assert f1_score("The Eiffel Tower", "Eiffel Tower", "fr") == pytest.approx(0.8)
    # Spanish "el" is not removed either: {el, gato} vs {gato}: P = 1/2, R = 1, F1 = 2/3.
    assert f1_score("el gato", "gato", "es") == pytest.approx(2 / 3)
    # Only whole tokens are articles: "another" and "theater" survive.
    assert normalize_answer("An another theater", "en") == "another theater"


def test_punctuation_including_unicode_is_deleted() -> None:
    assert exact_match("Paris!", "paris", "en") == 1.0
    assert exact_match("«Paris»", "Paris", "fr") == 1.0  # guillemets are Unicode punctuation (Pi/Pf)
    assert exact_match("“¿Madrid?”", "madrid", "es") == 1.0
    assert exact_match("（北京）。", "北京", "zh") == 1.0  # full-width parentheses, ideographic full stop
    assert exact_match("$5", "5", "en") == 1.0  # ASCII symbols, as in string.punctuation
    assert exact_match("€5", "5", "de") == 1.0  # and their Unicode generalisation (category S*)
    # Deleting (not replacing by a space) joins hyphenated words, as the SQuAD definition does.
    assert normalize_answer("Saint-Denis", "fr") == "saintdenis"


def test_multiple_golds_take_the_maximum() -> None:
    golds = ["Obama", "President Barack Obama"]
    # vs "Obama": P = 1/2, R = 1/1 -> F1 = 2/3; vs "President Barack Obama": P = 2/2, R = 2/3 -> F1 = 0.8.
    assert squad_scores("Barack Obama", golds, "en") == (0.0, pytest.approx(0.8))
    assert squad_scores("obama", golds, "en") == (1.0, 1.0)


def test_f1_counts_tokens_as_a_multiset() -> None:
    # {a: 2, b: 1} vs {a: 1, b: 2}: common = min(2,1) + min(1,2) = 2, P = R = 2/3, F1 = 2/3.
    # (Spanish, so "a" is not an article.)
    assert f1_score("a a b", "a b b", "es") == pytest.approx(2 / 3)
    assert f1_score("x y", "z", "fr") == 0.0


def test_scripts_without_spaces_are_scored_per_character() -> None:
    assert answer_tokens("北京大学", "zh") == ["北", "京", "大", "学"]
    assert exact_match("北京 大学", "北京大学", "zh") == 1.0  # spaces between characters do not matter
    # 北京大学 vs 北京: P = 2/4, R = 2/2, F1 = 2·0.5·1/1.5 = 2/3.
    assert f1_score("北京大学", "北京", "zh") == pytest.approx(2 / 3)
    # Mixed scripts: "2008" stays one token, Han characters are one each.
    # Pred 2008 年 北 京 奥 运 会 (7) vs gold 北 京 奥 运 会 (5): P = 5/7, R = 1, F1 = 10/12.
    assert f1_score("2008年北京奥运会", "北京奥运会", "zh") == pytest.approx(10 / 12)
    # Thai by code point: กรุงเทพ = ก ร ุ ง เ ท พ (7), กรุง = ก ร ุ ง (4): P = 4/7, R = 1, F1 = 8/11.
    assert f1_score("กรุงเทพ", "กรุง", "th") == pytest.approx(8 / 11)
    # Japanese kana and kanji.
    assert f1_score("東京タワー", "東京", "ja") == pytest.approx(2 * (2 / 5) / (2 / 5 + 1))


def test_unicode_normalisation_and_case() -> None:
    composed = "Hà Nội"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert exact_match(decomposed, composed, "vi") == 1.0
    assert exact_match("ＡＢＣ", "abc", "en") == 1.0  # full-width Latin (NFKC)
    assert exact_match("STRASSE", "straße", "de") == 1.0  # case folding


def test_empty_answers() -> None:
    # Both normalise to nothing: EM = F1 = 1 (the SQuAD convention); one empty: 0.
    assert squad_scores("", "the", "en") == (1.0, 1.0)
    assert squad_scores("", "Paris", "en") == (0.0, 0.0)
    assert squad_scores("!!", "Paris", "en") == (0.0, 0.0)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="not a known language"):
        exact_match("a", "a", "klingon")
    with pytest.raises(ValueError, match="at least one gold answer"):
        exact_match("a", [], "en")
    with pytest.raises(TypeError, match="must be a string"):
        exact_match("a", ["a", 3], "en")  # type: ignore[list-item]
    with pytest.raises(TypeError, match="expected a string"):
        exact_match(None, "a", "en")  # type: ignore[arg-type]
