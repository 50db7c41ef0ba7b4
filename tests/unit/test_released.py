"""The released protocol against replays of the authors' scripts.

Each ``script_*`` function below is written here, from what the scripts in the authors' repository
(``test-task-code/*.py``, ``test-task-after-code/*-after.py``) do with the decoded sequence: cut
the answer at a marker, then count. The package's scorer must give the same number on hand-made
transcripts — prompt (after one end token, the scripts' left padding) + new text (+ the end token
when generation stopped).
"""
import pytest
from rouge import Rouge

from helpers import get_task
from helpers.evaluation import released
from helpers.evaluation.answers import normalize_answer
from helpers.evaluation.tasks import Example, Prompt, Reply

END = "<|endoftext|>"


def said(prompt: str, new: str, stopped: bool = True) -> str:
    return END + prompt + new + (END if stopped else "")


def replies(prompts, news, stopped=True):
    return [Reply(n, said(p.text, n, stopped)) for p, n in zip(prompts, news)]


def ex(task, **fields):
    return Example(task, 0, fields)


# ------------------------------------------------------------------ replays of the scripts
def script_open_qa(transcripts, golds):
    """test-OpenDomainQA.py: one running count, one flag for the whole file."""
    total, flag = 0, False
    for text, gold in zip(transcripts, golds):
        words = normalize_answer(text.split("Answer:")[-1].replace("\n", " ")).split(" ")
        hit = lambda w: any(normalize_answer(w) == normalize_answer(g) for g in gold)  # noqa: E731
        if hit(words[0]) or hit(words[-1]):
            total += 1
            continue
        i = 0
        while i < len(words) - 1:
            if hit(words[i]):
                total += 1
                i += 1
                continue
            joined = words[i]
            for w in words[i + 1:]:
                joined += " " + w
                if hit(joined):
                    total += 1
                    flag = True
                    break
            if flag:
                break
            i += 1
    return total


def script_summary(transcript, summary):
    predict = transcript.split("DR:")[-1][0:-13]
    if len(predict) <= 1:
        return 0.0
    s = Rouge().get_scores(predict, summary)[0]
    return (s["rouge-1"]["f"] + s["rouge-2"]["f"] + s["rouge-l"]["f"]) / 3


def script_boolq(transcript, answer, after):
    predict = transcript.split("answer:")[1].lower()
    if after:
        return ("yes" in predict and answer) or ("no" in predict and not answer)
    return predict == (" yes" if answer else " no")


def script_nli(transcript, label):
    predict = transcript.split("answer:")[-1].lower()
    return ("false" if "not_entailment" in label else "true") in predict


# ------------------------------------------------------------------------------ tests
def test_open_qa_counts_the_passage_and_carries_its_flag():
    t = get_task("open_qa")
    # a two-word gold in the passage sets the flag; afterwards a gold in the passage no longer
    # counts, but one that ends the generation (no end token after it) still does
    a = ex("open_qa", passage="He moved to New York in May.", question="where did he move", answers=["New York"])
    b = ex("open_qa", passage="Paris is in France.", question="capital of France", answers=["Paris"])
    c = ex("open_qa", passage="It was red.", question="what colour", answers=["red"])
    prompts = [t.prompts(e, "released")[0] for e in (a, b, c)]
    news = [" New York", " Paris", " It was red"]
    cases = [
        (prompts, replies(prompts, news)),                                  # flag set by a
        (prompts[1:], replies(prompts[1:], news[1:])),                      # b first: no flag yet
        (prompts, [Reply(n, said(p.text, n, stopped=False)) for p, n in zip(prompts, news)]),  # last words
        (prompts, replies(prompts, ["", "", ""])),                          # an empty answer
    ]
    for ps, rs in cases:
        value, _ = t.score(ps, rs, "released")
        assert value * len(ps) == script_open_qa([r.transcript for r in rs], [p.target for p in ps])
    # the cases differ: the flag and the glued end token matter
    counts = [released.open_qa([r.transcript for r in rs], [p.target for p in ps]) for ps, rs in cases]
    assert counts[0] == [1, 0, 0] and counts[1] == [1, 1] and counts[2] == [1, 1, 1] and counts[3] == [1, 0, 0]


def test_open_qa_can_count_an_example_twice():
    t = get_task("open_qa")
    e = ex("open_qa", passage="Rome, then Rome again.", question="which city", answers=["Rome"])
    p = t.prompts(e, "released")[0]
    rs = replies([p], [""])
    assert script_open_qa([rs[0].transcript], [p.target]) == 2
    assert t.score([p], rs, "released")[0] == 2.0


@pytest.mark.parametrize("new,stopped", [
    (" Amanda will call Tom later today about the party and the cake, she says.", False),  # 25 tokens: real text cut
    (" Amanda will call Tom.", True),
    ("", True),
    (" ok", True),
])
def test_summarization_cuts_13_characters_like_the_script(new, stopped):
    t = get_task("summarization")
    e = ex("summarization", dialogue="Amanda: I'll call Tom.", summary="Amanda will call Tom.")
    p = t.prompts(e, "released")[0]
    r = Reply(new, said(p.text, new, stopped))
    assert t.score([p], [r], "released")[0] == pytest.approx(script_summary(r.transcript, p.target))


def test_summarization_cut_removes_real_text_when_no_end_token():
    predict_full = " Amanda will call Tom."
    score_cut = released.summarization(said("x\nTL;DR:", predict_full, stopped=False), "Amanda will call Tom.")[0]
    score_end = released.summarization(said("x\nTL;DR:", predict_full, stopped=True), "Amanda will call Tom.")[0]
    assert score_end == pytest.approx(1.0, abs=1e-6) and score_cut < 0.9


@pytest.mark.parametrize("after", [False, True])
@pytest.mark.parametrize("new", [" yes", " no", " Yes", " not", " now", " know", " maybe", "", " yesno"])
@pytest.mark.parametrize("answer", [True, False])
def test_boolq_before_and_after_edit_like_the_scripts(after, new, answer):
    t = get_task("closed_qa")
    e = ex("closed_qa", passage="The answer: is in the passage.", question="is it", answer=answer)
    p = t.prompts(e, "released")[0]
    r = Reply(new, said(p.text, new, stopped=new == ""))
    value, _ = t.score([p], [r], "released", after_edit=after)
    # the passage's own "answer:" comes first: the script reads from there
    assert value == float(script_boolq(r.transcript, answer, after))


def test_boolq_reads_the_answer_as_the_scripts_did():
    t = get_task("closed_qa")
    e = ex("closed_qa", passage="A short passage.", question="is it", answer=False)
    p = t.prompts(e, "released")[0]
    assert t.score([p], replies([p], [" now"]), "released", after_edit=False) == (0.0, 0.0)  # not exactly " no"
    assert t.score([p], replies([p], [" now"]), "released", after_edit=True) == (1.0, 1.0)   # contains "no"


@pytest.mark.parametrize("new", [" True", " false", " untrue", " (", ""])
@pytest.mark.parametrize("label", ["entailment", "not_entailment"])
def test_nli_like_the_script(new, label):
    t = get_task("nli")
    e = ex("nli", s1="It rained.", s2="ground is wet", entails=label == "entailment")
    p = t.prompts(e, "released")[0]
    r = Reply(new, said(p.text, new, stopped=new == ""))
    assert t.score([p], [r], "released")[0] == float(script_nli(r.transcript, label))


def test_dialogue_after_edit_rejects_chi():
    t = get_task("dialogue")
    e = ex("dialogue", article="m : hi", options=["a", "b", "c", "d"], answer=1)
    p = t.prompts(e, "released")[0]
    assert t.score([p], replies([p], [" B"]), "released") == (1.0, 1.0)
    assert t.score([p], replies([p], [" b"]), "released") == (0.0, 0.0)  # capital letters only
    assert t.score([p], replies([p], [" BChi"]), "released", after_edit=False) == (1.0, 1.0)
    assert t.score([p], replies([p], [" BChi"]), "released", after_edit=True) == (0.0, 0.0)


def test_reasoning_substring_after_the_marker():
    t = get_task("reasoning")
    p = Prompt(ex("reasoning"), "Q: 18 eggs? Therefore, the answer (arabic numerals) is:", " 18", "18")
    assert t.score([p], replies([p], [" 180"]), "released")[0] == 1.0  # substring
    assert t.score([p], replies([p], [" 7"]), "released")[0] == 0.0     # the 18 in the question is before the marker


def test_released_ner_never_rewards_an_empty_output():
    t = get_task("ner")
    words = ("Peter", "Blackburn", "visited", "Bonn", ".")
    tags = ("B-PER", "I-PER", "O", "B-LOC", "O")
    e = ex("ner", words=words, tags=tags, text=t.sentence_text(words))
    ps = t.prompts(e, "released")
    # the model stops at once: each answer is the end token alone
    value, valid = t.score(ps, replies(ps, ["", "", "", ""]), "released")
    # PER 0/1, LOC 0/1, ORG nothing counted, MISC one miss: mean(0, 0, 0) = 0
    assert value == 0.0 and valid == 0.0
    value, _ = t.score(ps, replies(ps, [" Peter Blackburn", " Bonn", " None", " None"]), "released")
    assert value == pytest.approx((1 + 1 + 0) / 3)


def test_released_ner_reads_entities_as_the_script():
    words = ["John", "Smith", "Paris", "said", "Bob", "x", "Rome"]
    tags = ["B-PER", "I-PER", "B-LOC", "O", "B-PER", "O", "B-LOC"]
    ents = released.entities(words, tags)
    # the PER entity runs to the next O, swallowing the location; the LOC scan starts its own
    # entity at 'Paris'; 'Rome' at the end has no O after it: the scan stops before the last
    # word, giving an empty entity, which every answer contains
    assert ("PER", "John Smith Paris") in ents and ("LOC", "Paris") in ents and ("PER", "Bob") in ents
    assert ("LOC", "") in ents
    assert released.ner("... Entity:" + END, [""], "LOC") == (1, 1)
    # the answer ends at a second "Entity:"
    assert released.ner("... Entity: Rome Entity: Paris", ["Paris"], "LOC") == (0, 1)


def test_ner_gold_nll_uses_the_papers_reading_under_both_protocols():
    t = get_task("ner")
    words = ("Rome", "Paris", "said")
    tags = ("B-LOC", "B-LOC", "O")
    e = ex("ner", words=words, tags=tags, text=t.sentence_text(words))
    paper, rel = t.prompts(e, "paper")[1], t.prompts(e, "released")[1]
    assert paper.gold_text == rel.gold_text == " Rome, Paris"
    assert paper.target == ["Rome", "Paris"] and rel.target == ["Rome Paris"]  # the script merges them


def test_transcripts_are_required_and_cleaned_up_as_transformers_4_30_did():
    t = get_task("nli")
    p = t.prompts(ex("nli", s1="a", s2="b", entails=True), "released")[0]
    with pytest.raises(ValueError, match="transcript"):
        t.score([p], [Reply(" true")], "released")
    assert released.clean_up_tokenization("he said , do n't go .") == "he said, don't go."
