"""A small side-effect sweep on a tiny random model, run as its own process by
``test_interruptions.py`` so that it can be killed. ``python -m tests.integration.sweep_child
STORE LOG [HOLD_AT]``: appends one line per evaluation and per edit it performs to LOG, waits in
its HOLD_AT-th evaluation until it is killed or interrupted (the test strikes there, however slow
the machine; 0: never), prints the table as JSON."""
import sys
import time


def main(store, log, hold_at=0):
    import helpers.runs.chain
    import helpers.runs.sweep
    from helpers.model import LoadedModel
    from helpers.runs.sweep import Chain, side_effects
    from tests.conftest import _tiny
    from transformers import AutoTokenizer

    from helpers.model.loading import embedded_folder

    tok = AutoTokenizer.from_pretrained(str(embedded_folder()))
    tok.padding_side = "left"
    model = _tiny("llama", len(tok), layers=4)
    real_edit, real_eval = helpers.runs.chain.edit, helpers.runs.sweep.evaluate_examples

    def note(what):
        with open(log, "a") as f:
            f.write(what + "\n")

    def logged_edit(*a, **k):
        note("edit")
        return real_edit(*a, **k)

    started = 0

    def logged_eval(*a, **k):
        nonlocal started
        note("eval start")
        started += 1
        if started == hold_at:
            time.sleep(3600)
        out = real_eval(*a, **k)
        note("eval")
        return out

    helpers.runs.chain.edit, helpers.runs.sweep.evaluate_examples = logged_edit, logged_eval  # what the sweep calls
    fmt = "model.layers.{}"
    hp = {"ROME": {"layers": [2], "rewrite_module_tmp": fmt + ".mlp.down_proj", "layer_module_tmp": fmt,
                   "mlp_module_tmp": fmt + ".mlp", "v_num_grad_steps": 3,
                   "context_templates": ["{}", "I think that. {}"], "mom2_adjustment": False}}
    df = side_effects([Chain("ROME", 1, (0, 1, 2, 3))], LoadedModel("tiny", model, tok), ["sentiment", "nli"], n=2,
                      seed=0, hparams=hp, store=store, progress=False)
    print("TABLE" + df.drop(columns=["seconds"]).to_json(orient="records", double_precision=15))


if __name__ == "__main__":
    import signal

    # Ctrl-C raises KeyboardInterrupt even when the test suite runs as a background job (`make test &`), whose
    # children start with SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)
