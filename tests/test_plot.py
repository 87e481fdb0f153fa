import numpy as np
import pytest

from fastreg import SoftmaxRegression
from fastreg.plot import learning_curves

pytest.importorskip("matplotlib")


def test_learning_curves_draws_each_series_and_saves_png(rng, tmp_path):
    X = rng.standard_normal((200, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    m = SoftmaxRegression(epochs=3, random_state=0).fit(X, y, eval_set=(X[:50], y[:50]))
    out = tmp_path / "curves.png"
    fig = learning_curves(m.history_, path=out, title="softmax")
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["train loss", "train acc", "test acc", "test loss"]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), m.history_["train_loss"])
    assert ax.get_title() == "softmax"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "history, exc, match",
    [
        ([1, 2], TypeError, "dict"),
        ({"train_loss": [1.0]}, ValueError, "epoch"),
        ({"epoch": [1]}, ValueError, "none of"),
        ({"epoch": [1, 2], "train_loss": [1.0]}, ValueError, "1 entries"),
    ],
)
def test_bad_history(history, exc, match):
    with pytest.raises(exc, match=match):
        learning_curves(history)
