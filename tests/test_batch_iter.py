"""The iterator's rules (cpp/batch_iter.hpp's BatchSchedule), through _core.BatchIter:
keyword-only construction, the option checks, the batches' rows and the end of an epoch,
the point where torch's sampler draws its extra permutation, chunked small batches and
the prefetch decision. DataLoader-level behaviour is tested in test_loader.py."""

import numpy as np
import pytest

from fastreg import _core


def _iter(X, y, batch_size, order=None, **kw):
    if order is None and "order_fn" not in kw:
        order = np.arange(len(X), dtype=np.int64)
    return _core.BatchIter(
        arrays=[X, y], u8_to_f32=[False, False], scales=[1.0, 1.0], batch_size=batch_size, order=order, **kw
    )


def _data(n, d=3):
    return np.arange(n * d, dtype=np.float32).reshape(n, d), np.arange(n, dtype=np.int64)


def test_keywords_only():
    X, y = _data(4)
    with pytest.raises(TypeError):
        _core.BatchIter([X, y], [False, False], [1.0, 1.0], 2, np.arange(4))
    it = _iter(X, y, 2)
    assert [yb.tolist() for _, yb in it] == [[0, 1], [2, 3]]


@pytest.mark.parametrize(
    "kw,err,match",
    [
        ({"batch_size": 0}, ValueError, "batch_size must be a positive integer, got 0"),
        ({"prefetch": 2}, ValueError, "prefetch must be -1 \\(auto\\), 0 or 1"),
        ({"worker_delay_us": -1}, ValueError, "worker_delay_us must be >= 0"),
        ({"unbatched": True, "batch_size": 2}, ValueError, "unbatched takes batch_size 1"),
        ({"first_batch": -1}, ValueError, "first_batch must be >= 0"),
        ({"first_batch": 4}, ValueError, "first_batch 4 is past the last batch \\(3 batches\\)"),
        ({"order": np.array([0, 5, 7])}, IndexError, "order\\[2\\] = 7 is out of range for 7 rows"),
    ],
)
def test_options_are_checked(kw, err, match):
    X, y = _data(7)
    kw = {"batch_size": 3, **kw}
    with pytest.raises(err, match=match):
        _iter(X, y, **kw)


def test_order_fn_is_called_at_the_first_batch():
    X, y = _data(10)
    calls = []

    def order_fn():
        calls.append(1)
        return np.arange(10)[::-1].copy()

    it = _iter(X, y, 4, order_fn=order_fn)
    assert calls == [] and it.end_batch is None and it.next_batch == 0
    xb, yb = next(it)
    assert calls == [1] and it.end_batch == 3 and it.next_batch == 1
    np.testing.assert_array_equal(yb, [9, 8, 7, 6])
    np.testing.assert_array_equal(xb, X[yb])
    assert [yb.tolist() for _, yb in it] == [[5, 4, 3, 2], [1, 0]] and calls == [1]
    assert it.done


def test_first_batch_past_the_drawn_order_is_refused():
    X, y = _data(10)
    it = _iter(X, y, 4, order_fn=lambda: np.arange(10), first_batch=4)
    with pytest.raises(ValueError, match="first_batch 4 is past the last batch \\(3 batches\\)"):
        next(it)


@pytest.mark.parametrize(
    "n,bs,drop_last,draw_before",
    [
        (10, 4, False, 2),  # the short last batch asks for an index past the end
        (8, 4, False, 2),  # an exact fit: only the request after the last batch does
        (10, 4, True, 2),  # drop_last: at the request that finds the short batch missing
        (3, 4, False, 0),  # the only batch is short
    ],
)
def test_exhaust_draw_happens_where_torchs_sampler_draws(n, bs, drop_last, draw_before):
    # on_exhaust runs once, when batch `draw_before` (or the end) is asked for.
    X, y = _data(n)
    yielded, draws = [0], []
    it = _iter(X, y, bs, drop_last=drop_last, on_exhaust=lambda: draws.append(yielded[0]))
    for _ in it:
        yielded[0] += 1
    assert draws == [draw_before]
    assert yielded[0] == (n // bs if drop_last else -(-n // bs))


@pytest.mark.parametrize("first_batch", [0, 2, 5])
def test_resume_yields_the_rest_of_the_epoch(first_batch):
    X, y = _data(11)
    order = np.random.default_rng(0).permutation(11)
    it = _iter(X, y, 2, order=order, first_batch=first_batch)
    assert it.next_batch == first_batch and it.end_batch == 6
    got = [yb for _, yb in it]
    expected = [order[i : i + 2] for i in range(2 * first_batch, 11, 2)]
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_small_batches_are_views_of_one_chunk():
    # 12-byte rows: ~128 KiB chunks hold every batch of this epoch.
    X, y = _data(100)
    batches = list(_iter(X, y, 8, prefetch=0))
    bases = {id(xb.base) for xb, _ in batches}
    assert len(bases) == 1 and batches[0][0].base is not None
    for xb, yb in batches:
        np.testing.assert_array_equal(xb, X[yb])
    # A chunk of one batch is handed out as is.
    X, y = _data(200, d=1024)  # 4 KiB rows: a batch of 64 is 256 KiB
    (xb, yb), *_ = list(_iter(X, y, 64, prefetch=0))
    assert xb.base is None and xb.shape == (64, 1024)


def test_unbatched_yields_samples():
    X, y = _data(5)
    it = _core.BatchIter(
        arrays=[X], u8_to_f32=[False], scales=[1.0], batch_size=1, order=np.arange(5), single=True, unbatched=True
    )
    got = list(it)
    assert [g.shape for g in got] == [(3,)] * 5
    np.testing.assert_array_equal(np.stack(got), X)


def test_prefetch_decision():
    small = _data(1000)  # 12-byte rows
    big = _data(1000, d=1024)  # batch 64: 256 KiB
    it = _iter(*small, 64)
    next(it)
    assert not it.prefetching  # small batches: gathered inline
    it = _iter(*small, 64, prefetch=1)
    next(it)
    assert it.prefetching  # asked for
    it.close()
    assert not it.prefetching and it.done
    it = _iter(*big, 64)
    next(it)
    assert it.prefetching  # big batches: prefetched
    it.close()
    it = _iter(*big, 64, prefetch=0)
    next(it)
    assert not it.prefetching  # refused
    it = _iter(*big, 64, order=np.arange(64))
    next(it)
    assert not it.prefetching  # a single batch: nothing to run ahead of
    with pytest.raises(StopIteration):
        next(it)
