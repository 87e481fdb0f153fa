"""The CUDA cross-entropy's row arithmetic (cpp/cuda/cross_entropy_math.hpp), run on the
host by fastreg._cuda.cross_entropy_rows_host with the kernel's lane layout and merge
order, against torch float64. Needs the CUDA module built (nvcc), not a GPU."""

import numpy as np
import pytest

from fastreg import cuda

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.skipif(not cuda.is_built(), reason="fastreg built without CUDA (no nvcc)")

# The kernel's layouts: (lanes a row, elements a lane loads at once).
LAYOUTS = [(8, 1), (8, 4), (32, 1), (32, 4), (32, 8), (512, 1), (512, 8)]


def _host(x, target=None, probs=None, weight=None, ignore_index=-100, eps=0.0, z=0.0, lanes=32, vec=1):
    from fastreg import _cuda

    return _cuda.cross_entropy_rows_host(x, target, probs, weight, ignore_index, eps, z, lanes, vec)


def _reference(x, target=None, probs=None, weight=None, ignore_index=-100, eps=0.0, z=0.0):
    """torch float64: per-row losses (z-loss added on counted rows), d(sum of rows)/dx, lse."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    w = None if weight is None else torch.tensor(weight, dtype=torch.float64)
    if probs is not None:
        t = torch.tensor(probs, dtype=torch.float64)
        counted = torch.ones(x.shape[0], dtype=torch.bool)
    else:
        t = torch.tensor(target)
        counted = t != ignore_index
    rows = F.cross_entropy(xt, t, weight=w, ignore_index=ignore_index, reduction="none", label_smoothing=eps)
    lse = torch.logsumexp(xt, dim=1)
    rows = rows + z * lse**2 * counted
    rows.sum().backward()
    return rows.detach().numpy(), xt.grad.numpy(), (lse * counted).detach().numpy()


def _close(got, want, rtol=2e-5, atol=2e-6):
    scale = max(1.0, float(np.max(np.abs(want))) if want.size else 1.0)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * scale)


@pytest.mark.parametrize("lanes,vec", LAYOUTS)
@pytest.mark.parametrize("c", [1, 3, 10, 37, 1000])
def test_class_targets_every_option(rng, lanes, vec, c):
    n = 13
    x = (rng.standard_normal((n, c)) * 3).astype(np.float32)
    target = rng.integers(0, c, n)
    target[::4] = -7  # ignored rows
    weight = rng.uniform(0.2, 2.0, c).astype(np.float32)
    for w in (None, weight):
        for eps in (0.0, 0.1, 1.0):
            for z in (0.0, 1e-3):
                rows, grad, lse = _host(x, target=target, weight=w, ignore_index=-7, eps=eps, z=z, lanes=lanes, vec=vec)
                r_rows, r_grad, r_lse = _reference(x, target=target, weight=w, ignore_index=-7, eps=eps, z=z)
                _close(rows, r_rows)
                _close(grad, r_grad)
                _close(lse, r_lse)
                assert np.all(grad[::4] == 0) and np.all(rows[::4] == 0)


@pytest.mark.parametrize("lanes,vec", LAYOUTS)
def test_probability_targets(rng, lanes, vec):
    n, c = 9, 53
    x = (rng.standard_normal((n, c)) * 2).astype(np.float32)
    probs = rng.dirichlet(np.ones(c), n).astype(np.float32)
    probs[0] = 0
    probs[0, 5] = 1  # a one-hot row: zero targets count nothing
    probs[1] *= 0.5  # rows need not sum to 1 (torch does not ask it)
    weight = rng.uniform(0.5, 1.5, c).astype(np.float32)
    for w in (None, weight):
        for eps in (0.0, 0.3):
            for z in (0.0, 0.02):
                rows, grad, _ = _host(x, probs=probs, weight=w, eps=eps, z=z, lanes=lanes, vec=vec)
                r_rows, r_grad, _ = _reference(x, probs=probs, weight=w, eps=eps, z=z)
                _close(rows, r_rows)
                _close(grad, r_grad)


def test_large_and_infinite_logits_stay_finite(rng):
    n, c = 6, 300
    x = (rng.standard_normal((n, c)) + 1e4).astype(np.float32)  # exp(x) overflows without the max shift
    target = rng.integers(0, c, n)
    rows, grad, _ = _host(x, target=target)
    r_rows, r_grad, _ = _reference(x, target=target)
    assert np.all(np.isfinite(rows)) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(rows, r_rows, rtol=1e-3, atol=2e-3)  # x's own rounding at 1e4 is 1e-3
    # -inf logits (masked classes) with a zero probability target count 0, as fastreg's CPU
    # kernel documents (torch's 0 * -inf makes the row NaN): the reference is then the same
    # row with the masked classes left out, where they weigh nothing anyway.
    x = rng.standard_normal((n, c)).astype(np.float32)
    x[:, :100] = -np.inf
    probs = rng.dirichlet(np.ones(c - 100), n).astype(np.float32)
    rows, grad, _ = _host(x, probs=np.concatenate([np.zeros((n, 100), np.float32), probs], 1))
    r_rows, r_grad, _ = _reference(x[:, 100:], probs=probs)
    _close(rows, r_rows)
    _close(grad[:, 100:], r_grad)
    assert np.all(grad[:, :100] == 0)


def test_lse_merge_matches_logsumexp_for_every_split(rng):
    # The kernel's result must not depend on how a row is split between lanes.
    c = 777
    x = (rng.standard_normal((4, c)) * 20).astype(np.float32)
    want = torch.logsumexp(torch.tensor(x, dtype=torch.float64), 1).numpy()
    for lanes, vec in LAYOUTS + [(2, 1), (64, 2), (1024, 1)]:
        _, _, lse = _host(x, target=np.zeros(4, np.int64), lanes=lanes, vec=vec)
        np.testing.assert_allclose(lse, want, rtol=1e-6)


def test_nan_logit_poisons_its_row_only(rng):
    x = rng.standard_normal((3, 40)).astype(np.float32)
    x[1, 17] = np.nan
    rows, grad, _ = _host(x, target=np.array([1, 2, 3]))
    assert np.isnan(rows[1]) and np.all(np.isnan(grad[1]))
    assert np.all(np.isfinite(rows[[0, 2]])) and np.all(np.isfinite(grad[[0, 2]]))


def test_host_harness_rejects_bad_arguments():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="exactly one"):
        _host(x)
    with pytest.raises(ValueError, match="power of two"):
        _host(x, target=np.zeros(2, np.int64), lanes=3)
