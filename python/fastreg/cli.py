"""The ``fastreg`` command: ``train`` a model and watch it learn, ``bench`` (the
benchmark suite of a source checkout, against PyTorch), ``info`` on the build.

    fastreg train                       # softmax regression on scikit-learn's digits
    fastreg train --dataset fashion-mnist --download --compare-torch
    fastreg bench --quick --plot bench.png
    fastreg info

A user mistake (a bad option, a missing data file, an unwritable path) prints one
line on stderr and exits with status 2; there is no traceback for those.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]

EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake the user can fix; printed as one line, exit status 2."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each option's default, except where there is none to show (None/False:
    those options say in their help what happens without them)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (with where to find help), exit status 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ---------------------------------------------------------------- option types


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _nonneg_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


# The learning rates the command's datasets can use: their features are scaled to about
# unit size (pixels / 255, standardised columns). Measured: digits trains at lr 10, the
# diabetes regression diverges from lr 5; steps far beyond 10 can only diverge.
_MAX_CLI_LR = 10.0


def _lr(text: str) -> float:
    """--lr: the estimators' rule (finite, > 0), and at most _MAX_CLI_LR."""
    from ._checks import check_lr

    try:
        value = check_lr(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a learning rate, a finite number > 0, got {text!r}") from None
    if value > _MAX_CLI_LR:
        raise argparse.ArgumentTypeError(
            f"expected a learning rate in (0, {_MAX_CLI_LR:g}], got {text!r}: the datasets' features are "
            f"scaled to about unit size, where steps that large only diverge"
        )
    return value


def _momentum(text: str) -> float:
    """--momentum: the estimators' rule, [0, 1)."""
    from ._checks import check_momentum

    try:
        return check_momentum(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a momentum in [0, 1), got {text!r} (momentum >= 1 never forgets a step and diverges)"
        ) from None


def _fraction(text: str) -> float:
    value = _nonneg_float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text!r}")
    return value


def _png_path(text: str) -> str:
    if text.lower() in ("", "none", "off"):
        return ""
    return text


# ------------------------------------------------------------------ data sets

# dataset -> (task, default hyper-parameters: epochs, lr, batch_size)
DATASETS = {
    "digits": ("classification", dict(epochs=10, lr=0.1, batch_size=32)),
    "fashion-mnist": ("classification", dict(epochs=10, lr=0.1, batch_size=256)),  # d2l's
    "synthetic": ("regression", dict(epochs=3, lr=0.03, batch_size=10)),  # d2l's
    "diabetes": ("regression", dict(epochs=20, lr=0.05, batch_size=16)),
    # datasets.next_word_data: --vocab-size classes; the many-classes epoch (fused linear +
    # cross-entropy) trains it without ever holding a batch's logits
    "next-word": ("classification", dict(epochs=3, lr=8.0, batch_size=256)),
}
NEXT_WORD_EXAMPLES = 20000
NEXT_WORD_DEFAULTS = dict(vocab_size=32000, dim=128)
MODEL_TASK = {"softmax": "classification", "linear": "regression"}
DEFAULT_DATASET = {"softmax": "digits", "linear": "synthetic"}
DEFAULT_DATA_DIR = os.path.join("data", "fashion-mnist")


def _split(X: np.ndarray, y: np.ndarray, test_size: float, seed: int):
    """Seeded random train/test split (the digits and synthetic data come unsplit)."""
    order = np.random.default_rng(seed).permutation(len(X))
    n_test = max(1, int(round(test_size * len(X))))
    test, train = order[:n_test], order[n_test:]
    return X[train], y[train], X[test], y[test]


def load_dataset(
    name: str,
    *,
    data_dir: str,
    download: bool,
    test_size: float,
    seed: int,
    verify: bool = True,
    vocab_size: int = NEXT_WORD_DEFAULTS["vocab_size"],
    dim: int = NEXT_WORD_DEFAULTS["dim"],
):
    """``(X_train, y_train, X_test, y_test, description)`` for a ``fastreg train`` dataset.

    Features are float32[N, D]; classification labels int64[N], regression targets float32[N].
    """
    from . import datasets

    try:
        if name == "fashion-mnist":
            Xtr, ytr = datasets.load_fashion_mnist(data_dir, "train", download=download, verify=verify)
            Xte, yte = datasets.load_fashion_mnist(data_dir, "test", download=download, verify=verify)
            # d2l's ToTensor: pixels to [0, 1]; the model sees flat 784-vectors.
            flat = [x.reshape(len(x), -1).astype(np.float32) / np.float32(255) for x in (Xtr, Xte)]
            return flat[0], ytr, flat[1], yte, f"Fashion-MNIST ({len(Xtr)} train / {len(Xte)} test, 784 pixels)"
        if name == "digits":
            X, y = datasets.load_digits()
            desc = "scikit-learn digits (8x8 handwriting)"
        elif name == "next-word":
            X, y = datasets.next_word_data(vocab_size, dim, NEXT_WORD_EXAMPLES, seed=seed)
            desc = (
                f"synthetic next word: {vocab_size} words (Zipf), {dim}-dim contexts, "
                f"{len(np.unique(y))} distinct words in the sample"
            )
        elif name == "diabetes":
            X, y = datasets.load_diabetes()
            # Standardise the features so one learning rate suits all of them.
            X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
            desc = "scikit-learn diabetes (standardised features)"
        else:  # synthetic: d2l's true_w, true_b
            X, y = datasets.synthetic_data([2.0, -3.4], 4.2, 1000, seed=seed)
            desc = "synthetic y = 2 x1 - 3.4 x2 + 4.2 + N(0, 0.01^2)"
    except FileNotFoundError as e:
        raise UsageError(
            str(e).replace("pass download=True", "run again with --download (or give --data-dir)")
        ) from None
    except (ValueError, ImportError, OSError) as e:
        raise UsageError(str(e).replace("pass verify=False", "pass --no-verify")) from None
    Xtr, ytr, Xte, yte = _split(X, y, test_size, seed)
    return Xtr, ytr, Xte, yte, f"{desc}, {len(Xtr)} train / {len(Xte)} test, {X.shape[1]} features"


# ------------------------------------------------------------------------ train


def _require(module: str, extra: str = "demo"):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"this needs {module.split('.')[0]}: pip install 'fastreg[{extra}]'") from None


def _device(text: str) -> str:
    import re

    from .models import DEVICE_PATTERN

    if not re.fullmatch(DEVICE_PATTERN, text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text


def _estimator(args):
    import fastreg

    cls_name = "SoftmaxRegression" if args.model == "softmax" else "LinearRegression"
    cls = getattr(fastreg, cls_name, None)
    if cls is None:
        raise UsageError(f"this fastreg has no {cls_name} (the estimators are not built in)")
    kwargs = dict(
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        random_state=args.seed,
        verbose=not args.quiet,
    )
    if getattr(args, "device", "cpu") != "cpu":  # only when asked, so older fastreg estimators still work
        kwargs["device"] = args.device
    if args.model == "linear":
        kwargs["loss"] = args.loss
    return cls(**kwargs)


def _fmt_metric(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def _print_history(history: dict, task: str, out) -> None:
    cols = [("epoch", "epoch", "{:>5}"), ("train_loss", "train loss", "{:>10.4f}")]
    if task == "classification":
        cols += [("train_acc", "train acc", "{:>9.4f}"), ("eval_acc", "test acc", "{:>8.4f}")]
    else:
        cols += [("eval_loss", "test loss", "{:>9.4f}")]
    cols.append(("seconds", "ms/epoch", "{:>8.2f}"))
    cols = [c for c in cols if c[0] in history]
    scale = {"seconds": 1e3}  # epochs take milliseconds: show them in ms
    print("  ".join(f"{title:>{len(fmt.format(0))}}" for _, title, fmt in cols), file=out)
    for i in range(len(history["epoch"])):
        print("  ".join(fmt.format(history[key][i] * scale.get(key, 1)) for key, _, fmt in cols), file=out)


def _torch_concise(args, task, Xtr, ytr, Xte, yte):
    """d2l's concise implementation (nn.Linear + loss + torch.optim.SGD + DataLoader) on
    the same data. Returns (seconds per epoch, train metric, test metric)."""
    torch = _require("torch", "torch")
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    if args.seed is not None:
        torch.manual_seed(args.seed)
    n_out = int(ytr.max()) + 1 if task == "classification" else 1
    net = nn.Sequential(nn.Flatten(), nn.Linear(Xtr.shape[1], n_out))
    net[1].weight.data.normal_(0, 0.01)
    net[1].bias.data.fill_(0)
    if task == "classification":
        loss = nn.CrossEntropyLoss()
    else:
        loss = {"squared": nn.MSELoss(), "huber": nn.HuberLoss(), "l1": nn.L1Loss()}[args.loss]
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    Xt, Xv = torch.from_numpy(Xtr), torch.from_numpy(Xte)
    yt = torch.from_numpy(ytr) if task == "classification" else torch.from_numpy(ytr).reshape(-1, 1)
    loader = DataLoader(TensorDataset(Xt, yt), batch_size=args.batch_size, shuffle=True)
    seconds = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        for X, y in loader:
            opt.zero_grad()
            loss(net(X), y).backward()
            opt.step()
        seconds.append(time.perf_counter() - start)
    with torch.no_grad():
        if task == "classification":
            metric = [float((net(X).argmax(1).numpy() == y).mean()) for X, y in ((Xt, ytr), (Xv, yte))]
        else:
            metric = [_r2(net(X).numpy().ravel(), y) for X, y in ((Xt, ytr), (Xv, yte))]
    return statistics.mean(seconds), metric[0], metric[1]


def _r2(pred: np.ndarray, y: np.ndarray) -> float:
    y = y.astype(np.float64)
    return float(1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def _peak_rss_mb() -> float | None:
    """The process's peak resident memory in MB (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20  # macOS reports bytes


def _print_memory_and_speed(args, n: int, d: int, per_epoch: float, rss_before, out) -> None:
    v, mb = args.vocab_size, 2**20
    batch_logits = min(args.batch_size, n) * v * 4 / mb
    peak = _peak_rss_mb()
    grew = "" if peak is None or rss_before is None else f", {peak - rss_before:.0f} MB more than before training"
    print(
        f"  memory: peak resident {peak:.0f} MB{grew} (for scale: a batch's float32 logits are "
        f"{batch_logits:.0f} MB, the training set's {n * v * 4 / mb:.0f} MB)"
        if peak is not None
        else "  memory: this OS does not report peak memory",
        file=out,
    )
    flops = 6 * n * d * v  # forward, and the input and weight gradients (3 products of n x d x v)
    print(
        f"  speed: {per_epoch * 1e3:.0f} ms/epoch, {n / per_epoch:,.0f} rows/s, "
        f"{flops / per_epoch / 1e9:.0f} GFLOP/s (6 N D V per epoch)",
        file=out,
    )


def cmd_train(args, out=None) -> int:
    out = sys.stdout if out is None else out
    if args.model is None:  # implied by the dataset (diabetes: linear), else softmax
        args.model = "softmax" if args.dataset is None or DATASETS[args.dataset][0] == "classification" else "linear"
    model = args.model
    dataset = args.dataset or DEFAULT_DATASET[model]
    task, defaults = DATASETS[dataset]
    if MODEL_TASK[model] != task:
        hint = "softmax" if task == "classification" else "linear"
        raise UsageError(f"--model {model} does not fit the {task} dataset '{dataset}'; use --model {hint}")
    if args.loss != "squared" and model != "linear":
        raise UsageError("--loss applies to --model linear only")
    for key, default in NEXT_WORD_DEFAULTS.items():
        if dataset != "next-word" and getattr(args, key) is not None:
            raise UsageError(f"--{key.replace('_', '-')} applies to --dataset next-word only")
        if getattr(args, key) is None:
            setattr(args, key, default)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.seed is None:
        args.seed = 0
    if args.device != "cpu":  # refuse before loading data, with the reason
        from .models import _check_device

        try:
            _check_device(args.device)
        except (RuntimeError, NotImplementedError) as e:
            raise UsageError(f"--device {args.device}: {e}") from None
    for path in (args.plot, args.save):
        if path and not Path(path).resolve().parent.is_dir():
            raise UsageError(f"cannot write {path}: folder {Path(path).resolve().parent} does not exist")
    if args.plot:
        _require("matplotlib")
    if args.threads:
        import fastreg

        fastreg.set_num_threads(args.threads)

    Xtr, ytr, Xte, yte, desc = load_dataset(
        dataset,
        data_dir=args.data_dir,
        download=args.download,
        test_size=args.test_size,
        seed=args.seed,
        verify=not args.no_verify,
        vocab_size=args.vocab_size,
        dim=args.dim,
    )
    print(f"fastreg train: {model} regression on {desc}", file=out)
    print(
        f"  epochs={args.epochs} lr={args.lr} batch_size={args.batch_size} momentum={args.momentum} "
        f"weight_decay={args.weight_decay} seed={args.seed}",
        file=out,
    )
    est = _estimator(args)
    rss_before = _peak_rss_mb()
    try:
        if dataset == "next-word":  # every word is a class, also those the sample never shows
            for _ in range(args.epochs):
                est.partial_fit(Xtr, ytr, classes=np.arange(args.vocab_size), eval_set=(Xte, yte))
        else:
            est.fit(Xtr, ytr, eval_set=(Xte, yte))
    except ValueError as e:
        raise UsageError(f"training failed: {e}") from None
    history = est.history_
    if not args.quiet:
        _print_history(history, task, out)
        print(
            "  (train loss/acc: running means over each epoch's batches, taken while the model was still "
            "learning;\n   the final line below scores the finished model on the whole train and test sets)",
            file=out,
        )
    per_epoch = statistics.mean(history["seconds"]) if history["seconds"] else float("nan")
    final_loss = history["train_loss"][-1] if history["train_loss"] else float("nan")
    if not math.isfinite(final_loss):
        print(f"  training diverged (train loss is {final_loss}): try a smaller --lr", file=out)
    train_score, test_score = est.score(Xtr, ytr), est.score(Xte, yte)
    metric = "accuracy" if task == "classification" else "R^2"
    print(
        f"fastreg: train {metric} {train_score:.4f}, test {metric} {test_score:.4f}, {per_epoch * 1e3:.1f} ms/epoch",
        file=out,
    )
    if dataset == "next-word":
        _print_memory_and_speed(args, len(Xtr), Xtr.shape[1], per_epoch, rss_before, out)
    if args.compare_torch:
        t_epoch, t_train, t_test = _torch_concise(args, task, Xtr, ytr, Xte, yte)
        print(f"\n{'':<21}{'ms/epoch':>10}{'train ' + metric:>16}{'test ' + metric:>16}", file=out)
        print(f"{'fastreg':<21}{per_epoch * 1e3:>10.2f}{train_score:>16.4f}{test_score:>16.4f}", file=out)
        print(f"{'torch (d2l concise)':<21}{t_epoch * 1e3:>10.2f}{t_train:>16.4f}{t_test:>16.4f}", file=out)
        ratio = t_epoch / per_epoch
        print(f"fastreg is {ratio:.1f}x {'faster' if ratio >= 1 else 'slower'} per epoch than torch", file=out)
    if args.save:
        est.save(args.save)  # fastreg's model format (docs/models.md): fastreg predict --model reads it
        print(
            f"saved the model to {args.save} (fastreg predict --model {args.save} --data {dataset} "
            f"--seed {args.seed} --test-size {args.test_size} scores it on this test split)",
            file=out,
        )
    if args.plot:
        from . import plot

        title = f"{model} regression on {dataset}"
        plot.learning_curves(history, path=args.plot, title=title)
        print(f"wrote the learning curves to {args.plot}", file=out)
    return 0


# ---------------------------------------------------------------------- predict


def _load_data_file(path: str):
    """(X, y or None) from a .npy (X), .npz (X and optionally y) or .csv (X, numbers, no header)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--data {path}: no such file (or a dataset name: {', '.join(DATASETS)})")
    try:
        if p.suffix == ".npy":
            X, y = np.load(p, allow_pickle=False), None
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if "X" not in z.files:
                    raise UsageError(
                        f"--data {path}: an .npz needs an array named X (and optionally y), "
                        f"found {', '.join(z.files) or 'nothing'}"
                    )
                X, y = z["X"], (z["y"] if "y" in z.files else None)
        elif p.suffix == ".csv":
            X, y = np.loadtxt(p, delimiter=",", ndmin=2), None
        else:
            raise UsageError(f"--data {path}: expected a .npy, .npz or .csv file, or a dataset name")
    except (ValueError, OSError) as e:
        raise UsageError(f"--data {path}: cannot read it: {e}") from None
    if X.ndim > 2:  # images: one flat row each, as the estimators take them
        X = X.reshape(len(X), -1)
    return X, y


def cmd_predict(args, out=None) -> int:
    """Load a saved model; print its accuracy (R^2) on labelled data, else one prediction per line."""
    out = sys.stdout if out is None else out
    from . import models

    try:
        est = models.load(args.model)
    except FileNotFoundError:
        raise UsageError(f"--model {args.model}: no such file") from None
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None
    if args.data in DATASETS:
        _, _, X, y, desc = load_dataset(
            args.data,
            data_dir=args.data_dir,
            download=args.download,
            test_size=args.test_size,
            seed=args.seed,
            verify=not args.no_verify,
        )
        desc = f"the test split of {desc}"
    else:
        X, y = _load_data_file(args.data)
        desc = args.data
    try:
        if y is None:
            for label in est.predict(X):
                print(label, file=out)
            return 0
        score = est.score(X, y)
    except ValueError as e:
        raise UsageError(f"cannot apply the model to --data {args.data}: {e}") from None
    metric = "accuracy" if hasattr(est, "classes_") else "R^2"
    print(f"{type(est).__name__} from {args.model}: {metric} {score:.4f} on {len(X)} samples of {desc}", file=out)
    return 0


# ------------------------------------------------------------------------ bench

# `fastreg bench` runs the benchmark suite itself (bench/ of a source checkout, the
# cases the README's table comes from) and prints the same table: there is one set of
# cases, one harness (pytest-benchmark) and one renderer (bench/render.py).
_QUICK = [  # one case per area, the chapter's sizes: well under a minute
    "bench_loader.py::test_epoch_batch256",
    "bench_cross_entropy.py::test_cross_entropy_fwd_bwd",
    "bench_sgd.py::test_sgd_step",
    "bench_epoch.py::test_softmax_epoch",
]
_QUICK_K = "(256 or 7850 or float32) and not numpy and not one-thread and not floor and not BatchSampler"


def _bench_dir(given: str | None) -> Path:
    """bench/ with its conftest.py: --bench-dir, else ./bench, else the checkout fastreg runs from."""
    here = Path(__file__).resolve().parents[2] / "bench"
    for d in [Path(given)] if given else [Path.cwd() / "bench", here]:
        if (d / "conftest.py").is_file() and (d / "render.py").is_file():
            return d.resolve()
    where = given or f"./bench or {here}"
    raise UsageError(
        f"no benchmark suite at {where}: fastreg bench runs bench/ of a source checkout "
        "(git clone the project, pip install -c constraints.txt '.[test]', then run it there, "
        "or pass --bench-dir)"
    )


def _load_render(bench_dir: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("fastreg_bench_render", bench_dir / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cmd_bench(args, out=None) -> int:
    out = sys.stdout if out is None else out
    for path in (args.json, args.plot):
        if path and not Path(path).resolve().parent.is_dir():
            raise UsageError(f"cannot write {path}: folder {Path(path).resolve().parent} does not exist")
    bench_dir = _bench_dir(args.bench_dir)
    _require("pytest_benchmark", "test")
    if args.plot:
        _require("matplotlib")
    import subprocess
    import tempfile

    import fastreg

    with tempfile.TemporaryDirectory() as tmp:
        json_path = str(Path(args.json).resolve()) if args.json else os.path.join(tmp, "bench.json")
        targets = [str(bench_dir / t) for t in _QUICK] if args.quick else [str(bench_dir)]
        k = " and ".join(f"({e})" for e in ([_QUICK_K] if args.quick else []) + ([args.k] if args.k else []))
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            *targets,
            "-q",
            "-p",
            "no:cacheprovider",
            f"--benchmark-json={json_path}",
            *(["-k", k] if k else []),
        ]
        # The child imports the fastreg this command runs.
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(
                [str(Path(fastreg.__file__).resolve().parents[1])] + [p for p in [os.environ.get("PYTHONPATH")] if p]
            ),
        )
        print(f"running: {' '.join(cmd[1:])}", file=out, flush=True)
        proc = subprocess.run(cmd, cwd=str(bench_dir.parent), env=env, capture_output=True, text=True)
        log = (proc.stdout + proc.stderr).strip().splitlines()
        if proc.returncode != 0:
            print("\n".join(log[-30:]), file=out)
            print(f"fastreg bench: pytest exited with status {proc.returncode}", file=out)
            return 1
        print(log[-1] if log else "", file=out)
        render = _load_render(bench_dir)
        data, groups = render.load(json_path)
        print(render.table(data, groups), file=out)
        if args.json:
            print(f"wrote {args.json}", file=out)
        if args.plot:
            render.plot(groups, args.plot)
            print(f"wrote {args.plot}", file=out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastreg", description="Fast linear and softmax regression (d2l chapter 3).")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{train,predict,bench,info}", parser_class=_Parser
    )

    sub.add_parser("info", help="print the build and runtime configuration", description="Print show_config().")

    t = sub.add_parser(
        "train",
        help="train a model and plot its learning curves",
        description="Train softmax (default: on scikit-learn's digits, no download) or linear regression; "
        "print per-epoch progress and final accuracy, write the learning-curve PNG.",
        formatter_class=_HelpFormatter,
    )
    t.add_argument(
        "--dataset", choices=list(DATASETS), help="default: digits for --model softmax, synthetic for --model linear"
    )
    t.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        help=f"folder with the Fashion-MNIST files (default: {DEFAULT_DATA_DIR})",
    )
    t.add_argument("--download", action="store_true", help="download Fashion-MNIST into --data-dir if missing")
    t.add_argument("--no-verify", action="store_true", help="skip the MD5 check of the Fashion-MNIST files")
    t.add_argument(
        "--model",
        choices=list(MODEL_TASK),
        help="default: implied by --dataset (linear for synthetic and diabetes), else softmax",
    )
    t.add_argument("--loss", choices=["squared", "huber", "l1"], default="squared", help="for --model linear")
    t.add_argument("--epochs", type=_positive_int, help="default: the dataset's (docs/cli.md)")
    t.add_argument("--lr", type=_lr, help=f"learning rate in (0, {_MAX_CLI_LR:g}]; default: the dataset's")
    t.add_argument("--batch-size", type=_positive_int, help="default: the dataset's")
    t.add_argument("--momentum", type=_momentum, default=0.0, help="SGD momentum, in [0, 1)")
    t.add_argument("--weight-decay", type=_nonneg_float, default=0.0, help="L2 penalty on the weights")
    t.add_argument("--seed", type=_nonneg_int, help="seed for the split, initialisation and shuffling (default 0)")
    t.add_argument(
        "--test-size",
        type=_fraction,
        default=0.25,
        help="held-out fraction for datasets without a test split (default 0.25)",
    )
    t.add_argument("--device", type=_device, default="cpu", help="cpu (default), cuda or cuda:N (docs/cuda.md)")
    t.add_argument("--threads", type=_positive_int, help="threads for fastreg's kernels")
    t.add_argument(
        "--plot",
        type=_png_path,
        default="curves.png",
        metavar="PNG",
        help="learning-curve picture (default: curves.png; 'none' to skip)",
    )
    t.add_argument(
        "--save",
        metavar="FILE",
        help="save the trained model in fastreg's format (an .npz without pickles; "
        "fastreg predict --model FILE reads it)",
    )
    t.add_argument(
        "--vocab-size",
        type=_positive_int,
        help=f"words (classes) of --dataset next-word (default {NEXT_WORD_DEFAULTS['vocab_size']})",
    )
    t.add_argument(
        "--dim",
        type=_positive_int,
        help=f"context dimension of --dataset next-word (default {NEXT_WORD_DEFAULTS['dim']})",
    )
    t.add_argument("--compare-torch", action="store_true", help="also train d2l's concise torch model")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar or per-epoch table")

    pr = sub.add_parser(
        "predict",
        help="apply a saved model to data",
        description="Load a model saved by 'fastreg train --save' (or an estimator's save()); print its "
        "accuracy (R^2 for linear) when the data has labels, else one prediction per line.",
        formatter_class=_HelpFormatter,
    )
    pr.add_argument("--model", required=True, metavar="FILE", help="the saved model")
    pr.add_argument(
        "--data",
        required=True,
        metavar="DATA",
        help=f"a dataset name ({', '.join(DATASETS)}: its test split, as 'fastreg train' made it "
        "with the same --seed and --test-size), or a file: .npz with X (and y), .npy (X), .csv (X)",
    )
    pr.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="folder with the Fashion-MNIST files")
    pr.add_argument("--download", action="store_true", help="download Fashion-MNIST into --data-dir if missing")
    pr.add_argument("--no-verify", action="store_true", help="skip the MD5 check of the Fashion-MNIST files")
    pr.add_argument("--seed", type=_nonneg_int, default=0, help="the split's seed, as given to fastreg train")
    pr.add_argument("--test-size", type=_fraction, default=0.25, help="the held-out fraction, as given to train")

    b = sub.add_parser(
        "bench",
        help="run the benchmark suite (bench/) against PyTorch and print its table",
        description="Run pytest-benchmark over bench/ of a source checkout (fastreg against torch, d2l, "
        "scikit-learn, each answer checked before it is timed) and print the README's table from that run.",
    )
    b.add_argument(
        "--quick",
        action="store_true",
        help="one case per area at the chapter's sizes: minibatches, cross-entropy, SGD, an epoch",
    )
    b.add_argument("-k", metavar="EXPR", help="pytest -k expression selecting cases (with --quick: within them)")
    b.add_argument("--bench-dir", metavar="DIR", help="the benchmark suite (default: ./bench, or the checkout's)")
    b.add_argument("--json", metavar="PATH", help="keep pytest-benchmark's JSON of the run")
    b.add_argument("--plot", metavar="PNG", help="write a bar chart of the speed-ups")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fastreg`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            import fastreg

            fastreg.show_config()
            return 0
        if args.command == "train":
            return cmd_train(args)
        if args.command == "predict":
            return cmd_predict(args)
        return cmd_bench(args)
    except UsageError as e:
        print(f"fastreg {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # e.g. an unwritable --plot/--save/--json path
        print(f"fastreg {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"fastreg {args.command}: interrupted", file=sys.stderr)
        return 130
