"""The README's Python snippets run as written (so the front page never rots)."""

import pathlib
import re

import pytest

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()


def _block(heading: str) -> str:
    match = re.search(rf"## {heading}\n[^#]*?```python\n(.*?)```", README, re.S)
    assert match, f"README has no python block under '## {heading}'"
    return match.group(1)


def test_quickstart_runs(capsys):
    scope: dict = {}
    exec(compile(_block("Quickstart"), "README-quickstart", "exec"), scope)
    assert scope["loss"] == pytest.approx(50.0)
    assert scope["model"].score(scope["X"], scope["y"]) > 0.9
    assert "simd" in capsys.readouterr().out
    if "pipe" in scope:  # the Pipeline lines (they need scikit-learn, as the README says)
        from sklearn.model_selection import cross_val_score

        scores = cross_val_score(scope["pipe"], scope["X"], scope["y"], cv=5)
        assert scores.shape == (5,) and scores.min() > 0.8


def test_drop_in_example_runs():
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    scope = {"torch": torch, "g": g, "X": torch.rand(1000, 1, 28, 28), "y": torch.randint(0, 10, (1000,))}
    exec(compile(_block("Drop-in for a torch training loop"), "README-drop-in", "exec"), scope)
    assert torch.isfinite(scope["loss"])
