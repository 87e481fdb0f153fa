"""Leaks: repeated kernel calls keep RSS flat, and bindings hold no references."""

import gc
import os
import sys

import numpy as np
import pytest

import fastreg
from fastreg import _core
from fastreg.optim import sgd_step

UNDER_ASAN = "asan" in os.environ.get("LD_PRELOAD", "")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(UNDER_ASAN, reason="ASan's allocator quarantine grows RSS by design")
def test_100k_sgd_calls_keep_rss_flat():
    p, g, b = np.zeros(1000, np.float32), np.ones(1000, np.float32), np.zeros(1000, np.float32)
    for _ in range(2000):  # warm-up: let allocator pools settle
        _core.sgd_update(p, g, b, lr=1e-3, momentum=0.9)
    before = _rss_bytes()
    for _ in range(100_000):
        _core.sgd_update(p, g, b, lr=1e-3, momentum=0.9)
    growth = _rss_bytes() - before
    assert growth < 2 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 1e5 calls"


def test_bindings_do_not_leak_references():
    p, g, b = np.zeros(64), np.ones(64), np.zeros(64)
    counts = [sys.getrefcount(x) for x in (p, g, b)]
    for _ in range(1000):
        sgd_step([p], [g], [b], lr=1e-3, momentum=0.9)
        with pytest.raises(ValueError):
            _core.sgd_update(p, g[:3], b, lr=1e-3)
    assert [sys.getrefcount(x) for x in (p, g, b)] == counts


# ------------------------------------------------- every binding, every loader path


def _binding_calls(rng):
    """(name, call, inputs) for each binding: call() runs it once on `inputs` (and
    outputs of its own); a second entry per binding exercises an error path."""
    from fastreg import ops  # noqa: F401 - makes sure the ops bindings are importable
    from fastreg.linear import linear as _linear

    W = rng.standard_normal((10, 10)).astype(np.float32)

    x = rng.standard_normal((64, 10)).astype(np.float32)
    t = rng.integers(0, 10, 64)
    w = rng.random(10).astype(np.float32)
    g, out, row = np.empty_like(x), np.empty_like(x), np.empty(64, np.float32)
    p, q = rng.standard_normal(640).astype(np.float32), rng.standard_normal(640).astype(np.float32)
    src, idx = rng.integers(0, 256, (100, 16), dtype=np.uint8), rng.integers(0, 100, 32)
    bad_idx = np.array([0, 100])
    return [
        ("cross_entropy", lambda: _core.cross_entropy(x, t, w, -100, "mean", 0.1, g, row), (x, t, w, g, row)),
        ("cross_entropy error", lambda: _core.cross_entropy(x, t[:3], w, -100, "mean", 0.0, g, None), (x, t, w, g)),
        ("softmax", lambda: _core.softmax(x, out, True), (x, out)),
        ("softmax error", lambda: _core.softmax(x, out[:3], False), (x, out)),
        ("logsumexp", lambda: _core.logsumexp(x, row, 2.0), (x, row)),
        ("vexp", lambda: _core.vexp(x, out), (x, out)),
        ("regression_loss", lambda: _core.regression_loss("huber", p, q, 1.0, "none", np.empty_like(p), None), (p, q)),
        ("regression_loss error", lambda: _core.regression_loss("huber", p, q[:5], 1.0, "mean", None, None), (p, q)),
        ("sgd_update", lambda: _core.sgd_update(p, q, None, lr=1e-6), (p, q)),
        ("gather_rows", lambda: _core.gather_rows(src, idx, to_float32=True, scale=0.5), (src, idx)),
        ("gather_rows error", lambda: _core.gather_rows(src, bad_idx), (src, bad_idx)),
        ("linear", lambda: _linear(x, W, w), (x, W, w)),
        ("linear error", lambda: _linear(x, W[:, :3], w), (x, W, w)),
        ("sgd_update_many", lambda: sgd_step([p, x], [q, g], lr=1e-9), (p, q, x, g)),
        ("fit", lambda: fastreg.SoftmaxRegression(epochs=1, random_state=0).fit(x, t), (x, t)),
        (
            "BatchIter",
            lambda: list(
                _core.BatchIter(
                    arrays=[src, t[:100] if len(t) >= 100 else np.arange(100)],
                    u8_to_f32=[True, False],
                    scales=[0.5, 1.0],
                    batch_size=7,
                    order=idx,
                )
            ),
            (src, idx),
        ),
    ]


@pytest.mark.parametrize("case", range(16))
def test_every_binding_leaves_refcounts_unchanged(rng, case):
    name, call, inputs = _binding_calls(rng)[case]
    call_ok = True
    try:
        call()
    except (TypeError, ValueError, IndexError):
        call_ok = False
    assert call_ok == ("error" not in name), name
    counts = [sys.getrefcount(a) for a in inputs]
    for _ in range(500):
        try:
            call()
        except (TypeError, ValueError, IndexError):
            pass
    assert [sys.getrefcount(a) for a in inputs] == counts, name


def test_dataloader_releases_its_arrays(rng):
    X, y = rng.standard_normal((500, 8)), np.arange(500)
    counts = [sys.getrefcount(X), sys.getrefcount(y)]
    for prefetch in (False, True):
        for _ in range(20):
            loader = fastreg.DataLoader((X, y), 64, shuffle=True, prefetch=prefetch)
            it = iter(loader)
            next(it)  # abandoned mid-epoch
            del it, loader
    gc.collect()
    assert [sys.getrefcount(X), sys.getrefcount(y)] == counts


@pytest.mark.skipif(UNDER_ASAN, reason="ASan's allocator quarantine grows RSS by design")
@pytest.mark.parametrize("prefetch,batch_size", [(False, 256), (True, 256), (None, 8)])
def test_200_epochs_keep_rss_flat(rng, prefetch, batch_size):
    X = rng.integers(0, 256, (2000, 784), dtype=np.uint8)  # a small Fashion-MNIST-like set
    y = rng.integers(0, 10, 2000)
    # batch 8: views of chunks gathered ~128 KiB at a time
    loader = fastreg.DataLoader(
        (X, y), batch_size, shuffle=True, seed=0, dtype=np.float32, scale=1 / 255, prefetch=prefetch
    )
    for _ in range(10):  # warm-up: buffer pools and allocator settle
        for _ in loader:
            pass
    before = _rss_bytes()
    checksum = 0.0
    for _ in range(200):
        for xb, _yb in loader:
            checksum += float(xb[0, 0])
    growth = _rss_bytes() - before
    # One epoch moves ~6 MiB of batches; 200 epochs with a leak of even one batch
    # per epoch would grow by > 100 MiB.
    assert growth < 8 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 200 epochs"
    assert np.isfinite(checksum)


@pytest.mark.skipif(UNDER_ASAN, reason="ASan's allocator quarantine grows RSS by design")
def test_100k_calls_of_each_kernel_keep_rss_flat(rng):
    cases = [c for c in _binding_calls(rng) if "error" not in c[0] and c[0] != "BatchIter"]
    for name, call, _ in cases:
        for _ in range(2000):
            call()
        before = _rss_bytes()
        for _ in range(100_000 // len(cases) * 2):
            call()
        growth = _rss_bytes() - before
        assert growth < 2 * 2**20, f"{name}: RSS grew by {growth / 2**20:.1f} MiB"
