"""`make demo` end to end: zoo, CMA-ES search on local Ray with real lm-eval, leaderboard, export."""

import pytest

pytestmark = pytest.mark.slow


def test_demo_search_beats_every_parent_and_exports(monkeypatch, tmp_path, capsys):
    from evolve import demo
    from evolve.store import Store

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVOLVE_STORE", f"sqlite:///{tmp_path / 'runs.db'}")
    assert demo.main() == 0  # non-zero when a merge-beats-parents check fails
    out = capsys.readouterr().out
    assert "best merge" in out and "✘" not in out
    (run,) = Store(f"sqlite:///{tmp_path / 'runs.db'}").list_runs()
    assert run.status.value == "FINISHED"
    assert (tmp_path / "out" / "demo-best" / "model.safetensors").is_file()
    assert (tmp_path / "out" / "demo-best" / "mergekit.yaml").is_file()
