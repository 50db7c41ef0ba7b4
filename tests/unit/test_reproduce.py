"""make reproduce's guards: unknown profiles, misspelled notebook parameters, GPU-only profiles."""
import pytest

from helpers.report import reproduce


def test_an_unknown_profile_names_the_valid_ones():
    with pytest.raises(SystemExit, match="unknown profile 'cpuu': choose one of cpu, paper, smoke"):
        reproduce.load_profile("cpuu")


def test_a_misspelled_notebook_parameter_names_the_closest_valid_one(tmp_path):
    profile = reproduce.load_profile("smoke")
    profile["notebooks"]["02_weight_statistics"] = {"max_edit": 3}
    with pytest.raises(SystemExit, match=r"unknown parameter\(s\) 'max_edit' \(did you mean 'max_edits'\?\)"):
        reproduce.notebook_parameters("smoke", profile, "02_weight_statistics", tmp_path)


def test_every_profile_gives_each_notebook_only_parameters_it_declares(tmp_path):
    for name in ("smoke", "cpu", "paper"):
        profile = reproduce.load_profile(name)
        for nb in profile["notebooks"]:
            params = reproduce.notebook_parameters(name, profile, nb, tmp_path)
            assert set(params) <= set(reproduce.notebook_declared_parameters(nb)), (name, nb)


def test_the_paper_profile_refuses_a_machine_without_a_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs a GPU"):
        reproduce.check_device("paper", reproduce.load_profile("paper"))
    reproduce.check_device("cpu", reproduce.load_profile("cpu"))  # no GPU needed


def test_a_misspelled_top_level_key_is_named(tmp_path, monkeypatch):
    (tmp_path / "typo.yaml").write_text("modle: smollm2-135m\nnotebooks: {}\n")
    monkeypatch.setattr(reproduce, "PROFILES", tmp_path)
    with pytest.raises(SystemExit, match=r"unknown top-level key\(s\) \['modle'\]"):
        reproduce.load_profile("typo")
