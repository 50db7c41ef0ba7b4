"""Editing metrics against a hand computation on a tiny model."""
import torch

from helpers import EditRequest, editing_metrics

REQ = EditRequest(prompt="The mother tongue of Danielle Darrieux is", subject="Danielle Darrieux",
                  target_new="English language", ground_truth="French", rephrase="Danielle Darrieux speaks",
                  locality_prompt="The capital of France is", locality_answer="Paris city",
                  portability_prompt="Danielle Darrieux's first language is spoken in", portability_answer="England",
                  case_id=7)


def _token_accuracy(model, tok, prompt, answer):
    p = tok(prompt).input_ids
    a = tok(" " + answer, add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = model(torch.tensor([p + a])).logits[0]
    pred = logits[len(p) - 1: len(p) - 1 + len(a)].argmax(-1).tolist()
    return sum(x == y for x, y in zip(pred, a)) / len(a), pred


def test_metrics_are_teacher_forced_token_accuracies(tiny_model):
    model, tok = tiny_model
    df = editing_metrics(model, tok, [REQ])
    row = df.iloc[0]
    assert row.case_id == 7
    assert row.reliability == _token_accuracy(model, tok, REQ.prompt, REQ.target_new)[0]
    assert row.generalization == _token_accuracy(model, tok, REQ.rephrase, REQ.target_new)[0]
    assert row.portability == _token_accuracy(model, tok, REQ.portability_prompt, REQ.portability_answer)[0]
    assert row.loc_argmax == _token_accuracy(model, tok, REQ.locality_prompt, REQ.locality_answer)[1]
    assert row.locality != row.locality  # NaN without a reference


def test_locality_counts_unchanged_argmax_positions(tiny_model):
    model, tok = tiny_model
    ref = editing_metrics(model, tok, [REQ])
    assert editing_metrics(model, tok, [REQ], reference=ref).iloc[0].locality == 1.0
    changed = ref.copy()
    argmax = list(changed.at[0, "loc_argmax"])
    argmax[0] = argmax[0] + 1  # one of the answer's positions now "differs" from before
    changed.at[0, "loc_argmax"] = argmax
    n = len(argmax)
    assert editing_metrics(model, tok, [REQ], reference=changed).iloc[0].locality == (n - 1) / n
