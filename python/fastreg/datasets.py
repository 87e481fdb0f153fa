"""Datasets for the chapter's experiments: Fashion-MNIST (IDX files), scikit-learn's
bundled digits and diabetes, and d2l's synthetic linear-regression data.

Nothing here imports torch. Arrays come back as NumPy arrays: images ``uint8``,
class labels ``int64``, features and regression targets ``float32`` (the dtype
fastreg's kernels and d2l's models use).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import operator
import os
import stat
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from ._checks import check_int, check_real
from ._typing import ArrayLike

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MIRROR",
    "download_fashion_mnist",
    "get_fashion_mnist_labels",
    "load_diabetes",
    "load_digits",
    "load_fashion_mnist",
    "read_idx",
    "synthetic_data",
]

#: The ten Fashion-MNIST class names, in label order (d2l's ``text_labels``).
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)

#: Official Fashion-MNIST mirror (the one zalandoresearch/fashion-mnist links to).
FASHION_MNIST_MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

# split -> (images file stem, labels file stem)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# Published MD5 of each .gz file (zalandoresearch/fashion-mnist README).
_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

# The original (digit) MNIST files share Fashion-MNIST's names and shapes; their MD5s
# only let the error say what the wrong file is.
_MNIST_MD5 = {
    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "d53e105ee54ea40749a09fcbcd1e9432",
    "9fb629c4189551a2d022fa330f9573f3",
    "ec29112dd5afa0611ce80d1b7f02629c",
}

# IDX type code -> big-endian NumPy dtype (yann.lecun.com/exdb/mnist format).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049  # ubyte with 3 dims / with 1 dim
_MAX_DEFLATE_RATIO = 1032  # deflate never expands a stream by more than this


# --------------------------------------------------------------------------- IDX


def _check_regular_file(path: Path) -> None:
    """Raise a clear error unless ``path`` is a regular file (or a link to one): a
    directory or a FIFO would otherwise give a misleading "no such file", or block."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{path} is a directory, not an IDX file")
    kind = (
        "a FIFO (named pipe)"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a character device"
        if stat.S_ISCHR(mode)
        else "a block device"
        if stat.S_ISBLK(mode)
        else "not a file"
    )
    raise ValueError(f"{path} is not a regular file ({kind}); IDX files are read from regular files")


def _open_idx(path: Path):
    """Binary file object for ``path`` and its size (for ``.gz``: None, as a multi-member
    file's decompressed size is only known by reading it)."""
    if path.suffix == ".gz":
        with open(path, "rb") as raw:
            raw.seek(0, os.SEEK_END)
            if raw.tell() < 18:  # 10-byte header + 8-byte trailer
                raise ValueError(f"{path}: not a gzip file (only {raw.tell()} bytes); delete it and fetch it again")
            raw.seek(3)
            if raw.read(1)[0] & 0xE0:
                # RFC 1952: a reserved FLG bit set must be an error (zlib refuses it;
                # Python's gzip module would silently ignore it).
                raise ValueError(f"{path}: corrupt gzip header (reserved flag bits set); delete it and fetch it again")
        # The last member's trailer (ISIZE) gives only that member's size, so it says
        # nothing exact about a multi-member file (valid gzip, which gzip reads whole):
        # the length is checked against the header while reading instead.
        return gzip.open(path, "rb"), None
    return open(path, "rb"), path.stat().st_size


def _read_exact(f, n: int) -> bytes:
    data = f.read(n)
    return data if data is not None else b""


def read_idx(path: str | os.PathLike, *, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (gzipped if its name ends in ``.gz``) into a native-endian array.

    The header is two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, then each
    dimension as a big-endian int32; the data follow, big-endian, C order.

    A ``.gz`` file may hold several gzip members one after another (as ``cat a.gz b.gz``
    makes); they are read as one stream.

    Returns an array of shape ``dims`` (writable, native byte order).
    Raises FileNotFoundError if ``path`` does not exist, IsADirectoryError for a
    directory, and ValueError naming the file for something that is not a regular file
    (a FIFO, a device), a bad magic number, a truncated or over-long file, or a
    truncated or corrupt gzip stream.
    """
    path = Path(os.fspath(path))
    _check_regular_file(path)
    gz = path.suffix == ".gz"
    f, total = _open_idx(path)
    try:
        with f:
            head = _read_exact(f, 4)
            if len(head) < 4:
                raise ValueError(f"{path}: truncated IDX header ({len(head)} of 4 bytes)")
            magic = int.from_bytes(head, "big")
            zero, code, ndim = int.from_bytes(head[:2], "big"), head[2], head[3]
            if zero != 0 or code not in _IDX_DTYPES:
                raise ValueError(f"{path}: not an IDX file (magic number {magic:#010x})")
            if expected_magic is not None and magic != expected_magic:
                raise ValueError(f"{path}: IDX magic number is {magic}, expected {expected_magic}")
            raw_dims = _read_exact(f, 4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise ValueError(f"{path}: truncated IDX header (expected {ndim} dimensions)")
            dims = struct.unpack(f">{ndim}i", raw_dims)
            if any(d < 0 for d in dims):
                raise ValueError(f"{path}: negative dimension in IDX header {dims}")
            dtype = _IDX_DTYPES[code]
            payload = math.prod(dims) * dtype.itemsize
            header = 4 + 4 * ndim
            # Before allocating: deflate never compresses better than ~1032:1, so a
            # corrupt header cannot ask for terabytes.
            if gz and payload > _MAX_DEFLATE_RATIO * path.stat().st_size:
                raise ValueError(
                    f"{path}: truncated or corrupt gzip file (header {dims} needs {payload} data bytes, which "
                    f"cannot come from a {path.stat().st_size}-byte gzip file); delete it and fetch it again"
                )
            if total is not None and total != header + payload:
                have = total - header
                what = "truncated" if have < payload else "longer than its header says"
                raise ValueError(
                    f"{path}: file is {what} (header {dims} needs {payload} data bytes, found {have}); "
                    "delete it and fetch it again"
                )
            try:
                out = np.empty(dims, dtype=dtype)
            except (ValueError, MemoryError) as e:  # e.g. (0, 2**31-1, 2**31-1): too big for NumPy
                raise ValueError(f"{path}: IDX header {dims} cannot be allocated ({e})") from None
            view = memoryview(out.reshape(-1).view(np.uint8))
            got = 0
            while got < payload:  # readinto may return short reads on gzip streams
                n = f.readinto(view[got:])
                if not n:
                    break
                got += n
            if got < payload:
                raise ValueError(
                    f"{path}: file is truncated (header {dims} needs {payload} data bytes, found {got}); "
                    "delete it and fetch it again"
                )
            if f.read(1):
                raise ValueError(
                    f"{path}: file is longer than its header says (header {dims} needs {payload} data bytes); "
                    "delete it and fetch it again"
                )
    except EOFError as e:
        # gzip's reader: the compressed stream ends before its end marker or trailer.
        raise ValueError(f"{path}: truncated or corrupt gzip file ({e}); delete it and fetch it again") from None
    except (OSError, zlib.error) as e:
        if isinstance(e, FileNotFoundError):
            raise
        # gzip.BadGzipFile is an OSError; zlib.error a corrupt deflate stream.
        what = "corrupt gzip file" if gz else "unreadable file"
        raise ValueError(f"{path}: {what} ({e}); delete it and fetch it again") from None
    return out.astype(dtype.newbyteorder("="), copy=False)


# ------------------------------------------------------------------ Fashion-MNIST


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)  # a checksum, not security
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_md5(path: Path, name: str | None = None) -> None:
    """Compare ``path`` with the published MD5 of the file called ``name`` (default: its own name)."""
    name = path.name if name is None else name
    digest = _md5(path)
    want = _MD5[name]
    if digest == want:
        return
    if digest in _MNIST_MD5:
        raise ValueError(
            f"{path} is the original (digit) MNIST file, not Fashion-MNIST; "
            "replace it with the Fashion-MNIST file of the same name (or use download=True)"
        )
    raise ValueError(
        f"{path}: MD5 {digest} does not match the published {want} for {name} (corrupt, partial or "
        "not Fashion-MNIST); delete it and fetch it again, or pass verify=False to skip the check"
    )


def _find(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):  # prefer .gz: its MD5 is published
        p = root / name
        if p.exists():  # read_idx says what it is if not a regular file
            return p
    return None


def _check_split(split) -> str:
    if not isinstance(split, str):
        raise TypeError(f"split must be a str, got {type(split).__name__}")
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


def _check_root(root) -> Path:
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a str or os.PathLike, got {type(root).__name__}")
    return Path(os.fspath(root)).expanduser()


def _progress(total: int | None, desc: str):
    """A tqdm bar if tqdm is installed, else None."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, leave=False)


def _fetch(base: str | None, dest: Path, *, verify: bool) -> None:
    """Download ``dest.name`` from the mirror ``base`` into ``dest``."""
    base = FASHION_MNIST_MIRROR if base is None else str(base)
    url = base.rstrip("/") + "/" + dest.name
    try:
        _download(url, dest, verify=verify)
    except urllib.error.URLError as e:
        raise OSError(f"could not download {url}: {e.reason}") from None


def _download(url: str, dest: Path, *, verify: bool, timeout: float = 60.0) -> None:
    """Fetch ``url`` to ``dest`` through a temp file in the same folder, renamed only
    once complete (and MD5-verified): ``dest`` is never left half-written."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            bar = _progress(total, dest.name)
            try:
                for chunk in iter(lambda: resp.read(1 << 16), b""):
                    out.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
            if total is not None and out.tell() != total:
                raise OSError(f"download of {url} stopped at {out.tell()} of {total} bytes")
        if verify:
            _check_md5(tmp, dest.name)
        os.replace(tmp, dest)  # atomic on POSIX and Windows: dest is whole or absent
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def download_fashion_mnist(
    root: str | os.PathLike, *, mirror: str | None = None, verify: bool = True, force: bool = False
) -> list[Path]:
    """Download the four Fashion-MNIST ``.gz`` files into ``root`` (created if needed).

    Each file goes to a temp file in ``root`` with a progress bar (tqdm, if installed),
    is checked against its published MD5 (unless ``verify=False``) and only then renamed
    into place. Files already present are kept unless ``force=True``.
    Returns the paths of the four files. Raises OSError when the mirror cannot be reached.
    """
    root = _check_root(root)
    paths = []
    for stems in _FILES.values():
        for stem in stems:
            dest = root / (stem + ".gz")
            if force or not dest.is_file():
                _fetch(mirror, dest, verify=verify)
            paths.append(dest)
    return paths


def load_fashion_mnist(
    root: str | os.PathLike,
    split: str = "train",
    download: bool = False,
    verify: bool = True,
    *,
    mirror: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Load a Fashion-MNIST split from the standard IDX files in ``root``.

    Files: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte`` (split="train") or
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (split="test"), each gzipped
    (``.gz``) or not; a ``.gz`` file is preferred when both exist.

    Returns ``(images, labels)``: images uint8[N, 28, 28] (0 = background), labels
    int64[N] in [0, 10) (names in :data:`FASHION_MNIST_CLASSES`).

    verify: check each ``.gz`` file against its published MD5 (this is what tells a
        corrupt file, or a digit-MNIST file, from the real one; plain files are only
        checked for a consistent header and size).
    download: fetch missing files from ``mirror`` (default :data:`FASHION_MNIST_MIRROR`).

    Raises FileNotFoundError for a missing file (saying where to put it), ValueError for a
    truncated, corrupt, mismatched or wrong file (saying which file and what to do).
    """
    split = _check_split(split)
    root = _check_root(root)
    for name, flag in (("download", download), ("verify", verify)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    arrays = []
    for stem, magic in zip(_FILES[split], (_IMAGES_MAGIC, _LABELS_MAGIC)):
        path = _find(root, stem)
        if path is None and download:
            path = root / (stem + ".gz")
            _fetch(mirror, path, verify=verify)
        if path is None:
            raise FileNotFoundError(
                f"Fashion-MNIST file {stem}[.gz] not found in {root}; put the four files "
                f"(train-images-idx3-ubyte.gz, ...) there, or pass download=True"
            )
        _check_regular_file(path)
        if verify and path.suffix == ".gz":
            _check_md5(path)
        try:
            arr = read_idx(path, expected_magic=magic)
        except ValueError as e:
            if "magic number is" in str(e):
                kind = "images" if magic == _IMAGES_MAGIC else "labels"
                raise ValueError(f"{e} ({kind} file); is it the right file?") from None
            raise
        arrays.append((path, arr))
    (ipath, images), (lpath, labels) = arrays
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{ipath}: images are {images.shape[1:]}, expected 28x28 (not a Fashion-MNIST file)")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{ipath} has {images.shape[0]} images but {lpath} has {labels.shape[0]} labels; "
            "the two files do not belong together"
        )
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        bad = int(np.argmax(labels >= len(FASHION_MNIST_CLASSES)))
        raise ValueError(f"{lpath}: labels must be in [0, 10), got {int(labels[bad])} at row {bad}")
    return images, labels.astype(np.int64)


def get_fashion_mnist_labels(labels: ArrayLike) -> list[str]:
    """Class names for integer labels (d2l's ``get_fashion_mnist_labels``).

    labels: an int or a sequence / int array / torch tensor of ints in [0, 10).
    Returns a list of str, one per label.
    """
    if hasattr(labels, "detach"):  # a torch tensor (torch is never imported here)
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise TypeError(f"labels must be integers, got dtype {arr.dtype}")
    flat = arr.reshape(-1).astype(np.int64, copy=False)
    bad = np.flatnonzero((flat < 0) | (flat >= len(FASHION_MNIST_CLASSES)))
    if bad.size:
        raise IndexError(f"labels must be in [0, 10), got {int(flat[bad[0]])} at position {int(bad[0])}")
    return [FASHION_MNIST_CLASSES[i] for i in flat]


# ------------------------------------------------------------------ scikit-learn


def _sklearn_datasets():
    try:
        from sklearn import datasets
    except ImportError:
        raise ImportError(
            "this dataset comes with scikit-learn: pip install scikit-learn (or pip install 'fastreg[demo]')"
        ) from None
    return datasets


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, no download).

    Returns ``(X, y)``: X float32[1797, 64] with pixels scaled from 0..16 to [0, 1],
    y int64[1797] in [0, 10).
    """
    d = _sklearn_datasets().load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


def load_diabetes() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled diabetes regression data (442 patients, no download).

    Returns ``(X, y)``: X float32[442, 10] (scikit-learn's mean-centred, scaled
    features), y float32[442] (disease progression after one year, about 25..346).
    """
    d = _sklearn_datasets().load_diabetes()
    return d.data.astype(np.float32), d.target.astype(np.float32)


# --------------------------------------------------------------------- synthetic


def synthetic_data(
    w: ArrayLike,
    b: float,
    num_examples: int,
    noise: float = 0.01,
    noise_dist: str = "normal",
    seed: int | np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """d2l's ``synthetic_data``: ``y = X w + b + eps`` with ``X ~ N(0, 1)``.

    w: float[d] (a sequence, array or tensor; d >= 1); b: a number; num_examples >= 1.
    noise: standard deviation of eps (>= 0). noise_dist: ``"normal"`` (d2l) or
    ``"laplace"`` (the chapter's exercise; scale ``noise / sqrt(2)`` so the standard
    deviation is the same). seed: an int, a ``numpy.random.Generator`` or None.

    Returns ``(X, y)``: X float32[num_examples, d], y float32[num_examples]
    (d2l returns y as ``[n, 1]``: use ``y[:, None]`` for that).
    """
    if hasattr(w, "detach"):
        w = w.detach().cpu().numpy()
    w_arr = np.asarray(w)
    if w_arr.dtype == np.bool_ or not np.issubdtype(w_arr.dtype, np.number) or np.iscomplexobj(w_arr):
        raise TypeError(f"w must be real numbers, got dtype {w_arr.dtype}")
    w_arr = w_arr.astype(np.float64)
    if w_arr.ndim != 1 or w_arr.size == 0:
        raise ValueError(f"w must be a non-empty 1-D vector, got shape {w_arr.shape}")
    if not np.all(np.isfinite(w_arr)):
        raise ValueError("w must be finite (no NaN or inf)")
    if isinstance(b, bool) or not isinstance(b, (int, float, np.integer, np.floating)):
        raise TypeError(f"b must be a number, got {type(b).__name__}")
    if not math.isfinite(b):
        raise ValueError(f"b must be finite, got {b}")
    if isinstance(num_examples, bool):
        raise TypeError("num_examples must be an int, got bool")
    try:
        num_examples = operator.index(num_examples)
    except TypeError:
        raise TypeError(f"num_examples must be an int, got {type(num_examples).__name__}") from None
    if num_examples < 1:
        raise ValueError(f"num_examples must be >= 1, got {num_examples}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.integer, np.floating)):
        raise TypeError(f"noise must be a number, got {type(noise).__name__}")
    if not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise}")
    if noise_dist not in ("normal", "laplace"):
        raise ValueError(f"noise_dist must be 'normal' or 'laplace', got {noise_dist!r}")
    if seed is not None and not isinstance(seed, (np.random.Generator, int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, a numpy.random.Generator or None, got {type(seed).__name__}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    X = rng.standard_normal((num_examples, w_arr.size))
    if noise_dist == "normal":
        eps = rng.normal(0.0, noise, num_examples)
    else:
        eps = rng.laplace(0.0, noise / math.sqrt(2.0), num_examples)
    y = X @ w_arr + float(b) + eps
    return X.astype(np.float32), y.astype(np.float32)


def next_word_data(
    vocab_size: int = 32000,
    dim: int = 128,
    num_examples: int = 20000,
    *,
    exponent: float = 1.1,
    noise: float = 0.5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic next-word task over a large vocabulary (d2l 3.4's question of softmax
    regression with very many classes): ``(X float32[num_examples, dim], y int64[num_examples])``.

    Every word ``v`` of the vocabulary has a random embedding ``e_v`` (entries N(0, 1/dim), so
    ``|e_v|`` is about 1); an example's next word ``y`` follows Zipf's law,
    ``P(y = v) ~ 1 / (v + 1)**exponent``, as word frequencies do; its context vector is
    ``X = e_y + N(0, noise**2 / dim)`` per entry. Softmax regression can learn it (the best
    linear rule scores every word by ``X . e_v - |e_v|**2 / 2``); frequent words are learnt
    first, rare ones need many epochs or never occur in a small sample.
    """
    vocab_size = check_int(vocab_size, "vocab_size", minimum=2)
    dim = check_int(dim, "dim", minimum=1)
    num_examples = check_int(num_examples, "num_examples", minimum=1)
    exponent, noise = check_real(exponent, "exponent"), check_real(noise, "noise")
    for name, value in (("exponent", exponent), ("noise", noise)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    rng = np.random.default_rng(seed)
    freq = np.arange(1, vocab_size + 1, dtype=np.float64) ** -exponent
    y = rng.choice(vocab_size, size=num_examples, p=freq / freq.sum())
    emb = rng.standard_normal((vocab_size, dim), dtype=np.float32)
    emb *= np.float32(1 / np.sqrt(dim))
    X = emb[y]
    X += rng.standard_normal(X.shape, dtype=np.float32) * np.float32(noise / np.sqrt(dim))
    return X, y.astype(np.int64)
