import pytest

from helpers import TASKS, get_task
from helpers.evaluation.tasks import Example, Prompt, Reply


def ex(task, **fields):
    return Example(task, 0, fields)


def test_eight_tasks_in_the_papers_order():
    assert TASKS == ("reasoning", "nli", "open_qa", "closed_qa", "dialogue", "summarization", "ner", "sentiment")


def test_prompts_follow_table_2_and_the_released_strings():
    s = get_task("sentiment")
    e = ex("sentiment", text="great film", positive=True)
    assert s.prompts(e, "paper")[0].text == (
        "For each snippet of text, label the sentiment of the text as positive or negative. The answer "
        "should be exact 'positive' or 'negative'. text: great film answer:")
    assert s.prompts(e, "released")[0].text.startswith("For each snippet of text,label the sentiment")
    d = get_task("dialogue")
    e = ex("dialogue", article="m : hi", options=["a", "b", "c", "d"], answer=2)
    assert d.prompts(e, "paper")[0].text == (
        "Q: m : hi Which choice is correct? Answer Choices: (A)a (B)b (C)c (D)d A: Among A through D, the answer is")
    assert "Answer Chioces: (A)a(B)b(C)c(D)d" in d.prompts(e, "released")[0].text
    r = get_task("reasoning")
    e = ex("reasoning", question="2+2?", rationale="2+2=4\n", gold="4")
    assert r.prompts(e, "paper")[0].text == "Q: 2+2? A: Let's think step by step. 2+2=4 Therefore, the answer (arabic numerals) is:"
    assert r.prompts(e, "released")[0].text == "Q: 2+2? A:Let's think step by step. 2+2=4\n Therefore, the answer (arabic numerals) is:"
    assert "step by step. Therefore" in r.prompts(e, "paper", hint=False)[0].text
    assert r.prompts(e, "paper")[0].gold_text == " 4"


def test_ner_asks_four_questions_with_gold_entities():
    t = get_task("ner")
    words = ("Peter", "Blackburn", "visited", "Bonn", ",", "Germany", ".")
    tags = ("B-PER", "I-PER", "O", "B-LOC", "O", "B-LOC", "O")
    e = ex("ner", words=words, tags=tags, text=t.sentence_text(words))
    ps = t.prompts(e, "paper")
    assert [p.kind for p in ps] == ["PER", "LOC", "ORG", "MISC"]
    assert ps[1].text == "Please identify Location Entity from the given text. Text: Peter Blackburn visited Bonn, Germany. Entity:"
    assert ps[1].target == ["Bonn", "Germany"] and ps[1].gold_text == " Bonn, Germany"
    assert ps[2].target == [] and ps[2].gold_text is None
    # paper: micro F1 over the 4 prompts; gold: 1 PER + 2 LOC = 3
    outs = [" Peter Blackburn", " Bonn, Paris", " None", " Germans"]
    # tp = 1 + 1 = 2, predicted = 1 + 2 + 0 + 1 = 4, gold = 3 -> F1 = 4/7
    assert t.score(ps, [Reply(o) for o in outs], "paper")[0] == pytest.approx(4 / 7)
    # released: per type, gold found as substrings: PER 1/1, LOC 1/2; ORG and MISC have no gold and
    # a non-empty output: ORG counts nothing, MISC counts one miss -> mean(1, 0.5, 0) = 0.5
    rel = t.prompts(e, "released")
    assert t.score(rel, [Reply(o, p.text + o) for p, o in zip(rel, outs)], "released")[0] == pytest.approx(0.5)


def test_a_perfect_ner_answer_scores_one():
    t = get_task("ner")
    words = ("The", "U.S.", "and", "Acme", "Inc.", "met", ".")
    tags = ("O", "B-LOC", "O", "B-ORG", "I-ORG", "O", "O")
    ps = t.prompts(ex("ner", words=words, tags=tags, text=t.sentence_text(words)), "paper")
    outs = [p.gold_text or " None" for p in ps]
    assert t.score(ps, [Reply(o) for o in outs], "paper") == (1.0, 1.0)


@pytest.mark.parametrize("out,paper_label,released_hit", [
    (" True", 0, True), (" false.", 1, False), (" untrue", None, True), ("(", None, False), (" TRUE", 0, True),
])
def test_classification_parsing(out, paper_label, released_hit):
    t = get_task("nli")
    assert t.parse_paper(out) == paper_label
    p = Prompt(ex("nli"), "a entails the b. True or False? answer:", " true", 0)
    assert t.score([p], [Reply(out, p.text + out)], "released")[0] == float(released_hit)


def test_classification_scores_invalid_as_wrong_and_reports_valid_rate():
    t = get_task("sentiment")
    ps = [Prompt(ex("sentiment"), "", None, i % 2) for i in range(4)]
    acc, valid = t.score(ps, [Reply(o) for o in [" positive", " positive", " neutral", " negative"]], "paper")
    assert acc == 0.5 and valid == 0.75


def test_dialogue_letters():
    t = get_task("dialogue")
    assert [t.parse_paper(o) for o in [" A", "(", " B)", " Among", "C"]] == [0, None, 1, None, 2]
    p = Prompt(ex("dialogue"), "A: Among A through D, the answer is", " B", 1)
    assert t.score([p, p], [Reply(o, p.text + o) for o in [" B", " b"]], "released") == (0.5, 0.5)  # case-sensitive


def test_reasoning_paper_vs_released():
    t = get_task("reasoning")
    p = Prompt(ex("reasoning"), "Therefore, the answer (arabic numerals) is:", " 18", "18")
    assert t.score([p], [Reply(" 180")], "paper")[0] == 0.0
    assert t.score([p], [Reply(" 180", p.text + " 180")], "released")[0] == 1.0  # substring
    assert t.score([p], [Reply(" $18.")], "paper") == (1.0, 1.0)


def test_open_qa_paper_vs_released():
    t = get_task("open_qa")
    p = Prompt(ex("open_qa"), "Passage: x Question: y", " Paris", ["Paris"])
    assert t.score([p], [Reply("\nAnswer: Paris.\nMore text")], "paper")[0] == 1.0
    assert t.score([p], [Reply(" It is Paris, I think")], "paper")[0] == 0.0
    assert t.score([p], [Reply(" It is Paris, I think", p.text + " It is Paris, I think")], "released")[0] == 1.0
    assert t.metric_name("released") == "script_match"
