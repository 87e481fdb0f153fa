import itertools

import numpy as np
import pytest

import fastreg
from fastreg.optim import sgd, sgd_step

torch = pytest.importorskip("torch")

OPTION_GRID = [
    dict(momentum=m, dampening=d, weight_decay=wd, nesterov=n, maximize=mx)
    for m, d, wd, n, mx in itertools.product([0.0, 0.9], [0.0, 0.3], [0.0, 1e-2], [False, True], [False, True])
    if not (n and (m == 0 or d != 0))
]


def _run_pair(rng, shapes, dtype, steps, opts, lr=0.05):
    """Run torch.optim.SGD and fastreg.sgd_step side by side on the same gradients."""
    init = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    t_params = [torch.tensor(p, requires_grad=True) for p in init]
    opt = torch.optim.SGD(t_params, lr=lr, **opts)
    f_params = [p.copy() for p in init]
    bufs = [None] * len(shapes)
    for step in range(steps):
        for tp, g in zip(t_params, grads[step]):
            tp.grad = torch.from_numpy(g.copy())
        opt.step()
        sgd_step(f_params, grads[step], bufs, lr=lr, **opts)
    return [p.detach().numpy() for p in t_params], f_params, bufs, opt


@pytest.mark.parametrize("opts", OPTION_GRID, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch_after_100_steps(rng, opts, dtype):
    shapes = [(int(rng.integers(1, 40)), int(rng.integers(1, 30))), (int(rng.integers(1, 100)),), (3,)]
    ref, got, bufs, opt = _run_pair(rng, shapes, dtype, 100, opts)

    def rel_err(a, b):  # relative error of a vector (an entry near 0 cancels: not per entry)
        return np.linalg.norm(a.astype(np.float64) - b) / max(np.linalg.norm(b.astype(np.float64)), 1e-30)

    for r, g in zip(ref, got):
        assert g.dtype == dtype
        assert rel_err(g, r) <= 1e-6, rel_err(g, r)
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * np.abs(r).max())
    if opts["momentum"]:
        for p, b in zip(opt.param_groups[0]["params"], bufs):
            tb = opt.state[p]["momentum_buffer"].numpy()
            assert rel_err(b, tb) <= 1e-6, rel_err(b, tb)


def test_first_step_fills_buffer_with_gradient(rng):
    p = rng.standard_normal(10)
    g = rng.standard_normal(10)
    bufs = [None]
    sgd_step([p], [g], bufs, lr=0.1, momentum=0.9, dampening=0.5)
    np.testing.assert_array_equal(bufs[0], g)  # undampened, as torch


@pytest.mark.parametrize("n", [1, 7, 8, 1000, 300_001])
def test_simd_paths_agree(rng, vector_level, n):
    p0 = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    b0 = rng.standard_normal(n).astype(np.float32)
    results = []
    for level in ("scalar", vector_level):
        fastreg.set_simd_level(level)
        p, b = p0.copy(), b0.copy()
        sgd_step([p], [g], [b], lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)
        results.append((p, b))
    for p, b in results[1:]:
        # The vector paths may fuse multiply-adds: equal up to a few roundings of the
        # operands' magnitude (a result near zero can differ in relative terms).
        atol = 8 * np.finfo(np.float32).eps * max(np.abs(p0).max(), np.abs(b0).max(), np.abs(g).max())
        np.testing.assert_allclose(p, results[0][0], rtol=1e-6, atol=atol)
        np.testing.assert_allclose(b, results[0][1], rtol=1e-6, atol=atol)


def test_thread_count_does_not_change_result(rng):
    n = 1_000_003
    p0, g = rng.standard_normal(n), rng.standard_normal(n)
    out = []
    default = fastreg.get_num_threads()
    try:
        for threads in (1, 2, 3):
            fastreg.set_num_threads(threads)
            p = p0.copy()
            sgd_step([p], [g], lr=0.1, weight_decay=0.1)
            out.append(p)
    finally:
        fastreg.set_num_threads(default)
    for p in out[1:]:
        np.testing.assert_array_equal(p, out[0])


def test_torch_tensors_updated_in_place_and_buffers_are_tensors(rng):
    w = torch.randn(5, 3, requires_grad=True)
    w_ref = w.detach().clone()
    g = torch.randn(5, 3)
    bufs = [None]
    sgd_step([w], [g], bufs, lr=0.5, momentum=0.9)
    assert isinstance(bufs[0], torch.Tensor)
    torch.testing.assert_close(w.detach(), w_ref - 0.5 * g)


def test_non_contiguous_param_and_grad(rng):
    base = rng.standard_normal((6, 8))
    p = base[:, ::2]
    g = rng.standard_normal((6, 8))[:, 1::2]
    expected = p - 0.1 * g
    sgd_step([p], [g], lr=0.1)
    np.testing.assert_allclose(base[:, ::2], expected)


def test_none_grad_is_skipped(rng):
    p = rng.standard_normal(4)
    before = p.copy()
    sgd_step([p], [None], lr=1.0)
    np.testing.assert_array_equal(p, before)


def test_d2l_sgd_divides_by_batch_size_and_zeroes_grad():
    w = torch.ones(3, requires_grad=True)
    w.grad = torch.full((3,), 4.0)
    sgd([w], lr=0.5, batch_size=2)
    torch.testing.assert_close(w.detach(), torch.full((3,), 0.0))
    torch.testing.assert_close(w.grad, torch.zeros(3))


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda p, g: sgd_step([p], [g, g], lr=0.1), ValueError, "same length"),
        (lambda p, g: sgd_step([p], [g[:3]], lr=0.1), ValueError, "shape"),
        (lambda p, g: sgd_step([p], [g.astype(np.float32)], lr=0.1), TypeError, "dtype"),
        (lambda p, g: sgd_step([p.astype(np.int64)], [g.astype(np.int64)], lr=0.1), TypeError, "float32 or float64"),
        (lambda p, g: sgd_step([p], [g], lr=-1.0), ValueError, "lr"),
        (lambda p, g: sgd_step([p], [g], lr=float("nan")), ValueError, "lr"),
        (lambda p, g: sgd_step([p], [g], lr="0.1"), TypeError, "lr"),
        (lambda p, g: sgd_step([p], [g], lr=0.1, momentum=0.9), ValueError, "momentum_buffers"),
        (lambda p, g: sgd_step([p], [g], [None, None], lr=0.1, momentum=0.9), ValueError, "length 1"),
        (lambda p, g: sgd_step([p], [g], [None], lr=0.1, nesterov=True), ValueError, "Nesterov"),
        (lambda p, g: sgd_step(p, g, lr=0.1), TypeError, "list"),
        (lambda p, g: sgd_step([p.tolist()], [g], lr=0.1), TypeError, "numpy.ndarray or a torch.Tensor"),
        (lambda p, g: sgd_step([p], [p], lr=0.1), ValueError, "share memory"),
        (lambda p, g: sgd([p], 0.1, 0), ValueError, "batch_size"),
    ],
)
def test_bad_input_raises_clear_errors(rng, call, exc, match):
    p, g = rng.standard_normal(8), rng.standard_normal(8)
    before = p.copy()
    with pytest.raises(exc, match=match):
        call(p, g)
    np.testing.assert_array_equal(p, before)


def test_read_only_param_is_refused(rng):
    p = rng.standard_normal(8)
    p.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        sgd_step([p], [np.ones(8)], lr=0.1)


def test_non_contiguous_torch_tensor_and_mixed_dtypes(rng):
    base = torch.randn(6, 8, dtype=torch.float64)
    p = base[:, ::2]  # non-contiguous view: updated through NumPy and written back
    g = torch.randn(6, 4, dtype=torch.float64)
    q = np.ones(5, np.float32)
    gq = rng.standard_normal(5).astype(np.float32)
    expected = p - 0.1 * g
    sgd_step([p, q], [g, gq], lr=0.1)
    torch.testing.assert_close(base[:, ::2], expected)
    np.testing.assert_allclose(q, 1 - np.float32(0.1) * gq, rtol=2 * np.finfo(np.float32).eps)  # FMA or not


def test_bad_entry_late_in_list_leaves_all_untouched(rng):
    ps = [rng.standard_normal(4) for _ in range(3)]
    gs = [rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(3)]
    before = [p.copy() for p in ps]
    bufs = [None] * 3
    with pytest.raises(ValueError, match=r"grads\[2\] must have shape"):
        sgd_step(ps, gs, bufs, lr=0.1, momentum=0.9)
    for p, b in zip(ps, before):
        np.testing.assert_array_equal(p, b)
    assert bufs == [None, None, None]  # no buffer is created when a check fails


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: ([torch.ones(3, dtype=torch.float16)], [torch.ones(3, dtype=torch.float16)]), TypeError, "float16"),
        (lambda: ([torch.ones(3)], [torch.ones(3, dtype=torch.float64)]), TypeError, "dtype"),
        (lambda: ([torch.ones(3)], [torch.ones(4)]), ValueError, "shape"),
        (lambda: ([torch.ones(3).to_sparse()], [torch.ones(3)]), TypeError, "dense"),
    ],
)
def test_bad_torch_entries(make, exc, match):
    params, grads = make()
    with pytest.raises(exc, match=match):
        sgd_step(params, grads, lr=0.1)


def test_read_only_buffer_and_overlapping_buffer_are_refused(rng):
    p, g = rng.standard_normal(8), rng.standard_normal(8)
    buf = rng.standard_normal(8)
    buf.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        sgd_step([p], [g], [buf], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="share memory"):
        sgd_step([p], [g], [g], lr=0.1, momentum=0.9)


@pytest.mark.parametrize("bad", [float("inf"), -0.5, True, None])
def test_bad_momentum_value(rng, bad):
    p, g = rng.standard_normal(3), rng.standard_normal(3)
    with pytest.raises((TypeError, ValueError), match="momentum"):
        sgd_step([p], [g], [None], lr=0.1, momentum=bad)


def test_empty_param_list_and_empty_tensor_are_fine():
    sgd_step([], [], lr=0.1)
    p, g = np.empty((0, 3)), np.empty((0, 3))
    sgd_step([p], [g], [None], lr=0.1, momentum=0.9)


# ---- thread blocks, torch fast path, GIL ----------------------------------


@pytest.mark.parametrize("n", [65_535, 65_536, 65_537, 131_072, 131_073, 3 * 65_536 + 5])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_block_boundaries_match_float64_reference(rng, n, threads):
    # Threads claim 64K-element blocks: every element is updated exactly once,
    # whatever the split (a block updated twice or skipped would show here).
    p0, g, b0 = rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(n)
    p, b = p0.copy(), b0.copy()
    default = fastreg.get_num_threads()
    try:
        fastreg.set_num_threads(threads)
        sgd_step([p], [g], [b], lr=0.1, momentum=0.9, weight_decay=0.01)
    finally:
        fastreg.set_num_threads(default)
    d = g + 0.01 * p0
    b_ref = 0.9 * b0 + d
    np.testing.assert_allclose(b, b_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(p, p0 - 0.1 * b_ref, rtol=1e-12, atol=1e-12)


class _TaggedTensor(torch.Tensor):
    """A tensor subclass: read through normal attribute access, not torch.Tensor's descriptors."""


class _ShapeLies(torch.Tensor):
    """A subclass overriding a member: its own definition must be the one used."""

    @property
    def shape(self):
        return torch.Size([1])


@pytest.mark.parametrize("kind", ["tensor", "parameter", "subclass"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tensor_types_match_torch_optim(rng, kind, dtype):
    def make(x):
        t = torch.tensor(x, dtype=dtype)
        if kind == "parameter":
            return torch.nn.Parameter(t)
        if kind == "subclass":
            return t.as_subclass(_TaggedTensor)
        return t

    shapes = [(7, 5), (5,)]
    init = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(5)]
    ours = [make(x) for x in init]
    ref = [torch.tensor(x, dtype=dtype, requires_grad=True) for x in init]
    opt = torch.optim.SGD(ref, lr=0.1, momentum=0.9, nesterov=True)
    bufs = [None, None]
    for step in grads:
        for r, g in zip(ref, step):
            r.grad = torch.tensor(g, dtype=dtype)
        opt.step()
        with torch.no_grad():
            sgd_step(ours, [make(g) for g in step], bufs, lr=0.1, momentum=0.9, nesterov=True)
    for a, b in zip(ours, ref):
        assert type(a) is type(make(np.zeros(1)))
        torch.testing.assert_close(a.detach().as_subclass(torch.Tensor), b.detach(), rtol=1e-6, atol=1e-6)


def test_subclass_member_override_is_honoured():
    p = torch.zeros(3).as_subclass(_ShapeLies)
    with pytest.raises(ValueError, match="shape"):
        sgd_step([p], [torch.ones(3)], lr=0.1)  # its `shape` says (1,), the grad's (3,)


def test_tensor_views_with_offset_and_non_cpu_like_errors(rng):
    base = torch.zeros(10)
    view = base[3:8]  # contiguous, storage offset 3: data_ptr() must include it
    g = torch.ones(5)
    sgd_step([view], [g], lr=0.5)
    torch.testing.assert_close(base, torch.tensor([0, 0, 0, -0.5, -0.5, -0.5, -0.5, -0.5, 0, 0]))
    meta = torch.empty(5, device="meta")
    with pytest.raises(ValueError, match="on device meta"):
        sgd_step([meta], [torch.empty(5, device="meta")], lr=0.1)


def test_large_update_releases_the_gil_and_small_one_is_correct():
    import threading
    import time

    n = 20_000_000
    p, g = np.zeros(n, np.float32), np.ones(n, np.float32)
    ticks, done = [], threading.Event()

    def ticker():
        while not done.is_set():
            ticks.append(time.perf_counter())

    t = threading.Thread(target=ticker)
    t.start()
    time.sleep(0.01)
    start = time.perf_counter()
    for _ in range(5):
        sgd_step([p], [g], lr=1e-3)
    end = time.perf_counter()
    done.set()
    t.join()
    lo, hi = start + 0.25 * (end - start), start + 0.75 * (end - start)
    assert sum(lo < s < hi for s in ticks) > 100  # the ticker ran during the update
    np.testing.assert_allclose(p[[0, -1]], -5e-3, rtol=1e-6)
