"""Perplexity on the held-out text, window by window, against a direct computation."""
import math

import torch

from helpers.evaluation.perplexity import heldout_records, heldout_text, perplexity


def test_windows_cover_the_text_and_their_nll_is_the_models(tiny_model):
    model, tok = tiny_model
    text = heldout_text()
    ids = tok(text, add_special_tokens=False).input_ids
    records = heldout_records(model, tok, window=50)
    windows = [ids[i:i + 50] for i in range(0, len(ids), 50) if len(ids[i:i + 50]) > 1]
    assert len(records) == len(windows) and records.tokens.tolist() == [len(w) - 1 for w in windows]
    # the second window, scored directly: each token after its first, given the ones before it in the window
    window = torch.tensor([ids[50:100]])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=window).logits[0, :-1].float(), -1)
    nll = -logp.gather(1, window[0, 1:, None]).sum()
    assert abs(float(records.nll_sum[1]) - float(nll)) < 1e-3 * float(nll)
    assert perplexity(records) == math.exp(records.nll_sum.sum() / records.tokens.sum())
    assert "Four score and seven years ago" in text  # the shipped text, read from the package
