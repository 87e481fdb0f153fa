"""fastreg.datasets: IDX parsing, Fashion-MNIST loading/verification/download (from
small files written to a temp dir: nothing here needs the real files or the network),
scikit-learn datasets and synthetic data."""

import gzip
import hashlib
import os
import struct
import urllib.request

import numpy as np
import pytest

from fastreg import datasets
from fastreg.datasets import (
    FASHION_MNIST_CLASSES,
    download_fashion_mnist,
    get_fashion_mnist_labels,
    load_fashion_mnist,
    read_idx,
    synthetic_data,
)

CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(arr: np.ndarray, code: int | None = None) -> bytes:
    """IDX encoding of ``arr`` (independent of the parser: struct + big-endian tobytes)."""
    code = CODES[arr.dtype.type] if code is None else code
    head = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}i", *arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write(path, data: bytes, gz: bool):
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_split(root, split, n, rng, gz=True, labels=None, image_shape=(28, 28)):
    img_stem, lab_stem = datasets._FILES[split]
    images = rng.integers(0, 256, (n, *image_shape), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8) if labels is None else labels
    write(root / img_stem, idx_bytes(images), gz)
    write(root / lab_stem, idx_bytes(labels), gz)
    return images, labels


# ------------------------------------------------------------------------ read_idx


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", list(CODES))
def test_read_idx_round_trips_every_type(tmp_path, rng, dtype, gz):
    shape = tuple(int(s) for s in rng.integers(1, 7, int(rng.integers(1, 4))))
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        arr = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    else:
        arr = rng.standard_normal(shape).astype(dtype)
    path = write(tmp_path / "a-idx", idx_bytes(arr), gz)
    got = read_idx(path)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    assert got.shape == arr.shape and got.flags.writeable
    np.testing.assert_array_equal(got, arr)


def test_read_idx_empty_dimension(tmp_path):
    got = read_idx(write(tmp_path / "e", idx_bytes(np.zeros((0, 28, 28), np.uint8)), gz=True))
    assert got.shape == (0, 28, 28)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_and_overlong_files(tmp_path, rng, gz):
    data = idx_bytes(rng.integers(0, 256, (5, 4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"truncated .*delete it"):
        read_idx(write(tmp_path / "short", data[:-3], gz))
    with pytest.raises(ValueError, match="longer than its header"):
        read_idx(write(tmp_path / "long", data + b"\0", gz))
    with pytest.raises(ValueError, match="truncated IDX header"):
        read_idx(write(tmp_path / "head", data[:9], gz))
    with pytest.raises(ValueError, match="truncated IDX header"):
        read_idx(write(tmp_path / "tiny", data[:2], gz))


def test_bad_magic_and_expected_magic(tmp_path, rng):
    arr = rng.integers(0, 256, (3, 2), dtype=np.uint8)
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(write(tmp_path / "x", b"\x01\x00" + idx_bytes(arr)[2:], gz=False))
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(write(tmp_path / "y", idx_bytes(arr, code=0x0A), gz=False))
    with pytest.raises(ValueError, match="magic number is 2050, expected 2051"):
        read_idx(write(tmp_path / "z", idx_bytes(arr), gz=True), expected_magic=2051)


def test_huge_header_is_refused_before_allocating(tmp_path):
    # A corrupt header claiming 2**31-1 x 784 bytes must not try to allocate them.
    data = struct.pack(">BBBB3i", 0, 0, 8, 3, 2**31 - 1, 28, 28) + b"\0" * 100
    for gz in (False, True):
        with pytest.raises(ValueError, match="truncated"):
            read_idx(write(tmp_path / f"huge{gz}", data, gz))


def test_corrupt_gzip(tmp_path, rng):
    data = gzip.compress(idx_bytes(rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)))
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF  # damage the deflate stream, keep the trailer's size
    (tmp_path / "bad.gz").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match=r"bad\.gz: (truncated or )?corrupt gzip file"):
        read_idx(tmp_path / "bad.gz")
    (tmp_path / "plain.gz").write_bytes(b"this is not gzip at all, just text")
    with pytest.raises(ValueError, match="plain.gz"):
        read_idx(tmp_path / "plain.gz")
    (tmp_path / "tiny.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(ValueError, match="not a gzip file"):
        read_idx(tmp_path / "tiny.gz")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        read_idx(tmp_path / "nope")


@pytest.mark.parametrize("members", [2, 3, 7])
def test_multi_member_gzip(tmp_path, rng, members):
    """Several gzip members one after another (cat a.gz b.gz) are one valid stream."""
    arr = rng.integers(0, 256, (20, 5, 3), dtype=np.uint8)
    data = idx_bytes(arr)
    cuts = np.sort(rng.choice(np.arange(1, len(data)), members - 1, replace=False))
    parts = np.split(np.frombuffer(data, np.uint8), cuts)
    path = tmp_path / "multi.gz"
    path.write_bytes(b"".join(gzip.compress(p.tobytes()) for p in parts))
    assert gzip.decompress(path.read_bytes()) == data  # the reference reader agrees
    np.testing.assert_array_equal(read_idx(path), arr)
    f32 = rng.standard_normal((4, 6)).astype(np.float32)
    head, body = idx_bytes(f32)[:12], idx_bytes(f32)[12:]
    path.write_bytes(gzip.compress(head) + gzip.compress(body[:7]) + gzip.compress(body[7:]))
    np.testing.assert_array_equal(read_idx(path), f32)
    # the members still hold exactly what the header says
    path.write_bytes(gzip.compress(data) + gzip.compress(b"\0"))
    with pytest.raises(ValueError, match="longer than its header says"):
        read_idx(path)
    path.write_bytes(gzip.compress(data[:-5]) + gzip.compress(b""))
    with pytest.raises(
        ValueError, match=r"multi.gz: file is truncated \(header \(20, 5, 3\) needs 300 data bytes, found 295\)"
    ):
        read_idx(path)


def test_truncated_gzip_is_called_truncated(tmp_path, rng):
    data = gzip.compress(idx_bytes(rng.integers(0, 256, (200, 28, 28), dtype=np.uint8)))
    for keep in (len(data) - 1, len(data) - 8, len(data) // 2, 40):
        path = tmp_path / "cut.gz"
        path.write_bytes(data[:keep])
        with pytest.raises(ValueError) as info:
            read_idx(path)
        message = str(info.value)
        assert "cut.gz: truncated or corrupt gzip file" in message, message
        assert "longer than its header" not in message


def test_directory_and_fifo_paths(tmp_path):
    (tmp_path / "dir.gz").mkdir()
    (tmp_path / "dir").mkdir()
    for name in ("dir.gz", "dir"):
        with pytest.raises(IsADirectoryError, match=f"{name} is a directory, not an IDX file"):
            read_idx(tmp_path / name)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe")
        with pytest.raises(ValueError, match=r"pipe is not a regular file \(a FIFO \(named pipe\)\)"):
            read_idx(tmp_path / "pipe")  # must not block waiting for a writer
        stem = datasets._FILES["test"][0]
        os.mkfifo(tmp_path / stem)
        with pytest.raises(ValueError, match="not a regular file"):
            load_fashion_mnist(tmp_path, "test")
    stem = datasets._FILES["train"][0]
    (tmp_path / (stem + ".gz")).mkdir()
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_fashion_mnist(tmp_path, "train")


# ---------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_small_split(tmp_path, rng, split, gz):
    n = int(rng.integers(1, 40))
    images, labels = write_split(tmp_path, split, n, rng, gz=gz)
    X, y = load_fashion_mnist(tmp_path, split, verify=False)
    assert X.dtype == np.uint8 and X.shape == (n, 28, 28)
    assert y.dtype == np.int64 and y.shape == (n,)
    np.testing.assert_array_equal(X, images)
    np.testing.assert_array_equal(y, labels)


def test_prefers_gz_when_both_exist(tmp_path, rng):
    images, labels = write_split(tmp_path, "test", 4, rng, gz=True)
    write_split(tmp_path, "test", 6, rng, gz=False)
    X, _ = load_fashion_mnist(str(tmp_path), split="test", verify=False)
    np.testing.assert_array_equal(X, images)


def test_md5_verification(tmp_path, rng, monkeypatch):
    write_split(tmp_path, "train", 3, rng)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz: MD5 .* verify=False"):
        load_fashion_mnist(tmp_path, "train")
    # With the digests of these files as the published ones, verification passes.
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    monkeypatch.setattr(datasets, "_MD5", {**datasets._MD5, **md5})
    X, y = load_fashion_mnist(tmp_path, "train")
    assert X.shape == (3, 28, 28)


def test_digit_mnist_file_is_named_as_such(tmp_path, rng, monkeypatch):
    write_split(tmp_path, "test", 3, rng)
    digest = hashlib.md5((tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes()).hexdigest()
    monkeypatch.setattr(datasets, "_MNIST_MD5", {digest})
    with pytest.raises(ValueError, match="original \\(digit\\) MNIST file, not Fashion-MNIST"):
        load_fashion_mnist(tmp_path, "test")


def test_plain_files_are_not_md5_checked(tmp_path, rng):
    images, _ = write_split(tmp_path, "test", 2, rng, gz=False)
    np.testing.assert_array_equal(load_fashion_mnist(tmp_path, "test")[0], images)


def test_missing_files_say_where_and_how(tmp_path, rng):
    with pytest.raises(FileNotFoundError, match=f"t10k-images-idx3-ubyte.* in {tmp_path}.*download=True"):
        load_fashion_mnist(tmp_path, "test")
    img_stem, _ = datasets._FILES["test"]
    write(tmp_path / img_stem, idx_bytes(np.zeros((2, 28, 28), np.uint8)), gz=True)
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_fashion_mnist(tmp_path, "test", verify=False)


def test_mismatched_and_wrong_files(tmp_path, rng):
    img_stem, lab_stem = datasets._FILES["train"]
    write_split(tmp_path, "train", 5, rng)
    write(tmp_path / lab_stem, idx_bytes(rng.integers(0, 10, 4, dtype=np.uint8)), gz=True)
    with pytest.raises(ValueError, match="5 images but .* 4 labels"):
        load_fashion_mnist(tmp_path, verify=False)
    write(tmp_path / lab_stem, idx_bytes(np.array([1, 2, 12, 3, 4], np.uint8)), gz=True)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\), got 12 at row 2"):
        load_fashion_mnist(tmp_path, verify=False)
    # images and labels swapped
    write(tmp_path / lab_stem, idx_bytes(np.zeros((5, 28, 28), np.uint8)), gz=True)
    with pytest.raises(ValueError, match="magic number is 2051, expected 2049 .labels file"):
        load_fashion_mnist(tmp_path, verify=False)
    write_split(tmp_path, "train", 5, rng, image_shape=(8, 8))
    with pytest.raises(ValueError, match="expected 28x28"):
        load_fashion_mnist(tmp_path, verify=False)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(split="validation"), ValueError, "'train' or 'test'"),
        (dict(split=1), TypeError, "split must be a str"),
        (dict(download="yes"), TypeError, "download must be a bool"),
        (dict(verify=None), TypeError, "verify must be a bool"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        load_fashion_mnist(tmp_path, **kwargs)


def test_bad_root_type():
    with pytest.raises(TypeError, match="root must be"):
        load_fashion_mnist(3)


# --------------------------------------------------------------------- download


@pytest.fixture
def mirror(tmp_path, rng, monkeypatch):
    """A local file:// mirror holding four small .gz files whose MD5s are 'published'."""
    src = tmp_path / "mirror"
    src.mkdir()
    data = {}
    for split in ("train", "test"):
        data[split] = write_split(src, split, int(rng.integers(1, 20)), rng)
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in src.iterdir()}
    monkeypatch.setattr(datasets, "_MD5", md5)
    monkeypatch.setattr(datasets, "_progress", lambda total, desc: None)  # quiet in tests
    return src.as_uri(), data


def test_download_then_load(tmp_path, mirror):
    url, data = mirror
    root = tmp_path / "data" / "fmnist"
    X, y = load_fashion_mnist(root, "test", download=True, mirror=url)
    np.testing.assert_array_equal(X, data["test"][0])
    np.testing.assert_array_equal(y, data["test"][1])
    assert sorted(p.name for p in root.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    paths = download_fashion_mnist(root, mirror=url)
    assert len(paths) == 4 and all(p.is_file() for p in paths)
    assert not list(root.glob("*.part"))


def test_download_with_bad_md5_leaves_nothing(tmp_path, mirror, monkeypatch):
    url, _ = mirror
    monkeypatch.setitem(datasets._MD5, "t10k-images-idx3-ubyte.gz", "0" * 32)
    root = tmp_path / "dl"
    with pytest.raises(ValueError, match="MD5"):
        load_fashion_mnist(root, "test", download=True, mirror=url)
    assert list(root.iterdir()) == []
    X, _ = load_fashion_mnist(root, "test", download=True, verify=False, mirror=url)
    assert X.shape[1:] == (28, 28)


def test_interrupted_download_leaves_nothing(tmp_path, mirror, monkeypatch):
    url, _ = mirror
    real = urllib.request.urlopen

    class Broken:
        def __init__(self, resp):
            self.resp, self.headers, self.calls = resp, resp.headers, 0

        def read(self, n):
            self.calls += 1
            if self.calls > 1:
                raise ConnectionResetError("connection reset by peer")
            return self.resp.read(10)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.resp.close()

    monkeypatch.setattr(urllib.request, "urlopen", lambda u, timeout: Broken(real(u, timeout=timeout)))
    root = tmp_path / "dl"
    with pytest.raises(ConnectionResetError):
        download_fashion_mnist(root, mirror=url)
    assert list(root.iterdir()) == []


def test_short_download_is_refused(tmp_path, mirror, monkeypatch):
    url, _ = mirror
    real = urllib.request.urlopen

    def short(u, timeout):
        resp = real(u, timeout=timeout)
        body = resp.read()
        resp.close()

        class Resp:
            headers = {"Content-Length": str(len(body) + 100)}
            _buf = [body]

            def read(self, n):
                return self._buf.pop() if self._buf else b""

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                pass

        return Resp()

    monkeypatch.setattr(urllib.request, "urlopen", short)
    with pytest.raises(OSError, match="stopped at"):
        download_fashion_mnist(tmp_path / "dl", mirror=url, verify=False)
    assert list((tmp_path / "dl").iterdir()) == []


def test_unreachable_mirror(tmp_path):
    with pytest.raises(OSError, match="could not download"):
        download_fashion_mnist(tmp_path / "dl", mirror=(tmp_path / "absent").as_uri())
    assert list((tmp_path / "dl").iterdir()) == []


# ----------------------------------------------------------------------- labels


def test_class_names():
    assert len(FASHION_MNIST_CLASSES) == 10 and FASHION_MNIST_CLASSES[0] == "t-shirt"
    assert FASHION_MNIST_CLASSES[9] == "ankle boot"


def test_get_labels(rng):
    torch = pytest.importorskip("torch")
    labels = rng.integers(0, 10, 50)
    want = [FASHION_MNIST_CLASSES[i] for i in labels]
    assert get_fashion_mnist_labels(labels) == want
    assert get_fashion_mnist_labels(labels.tolist()) == want
    assert get_fashion_mnist_labels(torch.from_numpy(labels)) == want
    assert get_fashion_mnist_labels(labels.astype(np.uint8)) == want
    assert get_fashion_mnist_labels(3) == ["dress"]
    assert get_fashion_mnist_labels([]) == []


@pytest.mark.parametrize(
    "labels, exc, match",
    [
        ([1, 10], IndexError, r"\[0, 10\), got 10 at position 1"),
        ([-1], IndexError, "got -1"),
        ([0.5], TypeError, "integers"),
        ([True], TypeError, "integers"),
        (["a"], TypeError, "integers"),
    ],
)
def test_get_labels_errors(labels, exc, match):
    with pytest.raises(exc, match=match):
        get_fashion_mnist_labels(labels)


# ----------------------------------------------------------------- scikit-learn


def test_digits_and_diabetes_match_sklearn():
    sk = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_digits()
    ref = sk.load_digits()
    assert X.dtype == np.float32 and X.shape == (1797, 64) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_allclose(X, ref.data / 16, rtol=1e-7)
    np.testing.assert_array_equal(y, ref.target)
    X, y = datasets.load_diabetes()
    ref = sk.load_diabetes()
    assert X.dtype == np.float32 and X.shape == (442, 10) and y.dtype == np.float32 and y.shape == (442,)
    np.testing.assert_allclose(X, ref.data, rtol=1e-6)
    np.testing.assert_allclose(y, ref.target, rtol=1e-6)


def test_sklearn_missing_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        datasets.load_digits()


# -------------------------------------------------------------------- synthetic


@pytest.mark.parametrize("dist", ["normal", "laplace"])
def test_synthetic_data_statistics(rng, dist):
    d = int(rng.integers(1, 6))
    w = rng.standard_normal(d)
    b = float(rng.standard_normal())
    noise = float(rng.uniform(0.1, 1.0))
    n = 200_000
    X, y = synthetic_data(w, b, n, noise=noise, noise_dist=dist, seed=int(rng.integers(2**31)))
    assert X.dtype == np.float32 and X.shape == (n, d) and y.dtype == np.float32 and y.shape == (n,)
    Xd = X.astype(np.float64)
    np.testing.assert_allclose(Xd.mean(0), 0, atol=0.02)
    np.testing.assert_allclose(Xd.std(0), 1, atol=0.02)
    eps = y - (Xd @ w + b)
    assert abs(eps.mean()) < 0.02 * noise + 1e-6
    assert abs(eps.std() / noise - 1) < 0.03
    # Excess kurtosis: 0 for a Gaussian, 3 for a Laplace distribution.
    kurt = np.mean((eps - eps.mean()) ** 4) / eps.var() ** 2 - 3
    assert abs(kurt - (0.0 if dist == "normal" else 3.0)) < 0.5
    # Least squares recovers w and b.
    coef, *_ = np.linalg.lstsq(np.c_[Xd, np.ones(n)], y.astype(np.float64), rcond=None)
    np.testing.assert_allclose(coef, np.r_[w, b], atol=0.02)


def test_synthetic_data_seed_and_torch_input(rng):
    torch = pytest.importorskip("torch")
    w = torch.tensor([2.0, -3.4])
    a = synthetic_data(w, 4.2, 100, seed=5)
    b = synthetic_data(np.array([2.0, -3.4], np.float32), 4.2, 100, seed=5)  # torch.tensor is float32
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = synthetic_data([2.0, -3.4], 4.2, 100, seed=6)
    assert not np.array_equal(a[0], c[0])
    X, y = synthetic_data(np.array([1.0]), 0, 7, noise=0, seed=np.random.default_rng(1))
    np.testing.assert_allclose(y, X[:, 0], rtol=1e-6)


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        (([], 0.0, 10), {}, ValueError, "non-empty 1-D"),
        (([[1.0]], 0.0, 10), {}, ValueError, "1-D"),
        ((["a"], 0.0, 10), {}, TypeError, "w must be real"),
        (([np.nan], 0.0, 10), {}, ValueError, "finite"),
        (([1.0], "0", 10), {}, TypeError, "b must be a number"),
        (([1.0], np.inf, 10), {}, ValueError, "b must be finite"),
        (([1.0], 0.0, 0), {}, ValueError, "num_examples must be >= 1"),
        (([1.0], 0.0, 2.5), {}, TypeError, "num_examples must be an int"),
        (([1.0], 0.0, True), {}, TypeError, "num_examples"),
        (([1.0], 0.0, 10), dict(noise=-1), ValueError, "noise must be"),
        (([1.0], 0.0, 10), dict(noise=np.nan), ValueError, "noise must be"),
        (([1.0], 0.0, 10), dict(noise_dist="cauchy"), ValueError, "'normal' or 'laplace'"),
        (([1.0], 0.0, 10), dict(seed="x"), TypeError, "seed"),
        (([1.0], 0.0, 10), dict(seed=True), TypeError, "seed"),
    ],
)
def test_synthetic_data_errors(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        synthetic_data(*args, **kwargs)


# -------------------------------------------------------------------- next word


def test_next_word_data_statistics():
    from fastreg.datasets import next_word_data

    V, dim, n = 500, 64, 40_000
    X, y = next_word_data(V, dim, n, exponent=1.1, noise=0.5, seed=3)
    assert X.dtype == np.float32 and X.shape == (n, dim) and y.dtype == np.int64 and y.shape == (n,)
    assert y.min() >= 0 and y.max() < V
    # Zipf's law: the frequency of rank r falls as r ** -1.1 (the top ranks are well sampled).
    counts = np.bincount(y, minlength=V).astype(np.float64)
    p = np.arange(1, V + 1) ** -1.1
    p /= p.sum()
    np.testing.assert_allclose(counts[:5] / n, p[:5], rtol=0.05)
    # Same seed, same data; the contexts of a word scatter around one embedding with
    # per-entry variance noise**2 / dim, and the embeddings have norm ~1.
    X2, y2 = next_word_data(V, dim, n, exponent=1.1, noise=0.5, seed=3)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    top = X[y == 0].astype(np.float64)
    center = top.mean(0)
    assert abs(np.linalg.norm(center) - 1) < 0.3
    np.testing.assert_allclose((top - center).var(), 0.25 / dim, rtol=0.05)
    # The nearest-embedding rule (what softmax regression can learn) beats chance by far.
    centers = np.stack([X[y == v].mean(0) if (y == v).any() else np.zeros(dim, np.float32) for v in range(V)])
    pred = np.argmax(X @ centers.T - 0.5 * (centers**2).sum(1), axis=1)
    assert np.mean(pred == y) > 0.9


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(vocab_size=1), ValueError, "vocab_size"),
        (dict(dim=0), ValueError, "dim"),
        (dict(num_examples=0), ValueError, "num_examples"),
        (dict(vocab_size=2.5), TypeError, "vocab_size"),
        (dict(exponent=-1.0), ValueError, "exponent must be a finite number >= 0"),
        (dict(noise=np.inf), ValueError, "noise must be a finite number >= 0"),
        (dict(noise="1"), TypeError, "noise must be a real number"),
    ],
)
def test_next_word_data_errors(kwargs, exc, match):
    from fastreg.datasets import next_word_data

    with pytest.raises(exc, match=match):
        next_word_data(**{"vocab_size": 10, "dim": 4, "num_examples": 5, **kwargs})
