import math
import time

import pytest
import torch

import helpers
from helpers import evaluate_tasks


@pytest.mark.model
def test_embedded_model_loads_from_cache_in_eval_mode(smollm2):
    model, tok = smollm2
    assert not model.training and model.dtype == torch.float32
    assert tok.pad_token_id == tok.eos_token_id == 2 and tok.padding_side == "left"
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    t = time.perf_counter()
    helpers.load_model()  # second load: from the safetensors cache
    assert time.perf_counter() - t < 10


@pytest.mark.model
def test_local_folder_loads(smollm2, tmp_path):
    from helpers.model.loading import embedded_folder

    model, tok = helpers.load_model(str(embedded_folder()))
    assert model.config.num_hidden_layers == 30


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("protocol", ["paper", "released"])
def test_evaluate_all_tasks_on_a_few_examples(smollm2, protocol):
    model, tok = smollm2
    df = evaluate_tasks(model, tok, n=3, seed=0, protocol=protocol, progress=False)
    assert list(df.task) == list(helpers.TASKS)
    assert (df.n == 3).all() and df.loc[df.task == "ner", "prompts"].item() == 12
    assert df.value.between(0, 1).all() and df.valid_rate.between(0, 1).all()
    assert (df.gold_nll > 0).all() and df.gold_nll.map(math.isfinite).all()
    classification = df.task.isin(["nli", "closed_qa", "dialogue", "sentiment"])
    assert df.loc[classification, "label_acc"].between(0, 1).all()
    assert df.loc[~classification, "label_acc"].isna().all()
    assert (df.prompt_tokens > 0).all() and (df.seconds > 0).all()


@pytest.mark.model
@pytest.mark.data
def test_gold_nll_sees_what_the_metric_cannot(smollm2):
    """Damage the model: the headline NLI accuracy is 0 before and after (the model never says
    true/false), but the gold answer's NLL rises."""
    model, tok = smollm2
    before = evaluate_tasks(model, tok, ["nli"], n=8, progress=False).iloc[0]
    w = model.model.layers[3].mlp.down_proj.weight
    saved = w.detach().clone()
    try:
        with torch.no_grad():
            w.mul_(-3.0)
        after = evaluate_tasks(model, tok, ["nli"], n=8, progress=False).iloc[0]
    finally:
        with torch.no_grad():
            w.copy_(saved)
    assert after.gold_nll > before.gold_nll


def test_bad_names_fail_before_any_model_work():
    with pytest.raises(helpers.UnknownNameError, match="unknown task 'summary'"):
        evaluate_tasks(None, None, ["summary"])
    with pytest.raises(helpers.UnknownNameError, match="protocol"):
        evaluate_tasks(None, None, ["nli"], protocol="authors")
