"""The IDX parser (fastreg.datasets.read_idx) fed random, truncated and corrupted
bytes, plain and gzipped: it returns the array the bytes encode or raises a
ValueError naming the file. Never another exception, never a huge allocation."""

from __future__ import annotations

import gzip
import math
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastreg.datasets import read_idx

FUZZ = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def encode(a: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}i", *a.shape)
    return header + a.astype(CODES[code]).tobytes()


def decode(raw: bytes):
    """The reference parser: the array `raw` encodes, or None if it is not a valid IDX file."""
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in CODES:
        return None
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        return None
    dims = struct.unpack(f">{ndim}i", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(CODES[raw[2]])
    if any(d < 0 for d in dims) or len(raw) != 4 + 4 * ndim + math.prod(dims) * dtype.itemsize:
        return None
    return np.frombuffer(raw[4 + 4 * ndim :], dtype).reshape(dims)


def parse(tmp_path, raw: bytes, gz: bool, name="f.idx"):
    path = tmp_path / (name + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(raw) if gz else raw)
    try:
        return read_idx(path), None
    except ValueError as e:
        assert str(path) in str(e), f"message does not name the file: {e}"
        return None, e


def check(tmp_path, raw: bytes, gz: bool):
    got, err = parse(tmp_path, raw, gz)
    want = decode(raw)
    if want is None:
        assert err is not None, f"accepted invalid bytes {raw[:16]!r}..."
    else:
        assert err is None, err
        assert got.dtype == want.dtype.newbyteorder("=") and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@st.composite
def valid_idx(draw):
    code = draw(st.sampled_from(sorted(CODES)))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    seed = draw(st.integers(0, 2**32 - 1))
    raw = np.random.default_rng(seed).integers(
        0, 256, math.prod(shape) * np.dtype(CODES[code]).itemsize, dtype=np.uint8
    )
    return np.frombuffer(raw.tobytes(), CODES[code]).reshape(shape), code


@FUZZ
@given(raw=st.binary(max_size=64), gz=st.booleans())
def test_random_bytes(tmp_path, raw, gz):
    check(tmp_path, raw, gz)


@FUZZ
@given(data=st.data(), gz=st.booleans())
def test_valid_files_round_trip_and_any_cut_is_refused(tmp_path, data, gz):
    a, code = data.draw(valid_idx())
    raw = encode(a, code)
    check(tmp_path, raw, gz)
    cut = data.draw(st.integers(0, len(raw)))
    check(tmp_path, raw[:cut], gz)
    check(tmp_path, raw + data.draw(st.binary(min_size=1, max_size=8)), gz)


@FUZZ
@given(data=st.data(), gz=st.booleans())
def test_corrupted_header_or_payload(tmp_path, data, gz):
    a, code = data.draw(valid_idx())
    raw = bytearray(encode(a, code))
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, min(len(raw) - 1, 4 + 4 * a.ndim + 3)))
        raw[pos] = data.draw(st.integers(0, 255))
    check(tmp_path, bytes(raw), gz)


@FUZZ
@given(
    dims=st.lists(st.sampled_from([0, 1, 2**15, 2**16, 2**31 - 1]), min_size=1, max_size=4),
    code=st.sampled_from(sorted(CODES)),
    gz=st.booleans(),
)
def test_huge_dimensions_are_refused_without_allocating(tmp_path, dims, code, gz):
    header = bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}i", *dims)
    got, err = parse(tmp_path, header, gz)
    if math.prod(dims) == 0:  # empty: fine, unless NumPy cannot hold that shape at all
        assert (err is None and got.shape == tuple(dims)) or "cannot be allocated" in str(err)
    else:
        assert err is not None


def test_gzip_isize_wraparound_is_refused(tmp_path):
    # 2**16 * 2**16 * 2 bytes = 2**33: the gzip size field (mod 2**32) matches an
    # empty payload, so only the deflate-ratio bound stops an 8 GiB allocation.
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3i", 2**16, 2**16, 2)
    got, err = parse(tmp_path, header, gz=True)
    assert err is not None and "cannot come from" in str(err)


@FUZZ
@given(data=st.data())
def test_corrupted_gzip_stream(tmp_path, data):
    a, code = data.draw(valid_idx())
    packed = bytearray(gzip.compress(encode(a, code)))
    mode = data.draw(st.sampled_from(["cut", "flip"]))
    if mode == "cut":
        packed = packed[: data.draw(st.integers(0, len(packed) - 1))]
    else:
        pos = data.draw(st.integers(0, len(packed) - 1))
        packed[pos] ^= data.draw(st.integers(1, 255))
    path = tmp_path / "f.idx.gz"
    path.write_bytes(bytes(packed))
    try:
        got = read_idx(path)
    except ValueError as e:
        assert str(path) in str(e)
        return
    # A flip the gzip CRC cannot see (e.g. in the header's mtime) may still decode correctly.
    try:
        raw = zlib.decompress(bytes(packed), wbits=31)
    except zlib.error:
        pytest.fail("read_idx accepted a stream zlib rejects")
    np.testing.assert_array_equal(got, decode(raw))


@pytest.mark.parametrize("bit", [0x20, 0x40, 0x80])
def test_reserved_gzip_flag_is_refused(tmp_path, bit):
    # Found by hypothesis: Python's gzip module ignores reserved FLG bits, zlib (and RFC 1952) refuse them.
    packed = bytearray(gzip.compress(encode(np.arange(5, dtype=np.uint8), 8)))
    packed[3] |= bit
    path = tmp_path / "f.idx.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(ValueError, match="reserved flag"):
        read_idx(path)
