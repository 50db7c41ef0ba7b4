import pytest

from helpers.evaluation import answers as tm


def test_normalize_answer_squad_rules():
    assert tm.normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert tm.normalize_answer("an Apple a day") == "apple day"


def test_exact_and_span_match():
    assert tm.exact_match("the Beatles.", ["Beatles"])
    assert not tm.exact_match("The Beatles were great", ["Beatles"])
    assert tm.span_match("I think the Beatles were great", ["beatles were"])  # the lenient open-QA rule
    assert not tm.span_match("I think", ["beatles"])
    assert not tm.span_match("anything", [""])


def test_number_match_reads_commas_and_decimals():
    assert tm.number_match(" 1,250 dollars", "1250")
    assert tm.number_match("it is 3.50", "3.5")
    assert not tm.number_match("about 180 eggs", "18")
    assert tm.numbers_in("-4 and 7") == [-4.0, 7.0]


def test_entities_run_from_b_over_i_of_the_same_type():
    words = ["Phil", "Simmons", "of", "West", "Indian", "cricket", "Leicestershire", "Foxes"]
    tags = ["B-PER", "I-PER", "O", "B-MISC", "I-MISC", "O", "B-ORG", "I-ORG"]
    assert tm.entities(words, tags) == [("PER", "Phil Simmons"), ("MISC", "West Indian"), ("ORG", "Leicestershire Foxes")]
    # B- after B- of the same type starts a new entity; a stray I- (absent from the data) starts one too
    assert tm.entities(["A", "B", "C"], ["B-LOC", "B-LOC", "I-PER"]) == [("LOC", "A"), ("LOC", "B"), ("PER", "C")]


def test_gold_and_listed_entities_are_normalised_alike():
    # the model's "U.S." loses its final period when parsed; the gold "U.S." must match it
    assert tm.entity_key("U.S.") == tm.entity_key(" u.s ") == "u.s"
    listed = tm.parse_entity_list(" U.S., Acme Inc., \"Bob\"")
    assert tm.f1_counts(listed, {"U.S.", "Acme Inc.", "Bob"}) == (3, 3, 3)
    # CoNLL's spacing before "." and ","; a name with a comma listed as its parts
    assert tm.f1_counts({"Salomon Bros"}, {"Salomon Bros ."}) == (1, 1, 1)
    assert tm.f1_counts(tm.parse_entity_list(" Bodman, Longely & Dahling, IBM"), {"Bodman , Longely & Dahling"}) == (1, 2, 1)


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
