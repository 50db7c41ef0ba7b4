"""How context templates are sampled, read against the two recipes (not against this package's
own output): the paper's EasyEdit fork (and memit) start count // 5 texts from each of five seed
words and strip braces; kmeng01/rome's get_context_templates, which the r-ROME authors' code keeps
(rebuilding-rome, rome/rome_main.py), samples ``count`` texts per length from "<|endoftext|>",
removes that marker and leaves braces as sampled. r-ROME's default is the second."""
from types import SimpleNamespace

import pytest

from helpers.editing import memit, read_hparams, rome, templates
from helpers.editing.hparams import HPARAMS_DIR


@pytest.fixture
def recorded(monkeypatch, smol_tokenizer):
    """Stand-in for sampling: every prompt gets the tokens of " a {b}\n\nc"; the calls are recorded."""
    calls = []
    tokens = smol_tokenizer(" a {b}\n\nc", add_special_tokens=False).input_ids

    def fake_generate(model, tok, prompts, max_new, **kw):
        calls.append((list(prompts), max_new))
        return [SimpleNamespace(tokens=tokens) for _ in prompts]

    monkeypatch.setattr(templates, "generate", fake_generate)
    return calls


def test_the_rome_recipe_samples_count_texts_per_length_from_the_endoftext_marker(recorded, smol_tokenizer):
    groups = templates.context_template_groups(None, smol_tokenizer, [[5, 10], [10, 10]], recipe="rome")
    assert [len(g) for g in groups] == [1, 10, 10]  # "{}", then n_gen per length (not n_gen // 5 per word)
    assert all(p == ["<|endoftext|>"] * 10 for p, _ in recorded)
    prefix = len(smol_tokenizer("<|endoftext|>").input_ids)
    assert [m for _, m in recorded] == [5 - prefix, 10 - prefix]  # max_out_len counts the prefix
    text = groups[1][0]
    assert "<|endoftext|>" not in text and text.endswith(". {}")
    assert text.format("X").endswith("a {b} c. X")  # braces kept as sampled, the blank line a space


def test_the_fork_recipe_starts_count_over_five_texts_from_each_seed_word_and_strips_braces(recorded, smol_tokenizer):
    """Groups ["{}"] + one per (length, count); count // 5 texts per seed word, sampled up to `length`
    tokens in all, decoded with the seed word, blank lines made spaces; braces removed (ROME) or
    spaced (MEMIT)."""
    tok = smol_tokenizer
    groups = templates.context_template_groups(None, tok, [[5, 10], [10, 5]], brace_replacement="")
    assert [len(g) for g in groups] == [1, 10, 5] and groups[0] == ["{}"]
    assert recorded[0][0] == [w for w in ("The", "Therefore", "Because", "I", "You") for _ in range(2)]
    assert groups[1][0] == "The a b c. {}" and groups[1][2] == "Therefore a b c. {}"
    longest = max(len(tok(w).input_ids) for w in templates.SEED_WORDS)
    assert [n for _, n in recorded] == [5 - longest, 10 - longest]
    spaced = templates.context_template_groups(None, tok, [[10, 5]], brace_replacement=" ")
    assert spaced[1][0] == "The a  b  c. {}"
    assert rome.ROMEHyperParams.TEMPLATE_BRACES == "" and memit.MEMITHyperParams.TEMPLATE_BRACES == " "
    assert memit.MEMITHyperParams(layers=[0], rewrite_module_tmp="", layer_module_tmp="",
                                  mlp_module_tmp="").context_template_length_params == [[10, 5]]


def test_r_rome_samples_as_its_authors_code_and_rome_as_the_fork():
    for model in ("gpt2-xl", "smollm2-135m"):
        assert read_hparams("R-ROME", HPARAMS_DIR / "R-ROME" / f"{model}.yaml").context_template_recipe == "rome"
        assert read_hparams("ROME", HPARAMS_DIR / "ROME" / f"{model}.yaml").context_template_recipe == "fork"
    with pytest.raises(Exception, match="context_template_recipe 'other'"):
        templates.context_template_groups(None, None, [[5, 10]], recipe="other")


PAPER = __import__("pathlib").Path(__file__).resolve().parents[1] / "fixtures" / "paper_hparams"


@pytest.mark.parametrize("path", sorted(PAPER.glob("ROME/*.yaml")), ids=lambda p: p.stem)
def test_every_length_of_the_papers_files_samples_count_over_five_per_seed_word(recorded, smol_tokenizer, path):
    """The fork's rule, n_gen // 5 texts per seed word, for each (length, n_gen) of the paper's
    ROME files and memit's fixed (10, 5): a group of 5 × (n_gen // 5) texts."""
    params = read_hparams("ROME", path).context_template_length_params
    for length, n_gen in [*params, (10, 5)]:
        recorded.clear()
        groups = templates.context_template_groups(None, smol_tokenizer, [[length, n_gen]])
        assert len(groups[1]) == 5 * (n_gen // 5)
        assert recorded[0][0] == [w for w in templates.SEED_WORDS for _ in range(n_gen // 5)]
    # a count under 5 samples nothing in the reference: refused, not rounded up
    with pytest.raises(Exception, match="count of at least 5"):
        templates.context_template_groups(None, smol_tokenizer, [[5, 3]])


def test_a_target_gets_its_leading_space_as_each_reference_gives_it(smol_tokenizer):
    """The fork's rome_main: a space before every target but " " (one that has one gets a second);
    the fork's memit_main and kmeng01's rome_main (r-ROME): only where it has none."""
    from helpers.editing import targets

    assert targets.target_text("Paris", "always") == " Paris"
    assert targets.target_text(" MAT-49", "always") == "  MAT-49"
    assert targets.target_text(" MAT-49", "if_missing") == " MAT-49"
    assert targets.target_text("Paris", "if_missing") == " Paris"
    assert targets.target_ids(smol_tokenizer, " MAT-49", "always") == smol_tokenizer("  MAT-49").input_ids
    for model in ("gpt2-xl", "smollm2-135m"):
        assert read_hparams("ROME", HPARAMS_DIR / "ROME" / f"{model}.yaml").target_space == "always"
        assert read_hparams("R-ROME", HPARAMS_DIR / "R-ROME" / f"{model}.yaml").target_space == "if_missing"
        assert read_hparams("MEMIT", HPARAMS_DIR / "MEMIT" / f"{model}.yaml").target_space == "if_missing"
    with pytest.raises(Exception, match="target_space 'x'"):
        targets.target_text("Paris", "x")
