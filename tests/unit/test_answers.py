import math

import pytest

from helpers.evaluation import answers as tm


def test_normalize_answer_squad_rules():
    assert tm.normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert tm.normalize_answer("an Apple a day") == "apple day"


def test_exact_and_span_match():
    assert tm.exact_match("the Beatles.", ["Beatles"])
    assert not tm.exact_match("The Beatles were great", ["Beatles"])
    assert tm.span_match("I think the Beatles were great", ["beatles were"])
    assert not tm.span_match("I think", ["beatles"])
    assert not tm.span_match("anything", [""])


def test_number_match_reads_commas_and_decimals():
    assert tm.number_match(" 1,250 dollars", "1250")
    assert tm.number_match("it is 3.50", "3.5")
    assert not tm.number_match("about 180 eggs", "18")
    assert tm.numbers_in("-4 and 7") == [-4.0, 7.0]


def test_iob1_entities_start_at_i_and_split_on_type_change():
    words = ["Phil", "Simmons", "of", "West", "Indian", "cricket", "Leicestershire", "Foxes"]
    tags = ["I-PER", "I-PER", "O", "I-MISC", "I-MISC", "O", "B-ORG", "I-ORG"]
    assert tm.entities_iob1(words, tags) == [("PER", "Phil Simmons"), ("MISC", "West Indian"), ("ORG", "Leicestershire Foxes")]
    # B- after I- of the same type starts a new entity
    assert tm.entities_iob1(["A", "B"], ["I-LOC", "B-LOC"]) == [("LOC", "A"), ("LOC", "B")]


def test_released_entities_merge_and_miss_like_the_authors_code():
    words = ["John", "Smith", "Paris", "said", "Bob", "x", "Rome"]
    tags = ["B-PER", "I-PER", "B-LOC", "O", "I-PER", "O", "B-LOC"]
    ents = tm.entities_released(words, tags)
    # the PER entity runs to the next O, swallowing the location; I-PER 'Bob' is missed;
    # the LOC scan starts its own entity at 'Paris'; 'Rome' at the end has no O after it and
    # the scan stops before the last word, giving an empty entity
    assert ("PER", "John Smith Paris") in ents
    assert ("LOC", "Paris") in ents
    assert ("LOC", "") in ents
    assert not any(text == "Bob" for _, text in ents)


def test_released_entity_hits():
    assert tm.released_entity_hits(["Paris", "Rome"], " Paris and rome", "LOC") == (1, 2)
    assert tm.released_entity_hits([], "", "PER") == (1, 1)
    assert tm.released_entity_hits([], "x", "PER") == (0, 0)
    assert tm.released_entity_hits([], "x", "MISC") == (0, 1)


def test_entity_f1_on_hand_made_counts():
    assert tm.parse_entity_list(" Paris, Rome; none\nText: more") == {"Paris", "Rome"}
    c1 = tm.f1_counts({"Paris", "Rome"}, {"paris"})  # tp 1, pred 2, gold 1
    c2 = tm.f1_counts(set(), {"Bob"})                # tp 0, pred 0, gold 1
    assert c1 == (1, 2, 1) and c2 == (0, 0, 1)
    # P = 1/2, R = 1/2 -> F1 = 0.5
    assert tm.micro_f1([c1, c2]) == pytest.approx(0.5)
    assert tm.micro_f1([(0, 0, 0)]) == 1.0


def test_rouge_identical_and_disjoint():
    assert tm.rouge_mean("a cat sat", "a cat sat") == pytest.approx(1.0)
    assert tm.rouge_mean("dog", "a cat sat") == 0.0
    # unigram overlap 2/3 both ways, bigram 1/2, LCS 2/3
    assert tm.rouge_mean("a cat ran", "a cat sat") == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)


def test_rouge_released_package_and_short_outputs():
    assert tm.rouge_mean_released("a cat sat", "a cat sat") == pytest.approx(1.0, abs=1e-6)
    assert tm.rouge_mean_released(" ", "a cat sat") == 0.0
    assert tm.rouge_mean_released("x", "a cat sat") == 0.0
    assert not math.isnan(tm.rouge_mean_released("...", "a cat sat"))
