"""The ``fastreg`` command: info, train (end to end), bench, and one-line usage errors."""

import gzip
import io
import json
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

import fastreg
from fastreg import cli

has_estimators = pytest.mark.skipif(not hasattr(fastreg, "SoftmaxRegression"), reason="needs the estimators (issue 5)")


def run(argv, capsys):
    """main(argv) -> (exit status, stdout, stderr), argparse's SystemExit included."""
    try:
        rc = cli.main(argv)
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_info_prints_show_config(capsys):
    rc, out, err = run(["info"], capsys)
    want = io.StringIO()
    fastreg.show_config(file=want)
    assert rc == 0 and err == ""
    assert out == want.getvalue()


@pytest.mark.parametrize(
    "argv, match",
    [
        ([], "required"),
        (["fly"], "invalid choice"),
        (["train", "--epochs", "0"], "--epochs: expected a positive integer, got '0'"),
        (["train", "--epochs", "two"], "positive integer"),
        (["train", "--lr", "-1"], "--lr: expected a learning rate, a finite number > 0, got '-1'"),
        (["train", "--lr", "0"], "--lr: expected a learning rate, a finite number > 0"),
        (["train", "--lr", "1e30"], r"--lr: expected a learning rate in \(0, 10\], got '1e30'"),
        (["train", "--lr", "inf"], "--lr: expected a learning rate, a finite number > 0"),
        (["train", "--momentum", "1.5"], r"--momentum: expected a momentum in \[0, 1\), got '1.5'"),
        (["train", "--momentum", "1"], r"--momentum: expected a momentum in \[0, 1\)"),
        (["train", "--momentum", "-0.5"], r"--momentum: expected a momentum in \[0, 1\)"),
        (["predict", "--model", "m.npz"], "required: --data"),
        (["predict", "--model", "/no/such/m.npz", "--data", "digits"], "no such file"),
        (["train", "--lr", "nan"], "finite"),
        (["train", "--batch-size", "-5"], "--batch-size"),
        (["train", "--momentum", "x"], "--momentum"),
        (["train", "--test-size", "1.5"], r"fraction in \(0, 1\)"),
        (["train", "--seed", "-1"], "--seed"),
        (["train", "--device", "gpu"], "expected cpu, cuda or cuda:N, got 'gpu'"),
        (["train", "--device", "cuda"], "--device cuda: .*(unavailable|issue 16)"),
        (["train", "--dataset", "imagenet"], "invalid choice"),
        (["train", "--model", "linear", "--dataset", "digits"], "use --model softmax"),
        (["train", "--model", "softmax", "--dataset", "synthetic"], "use --model linear"),
        (["train", "--loss", "huber"], "--model linear only"),
        (["train", "--plot", "/no/such/folder/c.png"], "folder /no/such/folder does not exist"),
        (["train", "--save", "/no/such/folder/m.npz"], "does not exist"),
        (["bench", "--json", "/no/such/folder/b.json"], "does not exist"),
        (["bench", "--repeat"], "unrecognized arguments"),
    ],
)
def test_usage_errors_are_one_line_exit_2(capsys, argv, match):
    rc, out, err = run(argv, capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error:" in lines[0]
    assert re.search(match, lines[0]), lines[0]


def test_missing_fashion_mnist_says_where_and_download(tmp_path, capsys):
    rc, _, err = run(["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path)], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert str(tmp_path) in err and "--download" in err


def test_corrupt_fashion_mnist_is_a_one_line_error(tmp_path, capsys):
    # headers promise 5 images / labels, the data stop after 3 bytes
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(struct.pack(">4i", 2051, 5, 28, 28) + b"\0" * 3)
    )
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(struct.pack(">2i", 2049, 5) + b"\0" * 3))
    rc, _, err = run(["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path)], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "MD5" in err and "--no-verify" in err
    rc, _, err = run(["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--no-verify"], capsys)
    assert rc == 2 and "truncated" in err and "Traceback" not in err


def test_subprocess_entry_point():
    """``python -m fastreg``: a usage error has no traceback and exits 2; info works."""
    bad = subprocess.run(
        [sys.executable, "-m", "fastreg", "train", "--epochs", "-3"], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    ok = subprocess.run([sys.executable, "-m", "fastreg", "info"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith("fastreg")


def test_split_is_a_seeded_partition(rng):
    X = rng.standard_normal((101, 3)).astype(np.float32)
    y = np.arange(101)
    Xtr, ytr, Xte, yte = cli._split(X, y, 0.25, seed=3)
    assert len(yte) == 25 and len(ytr) == 76
    assert sorted(np.r_[ytr, yte].tolist()) == list(range(101))
    np.testing.assert_array_equal(Xtr, X[ytr])
    again = cli._split(X, y, 0.25, seed=3)
    np.testing.assert_array_equal(again[1], ytr)


# ------------------------------------------------------------------------ bench


def test_bench_runs_the_suite_and_prints_its_table(tmp_path, capsys):
    # fastreg bench is pytest-benchmark over bench/ (the README's cases) plus bench/render.py.
    pytest.importorskip("matplotlib")
    pytest.importorskip("pytest_benchmark")
    jpath, ppath = tmp_path / "b.json", tmp_path / "b.png"
    k = "test_cross_entropy_fwd_bwd and 256x10 and (fastreg or torch)"
    rc, out, err = run(["bench", "-k", k, "--json", str(jpath), "--plot", str(ppath)], capsys)
    assert rc == 0, out + err
    data = json.loads(jpath.read_text())
    names = sorted(b["name"] for b in data["benchmarks"])
    assert names == ["test_cross_entropy_fwd_bwd[fastreg-256x10]", "test_cross_entropy_fwd_bwd[torch-256x10]"]
    med = {b["param"].split("-")[0]: b["stats"]["median"] for b in data["benchmarks"]}
    assert "| cross_entropy fwd+bwd 256x10 |" in out
    assert f"{med['torch'] / med['fastreg']:.1f}x" in out  # the table's ratio is this run's
    assert data["machine_info"]["fastreg"]["simd"].startswith(fastreg.simd_level())
    assert ppath.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_without_a_suite_is_a_usage_error(tmp_path, capsys):
    rc, out, err = run(["bench", "--bench-dir", str(tmp_path)], capsys)
    assert rc == 2
    assert "no benchmark suite at" in err and "source checkout" in err


# ------------------------------------------------------------------------ train


def _fake_fashion(root, rng, n_train=300, n_test=100):
    """Small learnable Fashion-MNIST-shaped files: each class lights up its own band of rows."""
    for split, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        X = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for c in range(10):
            X[y == c, 2 * c : 2 * c + 3, :] = 255
        for kind, arr, code in (("images-idx3", X, 2051), ("labels-idx1", y, 2049)):
            head = struct.pack(">i", code) + struct.pack(f">{arr.ndim}i", *arr.shape)
            (root / f"{split}-{kind}-ubyte.gz").write_bytes(gzip.compress(head + arr.tobytes()))


@has_estimators
def test_train_default_digits(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(["train", "--quiet", "--save", "m.npz"], capsys)
    assert rc == 0, err
    assert "softmax regression on scikit-learn digits" in out
    line = [ln for ln in out.splitlines() if ln.startswith("fastreg: train accuracy")][0]
    test_acc = float(line.split("test accuracy ")[1].split(",")[0])
    assert test_acc > 0.9  # softmax regression on the digits reaches ~0.95
    assert "ms/epoch" in line
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    saved = np.load(tmp_path / "m.npz")
    assert saved["coef"].shape in ((64, 10), (10, 64)) and saved["intercept"].shape == (10,)
    history = json.loads(str(saved["history"]))
    assert len(history["epoch"]) == 10


@has_estimators
def test_train_prints_per_epoch_table(capsys):
    rc, out, _ = run(["train", "--epochs", "3", "--plot", "none"], capsys)
    assert rc == 0
    header = [ln for ln in out.splitlines() if "train loss" in ln][0]
    rows = out.splitlines()[out.splitlines().index(header) + 1 :][:3]
    assert [int(r.split()[0]) for r in rows] == [1, 2, 3] or [int(r.split()[0]) for r in rows] == [0, 1, 2]


@has_estimators
def test_train_fashion_mnist_from_files(tmp_path, rng, capsys):
    _fake_fashion(tmp_path, rng)
    rc, out, err = run(
        [
            "train",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            str(tmp_path),
            "--no-verify",
            "--epochs",
            "5",
            "--batch-size",
            "32",
            "--plot",
            "none",
            "-q",
        ],
        capsys,
    )
    assert rc == 0, err
    assert "300 train / 100 test" in out
    test_acc = float(out.split("test accuracy ")[1].split(",")[0])
    assert test_acc > 0.8


@has_estimators
@pytest.mark.parametrize("loss", ["squared", "huber", "l1"])
def test_train_linear_synthetic_recovers_d2l_weights(tmp_path, capsys, loss):
    rc, out, err = run(
        [
            "train",
            "--model",
            "linear",
            "--loss",
            loss,
            "--epochs",
            "5",
            "--plot",
            "none",
            "-q",
            "--save",
            str(tmp_path / "m.npz"),
        ],
        capsys,
    )
    assert rc == 0, err
    saved = np.load(tmp_path / "m.npz")
    np.testing.assert_allclose(np.ravel(saved["coef"]), [2.0, -3.4], atol=0.1)
    np.testing.assert_allclose(np.ravel(saved["intercept"]), [4.2], atol=0.1)


@has_estimators
def test_train_compare_torch(capsys):
    pytest.importorskip("torch")
    rc, out, err = run(["train", "--epochs", "3", "--plot", "none", "-q", "--compare-torch"], capsys)
    assert rc == 0, err
    fr = [ln for ln in out.splitlines() if re.match(r"fastreg\s+\d", ln)][0].split()
    tr = [ln for ln in out.splitlines() if ln.startswith("torch (d2l concise)")][0].split()
    assert float(fr[-1]) > 0.85 and float(tr[-1]) > 0.85  # both learn the digits
    assert re.search(r"fastreg is [\d.]+x (faster|slower) per epoch than torch", out)


@has_estimators
def test_dataset_alone_implies_the_model(capsys):
    rc, out, err = run(["train", "--dataset", "diabetes", "--plot", "none", "-q"], capsys)
    assert rc == 0, err
    assert "linear regression on scikit-learn diabetes" in out and "test R^2" in out


def test_help_shows_defaults(capsys):
    rc, out, _ = run(["train", "--help"], capsys)
    assert rc == 0
    text = " ".join(out.split())
    for shown in (
        "(default: curves.png",
        "--momentum MOMENTUM SGD momentum, in [0, 1) (default: 0.0)",
        "(default: squared)",
        "implied by --dataset",
    ):
        assert shown in text, shown


@has_estimators
def test_table_says_train_acc_is_a_running_mean(capsys):
    rc, out, _ = run(["train", "--epochs", "2", "--plot", "none"], capsys)
    assert rc == 0 and "running means over each epoch's batches" in out and "finished model" in out


@has_estimators
def test_save_then_predict(tmp_path, capsys, rng):
    model = str(tmp_path / "digits.model")
    rc, out, err = run(["train", "-q", "--plot", "none", "--epochs", "3", "--save", model, "--seed", "4"], capsys)
    assert rc == 0, err
    test_acc = float(out.split("test accuracy ")[1].split(",")[0])
    est = fastreg.models.load(model)
    assert type(est).__name__ == "SoftmaxRegression" and est.n_iter_ == 3
    # the dataset's test split, as train made it: the same accuracy
    rc, out, err = run(["predict", "--model", model, "--data", "digits", "--seed", "4"], capsys)
    assert rc == 0, err
    assert f"accuracy {test_acc:.4f} on 449 samples" in out
    # files: labelled .npz gives the score, .npy / .csv one prediction per line
    X, y = fastreg.datasets.load_digits()
    X, y = X[:50], y[:50]
    np.savez(tmp_path / "xy.npz", X=X, y=y)
    rc, out, _ = run(["predict", "--model", model, "--data", str(tmp_path / "xy.npz")], capsys)
    assert rc == 0 and f"accuracy {est.score(X, y):.4f} on 50 samples" in out
    np.save(tmp_path / "x.npy", X)
    np.savetxt(tmp_path / "x.csv", X, delimiter=",")
    for name in ("x.npy", "x.csv"):
        rc, out, _ = run(["predict", "--model", model, "--data", str(tmp_path / name)], capsys)
        assert rc == 0
        np.testing.assert_array_equal(np.array(out.split(), dtype=int), est.predict(X))
    np.savez(tmp_path / "wrong.npz", A=X)
    rc, _, err = run(["predict", "--model", model, "--data", str(tmp_path / "wrong.npz")], capsys)
    assert rc == 2 and "needs an array named X" in err
    np.save(tmp_path / "narrow.npy", X[:, :5])
    rc, _, err = run(["predict", "--model", model, "--data", str(tmp_path / "narrow.npy")], capsys)
    assert rc == 2 and "X has 5 features" in err
    rc, _, err = run(["predict", "--model", str(tmp_path / "xy.npz"), "--data", "digits"], capsys)
    assert rc == 2 and "not a saved fastreg model" in err


@has_estimators
def test_train_next_word_many_classes(capsys):
    # Every word of the vocabulary is a class (also those the sample never shows), so the
    # model has --vocab-size outputs and trains on the many-classes epoch.
    import fastreg._core as core

    assert core.epoch_many_classes(2000, False)
    rc, out, err = run(
        [
            "train",
            "--dataset",
            "next-word",
            "--vocab-size",
            "2000",
            "--dim",
            "32",
            "--epochs",
            "2",
            "--plot",
            "none",
            "-q",
        ],
        capsys,
    )
    assert rc == 0, err
    assert "2000 words (Zipf), 32-dim contexts" in out and "15000 train / 5000 test" in out
    test_acc = float(out.split("test accuracy ")[1].split(",")[0])
    assert test_acc > 0.5  # frequent words are learnt in two epochs; chance is ~0.1 (Zipf's top word)
    mem = [ln for ln in out.splitlines() if ln.strip().startswith("memory:")][0]
    assert "a batch's float32 logits are 2 MB" in mem  # 256 x 2000 x 4 B
    speed = [ln for ln in out.splitlines() if ln.strip().startswith("speed:")][0]
    assert "ms/epoch" in speed and "GFLOP/s" in speed


def test_train_next_word_options_need_the_dataset(capsys):
    rc, _, err = run(["train", "--vocab-size", "100", "--plot", "none"], capsys)
    assert rc == 2 and "--vocab-size applies to --dataset next-word only" in err
    rc, _, err = run(["train", "--dataset", "next-word", "--dim", "0", "--plot", "none"], capsys)
    assert rc == 2 and "--dim" in err
