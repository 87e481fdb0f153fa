"""Integers out of range get an error naming the argument, never a binding's message.

The C++ kernels take 64-bit integers. A Python int past that range used to reach a
pybind11 binding, which answered with "incompatible function arguments" and a list of C++
signatures; an unsigned label past 2**63 was reported as a negative number; and a huge
thread count started hundreds of threads that lived as long as the process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastreg
from fastreg import ops

HUGE = (2**63, 2**64, 2**70)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((10, 3)).astype(np.float32), rng.integers(0, 3, 10)


def _no_binding_message(excinfo) -> None:
    assert "incompatible" not in str(excinfo.value)


@pytest.mark.parametrize("big", HUGE)
def test_dataloader_batch_size_and_seed(data, big):
    X, y = data
    with pytest.raises(OverflowError, match="batch_size") as e:
        fastreg.DataLoader((X, y), big)
    _no_binding_message(e)
    with pytest.raises(OverflowError, match="batch_size"):
        fastreg.data.data_iter(big, X, y)
    with pytest.raises(OverflowError, match="batch_size"):
        fastreg.data.load_array((X, y), big)
    if big >= 2**64:
        with pytest.raises(ValueError, match="seed must be < 2\\*\\*64"):
            fastreg.DataLoader((X, y), 2, shuffle=True, seed=big)
    else:  # a uint64 seed is valid, as NumPy's
        a = [b[1] for b in fastreg.DataLoader((X, y), 2, shuffle=True, seed=big)]
        b = [b[1] for b in fastreg.DataLoader((X, y), 2, shuffle=True, seed=big)]
        np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))


@pytest.mark.parametrize("big", HUGE)
@pytest.mark.parametrize("name", ["batch_size", "epochs"])
def test_estimator_counts(data, big, name):
    X, y = data
    for cls in (fastreg.SoftmaxRegression, fastreg.LinearRegression):
        target = y if cls is fastreg.SoftmaxRegression else y.astype(np.float32)
        with pytest.raises(OverflowError, match=name) as e:
            cls(**{name: big}).fit(X, target)
        _no_binding_message(e)


@pytest.mark.parametrize("big", [2**63, -(2**63) - 1, 2**70])
def test_ignore_index(data, big):
    X, y = data
    for fn in (ops.cross_entropy, ops.cross_entropy_with_grad):
        with pytest.raises(OverflowError, match="ignore_index") as e:
            fn(X, y, ignore_index=big)
        _no_binding_message(e)
    w = np.ones((4, 3), np.float32)
    with pytest.raises(OverflowError, match="ignore_index"):
        ops.linear_cross_entropy(X, w, y, ignore_index=big)


def test_int64_limits_of_ignore_index_still_work(data):
    X, y = data
    for ii in (2**63 - 1, -(2**63)):
        np.testing.assert_allclose(ops.cross_entropy(X, y, ignore_index=ii), ops.cross_entropy(X, y), rtol=1e-6)


@pytest.mark.parametrize("label", [2**63, 2**63 + 5, 2**64 - 1])
def test_uint64_label_is_reported_as_itself(data, label):
    X, _ = data
    y = np.zeros(10, np.uint64)
    y[4] = label
    for fn in (ops.cross_entropy, ops.cross_entropy_with_grad):
        with pytest.raises(IndexError, match=f"Target {label} at row 4 is out of bounds"):
            fn(X, y)
    with pytest.raises(IndexError, match=f"Target {label} at row 4 is out of bounds"):
        ops.linear_cross_entropy(X, np.ones((4, 3), np.float32), y)


def test_uint64_labels_in_range_equal_int64(data):
    X, y = data
    assert ops.cross_entropy(X, y.astype(np.uint64)) == ops.cross_entropy(X, y)
    assert ops.cross_entropy(X, y.astype(np.uint8), reduction="sum") == ops.cross_entropy(X, y, reduction="sum")


def test_set_num_threads_is_bounded():
    limit = fastreg.max_num_threads()
    assert limit == max(8, 4 * fastreg._core.default_num_threads())
    before = fastreg.get_num_threads()
    for n in (limit + 1, 10**6, 2**70):
        with pytest.raises(ValueError, match=f"n must be <= {limit}") as e:
            fastreg.set_num_threads(n)
        _no_binding_message(e)
        assert fastreg.get_num_threads() == before  # refused calls change nothing
    fastreg.set_num_threads(limit)
    try:
        assert fastreg.get_num_threads() == limit
    finally:
        fastreg.set_num_threads(before)


def test_refused_thread_count_starts_no_threads():
    # In a fresh process: the pool's workers persist for the process's life by design.
    code = textwrap.dedent(
        """
        import os, numpy as np, fastreg
        try:
            fastreg.set_num_threads(10**6)
        except ValueError:
            pass
        x = np.random.default_rng(0).standard_normal((4096, 1000)).astype(np.float32)
        fastreg.ops.softmax(x)
        print(len(os.listdir(f"/proc/{os.getpid()}/task")))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert int(out.stdout.split()[-1]) < 64, out.stdout
