"""fastreg's CUDA cross-entropy and SGD against torch on the same GPU. Every test here
needs a GPU (marked `gpu`, skipped otherwise); bench/gpu/run.sh runs them on one.
Inputs are fresh random draws; outputs are poisoned first where fastreg allocates none."""

import math

import numpy as np
import pytest

import fastreg
from fastreg import cuda

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not cuda.is_available(), reason=f"no GPU: {cuda.unavailable_reason()}"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="torch has no CUDA"),
]

import fastreg.torch as ft  # noqa: E402

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# ||got - ref|| / ||ref|| bounds: float32 arithmetic, half-precision inputs and outputs.
TOL = {torch.float32: 2e-5, torch.bfloat16: 1.5e-2, torch.float16: 2e-3}


@pytest.fixture
def gen(request):
    import zlib

    g = torch.Generator(device="cuda")
    g.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    return g


def _rel(got, ref):
    got, ref = got.double(), ref.double()
    assert not torch.isnan(got).any() or torch.isnan(ref).any(), "NaN in fastreg's result only"
    den = ref.norm().item()
    return (got - ref).norm().item() / (den if den > 0 else 1.0)


def _reference(x, target, weight, ignore_index, reduction, eps, z):
    """torch on float64 copies on the same device; z-loss as fastreg defines it."""
    xr = x.detach().double().requires_grad_(True)
    w = None if weight is None else weight.double()
    t = target.double() if target.is_floating_point() else target
    rows = F.cross_entropy(xr, t, weight=w, ignore_index=ignore_index, reduction="none", label_smoothing=eps)
    counted = torch.ones_like(rows, dtype=torch.bool) if target.is_floating_point() else target != ignore_index
    rows = rows + z * torch.logsumexp(xr, 1) ** 2 * counted
    if reduction == "none":
        loss = rows
    elif reduction == "sum":
        loss = rows.sum()
    else:
        if target.is_floating_point():
            den = torch.tensor(float(x.shape[0]), dtype=torch.float64, device=x.device)
        else:
            wy = torch.ones_like(rows) if w is None else w[target.clamp(0, x.shape[1] - 1)]
            den = (wy * counted).sum()
        loss = rows.sum() / den
    return loss, xr


def _draw(gen, n, c, dtype, probs=False, ignore=True):
    x = (torch.randn(n, c, device="cuda", generator=gen) * 3).to(dtype)
    if probs:
        t = torch.rand(n, c, device="cuda", generator=gen).softmax(1).to(dtype)
    else:
        t = torch.randint(0, c, (n,), device="cuda", generator=gen)
        if ignore and n:
            t[torch.rand(n, device="cuda", generator=gen) < 0.2] = -100
    return x, t


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 1), (33, 7), (64, 10), (5, 129), (17, 4099), (40, 32000), (3, 262144)])
def test_cross_entropy_matches_torch_every_option(gen, dtype, shape):
    n, c = shape
    weight = (torch.rand(c, device="cuda", generator=gen) + 0.5).to(dtype)
    for probs in (False, True):
        for w in (None, weight):
            for reduction in ("mean", "sum", "none"):
                for eps, z in ((0.0, 0.0), (0.1, 0.0), (0.0, 1e-3), (0.2, 1e-2)):
                    x, t = _draw(gen, n, c, dtype, probs)
                    x.requires_grad_(True)
                    loss = cuda.cross_entropy(x, t, w, reduction=reduction, label_smoothing=eps, lse_square_scale=z)
                    up = torch.randn(loss.shape, device="cuda", generator=gen).to(dtype)
                    loss.backward(up)
                    ref, xr = _reference(x, t, w, -100, reduction, eps, z)
                    ref.backward(up.double())
                    assert loss.dtype == dtype and loss.shape == ref.shape
                    tol = TOL[dtype] * (4 if eps or z else 1)
                    assert _rel(loss, ref) < tol, (probs, w is not None, reduction, eps, z)
                    assert _rel(x.grad, xr.grad) < tol, (probs, w is not None, reduction, eps, z)


def test_fastreg_torch_routes_cuda_tensors_and_matches_torch(gen):
    x, t = _draw(gen, 300, 1000, torch.float32)
    w = torch.rand(1000, device="cuda", generator=gen) + 0.5
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    loss_fn = ft.CrossEntropyLoss(weight=w, label_smoothing=0.05)
    a = loss_fn(x1, t)
    b = F.cross_entropy(x2, t, weight=w, label_smoothing=0.05)
    a.backward()
    b.backward()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-7)
    with torch.no_grad():
        torch.testing.assert_close(ft.cross_entropy(x, t, reduction="none"), F.cross_entropy(x, t, reduction="none"))
    # unbatched (C,) logits with a scalar target
    torch.testing.assert_close(ft.cross_entropy(x[0], t[0].clamp(min=0)), F.cross_entropy(x[0], t[0].clamp(min=0)))


def test_no_rows_and_all_rows_ignored_match_torch(gen):
    for n in (0, 5):
        x = torch.randn(n, 11, device="cuda", generator=gen, requires_grad=True)
        t = torch.full((n,), -100, device="cuda", dtype=torch.long)
        for reduction in ("mean", "sum", "none"):
            x.grad = None
            a = ft.cross_entropy(x, t, reduction=reduction)
            a.sum().backward()
            xr = x.detach().clone().requires_grad_(True)
            b = F.cross_entropy(xr, t, reduction=reduction)
            b.sum().backward()
            torch.testing.assert_close(a, b, equal_nan=True)
            torch.testing.assert_close(x.grad, xr.grad, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_gradient_element_is_written_and_in_place_works(gen, dtype):
    for n, c in ((1, 1), (9, 7), (130, 4097), (4, 262144)):
        x, t = _draw(gen, n, c, dtype)
        out = torch.full_like(x, float("nan"))
        loss, g = fastreg.ops.cross_entropy_with_grad(x, t, out=out, label_smoothing=0.1)
        assert g is out and not torch.isnan(out).any()
        ref, xr = _reference(x, t, None, -100, "mean", 0.1, 0.0)
        ref.backward()
        assert _rel(out, xr.grad) < TOL[dtype] * 4
        x2 = x.clone()
        loss2, g2 = fastreg.ops.cross_entropy_with_grad(x2, t, out=x2, label_smoothing=0.1)  # in place
        assert g2 is x2
        torch.testing.assert_close(loss2, loss)
        torch.testing.assert_close(x2, out)


def test_inplace_backward_matches_and_runs_once(gen):
    x, t = _draw(gen, 64, 3000, torch.float32)
    xa = x.clone().requires_grad_(True)
    la = cuda.cross_entropy(xa * 1, t, inplace_backward=True, lse_square_scale=1e-3)
    la.backward(retain_graph=True)
    ref, xr = _reference(x, t, None, -100, "mean", 0.0, 1e-3)
    ref.backward()
    assert _rel(la, ref) < 1e-5 and _rel(xa.grad, xr.grad) < 1e-5
    with pytest.raises(RuntimeError, match="runs once"):
        la.backward()


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradient_recomputed_in_backward_matches_and_retains(gen, dtype):
    # grad_in_forward=False: forward saves each row's lse, backward reads the logits again.
    for reduction in ("mean", "none"):
        x, t = _draw(gen, 100, 5001, dtype)
        w = (torch.rand(5001, device="cuda", generator=gen) + 0.5).to(dtype)
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        opts = dict(reduction=reduction, label_smoothing=0.1, lse_square_scale=1e-3)
        la = cuda.cross_entropy(xa, t, w, grad_in_forward=False, **opts)
        lb = cuda.cross_entropy(xb, t, w, **opts)
        torch.testing.assert_close(la, lb)
        up = torch.rand(la.shape, device="cuda", generator=gen).to(dtype)
        la.backward(up, retain_graph=True)
        la.backward(up)  # twice: the gradient is accumulated twice
        lb.backward(up)
        assert _rel(xa.grad, 2 * xb.grad) < TOL[dtype]


def test_out_of_range_labels_are_nan_and_reported(gen):
    cuda.check_errors()  # start clean
    x, t = _draw(gen, 50, 13, torch.float32, ignore=False)
    t[7] = 13
    t[31] = -5
    x.requires_grad_(True)
    rows = ft.cross_entropy(x, t, reduction="none")
    rows.sum().backward()
    assert torch.isnan(rows[7]) and torch.isnan(rows[31]) and torch.isnan(x.grad[[7, 31]]).all()
    keep = torch.ones(50, dtype=torch.bool, device="cuda")
    keep[[7, 31]] = False
    assert torch.isfinite(rows[keep]).all() and torch.isfinite(x.grad[keep]).all()
    with pytest.raises(IndexError, match=r"got 13 at row 7"):
        cuda.check_errors(x.device)
    cuda.check_errors(x.device)  # cleared


def test_bad_inputs_raise_or_fall_back_with_a_warning(gen):
    x, t = _draw(gen, 8, 5, torch.float32)
    with pytest.raises(RuntimeError, match="same device"):
        ft.cross_entropy(x, t.cpu())
    with pytest.warns(ft.FastregFallbackWarning, match="float64"):
        a = ft.cross_entropy(x.double(), t)
    torch.testing.assert_close(a, F.cross_entropy(x.double(), t))
    with pytest.warns(ft.FastregFallbackWarning, match="contiguous"):
        b = ft.cross_entropy(x.t().contiguous().t(), t)
    torch.testing.assert_close(b, F.cross_entropy(x, t))
    with pytest.raises(ValueError, match="shape"):
        ft.cross_entropy(x, t[:3])
    with pytest.raises(ValueError, match="label_smoothing"):
        ft.cross_entropy(x, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match="one CUDA device|cuda"):
        fastreg.ops.cross_entropy_with_grad(x, t, out=torch.empty(8, 5))


def test_cross_entropy_does_not_synchronise(gen):
    x, t = _draw(gen, 256, 1000, torch.bfloat16)
    x.requires_grad_(True)
    ft.cross_entropy(x, t).backward()  # warm-up (allocates the error record once)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = ft.cross_entropy(x, t, label_smoothing=0.1)
        loss.backward()
        opt = ft.SGD([x], lr=0.1, momentum=0.9)
        opt.step()
        opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_matches_torch_after_100_steps(gen, dtype):
    sizes = [1, 7, 4096, 100_003, 33]
    configs = [
        dict(lr=0.05),
        dict(lr=0.05, momentum=0.9),
        dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=1e-2),
        dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
        dict(lr=0.05, momentum=0.5, maximize=True),
    ]
    for cfg in configs:
        init = [torch.randn(s, device="cuda", generator=gen).to(dtype) for s in sizes]
        mine = [p.clone().requires_grad_(True) for p in init]
        theirs = [p.clone().requires_grad_(True) for p in init]
        # torch's fused kernel computes in float32 like fastreg's; float32 params also vs the default
        ref_kw = dict(fused=True) if dtype != torch.float32 else {}
        opt_a, opt_b = ft.SGD(mine, **cfg), torch.optim.SGD(theirs, **cfg, **ref_kw)
        for step in range(100):
            grads = [torch.randn(s, device="cuda", generator=gen).to(dtype) for s in sizes]
            for p, q, g in zip(mine, theirs, grads):
                p.grad, q.grad = g.clone(), g.clone()
            if step == 50:
                mine[1].grad = theirs[1].grad = None  # a parameter without a gradient is skipped
            opt_a.step()
            opt_b.step()
        for p, q in zip(mine, theirs):
            assert _rel(p.detach(), q.detach()) < (1e-6 if dtype == torch.float32 else TOL[dtype]), cfg
        if cfg.get("momentum"):
            for p, q in zip(mine, theirs):
                assert _rel(opt_a.state[p]["momentum_buffer"], opt_b.state[q]["momentum_buffer"]) < max(
                    1e-6, TOL[dtype]
                )


def test_sgd_many_tensors_mixed_dtypes_one_group(gen):
    ps = [
        torch.randn(int(n), device="cuda", generator=gen).to(dt)
        for n, dt in zip(torch.randint(1, 5000, (300,)), [torch.float32, torch.bfloat16, torch.float16] * 100)
    ]
    a = [p.clone().requires_grad_(True) for p in ps]
    b = [p.clone().requires_grad_(True) for p in ps]
    for p, q in zip(a, b):
        p.grad = torch.randn(p.shape, device="cuda", generator=gen).to(p.dtype)
        q.grad = p.grad.clone()
    ft.SGD(a, lr=0.1, momentum=0.9).step()
    torch.optim.SGD(b, lr=0.1, momentum=0.9, foreach=False).step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q)


def test_sgd_float64_falls_back_with_warning(gen):
    p = torch.randn(10, device="cuda", dtype=torch.float64, generator=gen, requires_grad=True)
    p.grad = torch.randn_like(p)
    q = p.detach().clone() - 0.1 * p.grad
    with pytest.warns(ft.FastregFallbackWarning, match="float64"):
        ft.SGD([p], lr=0.1).step()
    torch.testing.assert_close(p.detach(), q)


def test_cuda_graph_captures_a_training_step(gen):
    n, d, c = 512, 64, 10
    model = torch.nn.Linear(d, c).cuda()
    ref_model = torch.nn.Linear(d, c).cuda()
    ref_model.load_state_dict(model.state_dict())
    opt = ft.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.1, momentum=0.9)
    static_x = torch.randn(n, d, device="cuda", generator=gen)
    static_y = torch.randint(0, c, (n,), device="cuda", generator=gen)
    batches = [
        (torch.randn(n, d, device="cuda", generator=gen), torch.randint(0, c, (n,), device="cuda", generator=gen))
        for _ in range(8)
    ]

    def step():
        opt.zero_grad(set_to_none=False)
        loss = ft.cross_entropy(model(static_x), static_y, label_smoothing=0.1)
        loss.backward()
        opt.step()
        return loss

    def ref_step(x, y):
        ref_opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(ref_model(x), y, label_smoothing=0.1)
        loss.backward()
        ref_opt.step()
        return loss

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for x, y in batches[:3]:  # warm-up, uncaptured (momentum buffers, error record)
            static_x.copy_(x)
            static_y.copy_(y)
            step()
            ref_step(x, y)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = step()
    for x, y in batches[3:]:
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
        want = ref_step(x, y)
        torch.testing.assert_close(static_loss, want, rtol=1e-5, atol=1e-6)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_cupy_arrays_without_torch_tensors():
    cupy = pytest.importorskip("cupy")
    rs = cupy.random.RandomState(7)
    x = rs.standard_normal((300, 1001), dtype=cupy.float32)
    t = rs.randint(0, 1001, 300).astype(cupy.int64)
    loss, g = fastreg.ops.cross_entropy_with_grad(x, t, label_smoothing=0.1)
    assert isinstance(g, cupy.ndarray) and isinstance(loss, cupy.ndarray)
    xr = torch.as_tensor(x, device="cuda").double().requires_grad_(True)
    ref = F.cross_entropy(xr, torch.as_tensor(t, device="cuda"), label_smoothing=0.1)
    ref.backward()
    assert abs(float(loss) - ref.item()) < 1e-5 * max(1, abs(ref.item()))
    assert _rel(torch.as_tensor(g, device="cuda"), xr.grad) < 2e-5
    assert math.isclose(float(fastreg.ops.cross_entropy(x, t, label_smoothing=0.1)), float(loss), rel_tol=1e-6)
    p = [rs.standard_normal(n, dtype=cupy.float32) for n in (5, 70001)]
    grads = [rs.standard_normal(n, dtype=cupy.float32) for n in (5, 70001)]
    want = [torch.as_tensor(q, device="cuda").clone() for q in p]
    bufs = [None, None]
    for _ in range(3):
        fastreg.optim.sgd_step(p, grads, bufs, lr=0.1, momentum=0.9)
    tb = [None, None]
    tg = [torch.as_tensor(q, device="cuda") for q in grads]
    for _ in range(3):
        torch.optim.sgd.sgd(
            want,
            tg,
            tb,
            lr=0.1,
            momentum=0.9,
            dampening=0.0,
            weight_decay=0.0,
            nesterov=False,
            maximize=False,
            foreach=False,
        )
    for a, b in zip(p, want):
        assert _rel(torch.as_tensor(a, device="cuda"), b) < 1e-6
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        fastreg.ops.cross_entropy_with_grad(x.astype(cupy.float64), t)
    with pytest.raises(ValueError, match="C-contiguous"):
        fastreg.ops.cross_entropy_with_grad(x[:, ::2], t)
    with pytest.raises(TypeError, match="CUDA array"):
        fastreg.ops.cross_entropy_with_grad(x, np.zeros(300, np.int64))


def test_random_shapes_fresh_inputs(gen):
    rng = np.random.default_rng()
    for _ in range(20):
        n, c = int(rng.integers(0, 300)), int(rng.choice([1, 2, 3, 5, 8, 31, 64, 65, 1000, 4095, 4096, 4097, 9999]))
        dtype = DTYPES[int(rng.integers(0, 3))]
        x, t = _draw(gen, n, c, dtype)
        x.requires_grad_(True)
        loss = ft.cross_entropy(x, t, reduction="sum")
        loss.backward()
        ref, xr = _reference(x, t, None, -100, "sum", 0.0, 0.0)
        ref.backward()
        assert _rel(loss, ref) < TOL[dtype] and _rel(x.grad, xr.grad) < TOL[dtype], (n, c, dtype)
