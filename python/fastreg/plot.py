"""Learning curves: d2l's Animator picture (loss, train acc, eval acc per epoch).

matplotlib is optional (the ``demo`` extra) and imported only when a figure is drawn.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["learning_curves"]

_SERIES = (  # history key, legend label, style (d2l's Animator: '-', 'm--', 'g-.')
    ("train_loss", "train loss", "-"),
    ("train_acc", "train acc", "m--"),
    ("eval_acc", "test acc", "g-."),
    ("eval_loss", "test loss", "r:"),
)


def learning_curves(history: Mapping, path=None, title: str | None = None):
    """Draw per-epoch curves from an estimator's ``history_`` and return the Figure.

    history: a dict of equal-length lists with an ``"epoch"`` key and any of
    ``"train_loss"``, ``"train_acc"``, ``"eval_acc"``, ``"eval_loss"`` (others are
    ignored). path: if given, the figure is also saved there as a PNG.
    Returns a ``matplotlib.figure.Figure``.
    """
    if not isinstance(history, Mapping):
        raise TypeError(f"history must be a dict such as model.history_, got {type(history).__name__}")
    if "epoch" not in history:
        raise ValueError("history must have an 'epoch' key (a model's history_ after fit)")
    epochs = list(history["epoch"])
    series = [(k, label, style) for k, label, style in _SERIES if k in history]
    if not series:
        raise ValueError("history has none of 'train_loss', 'train_acc', 'eval_acc', 'eval_loss'")
    for key, _, _ in series:
        if len(history[key]) != len(epochs):
            raise ValueError(f"history[{key!r}] has {len(history[key])} entries but 'epoch' has {len(epochs)}")
    try:
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "fastreg.plot needs matplotlib: pip install 'fastreg[demo]' (or pip install matplotlib)"
        ) from exc
    fig = Figure(figsize=(4.5, 3.2))  # no pyplot: no global state, no GUI backend needed
    ax = fig.add_subplot()
    for key, label, style in series:
        ax.plot(epochs, history[key], style, label=label)
    ax.set_xlabel("epoch")
    if epochs:
        ax.set_xlim(min(epochs), max(max(epochs), min(epochs) + 1))
    ax.grid(True)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, format="png", dpi=120)
    return fig
