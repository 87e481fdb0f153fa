"""fastreg.torch: drop-in CrossEntropyLoss / cross_entropy / SGD against torch's own."""

import copy
import itertools
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastreg.torch as ft  # noqa: E402


def _model(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(12, 5).to(dtype)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=g, dtype=dtype))
        lin.bias.copy_(torch.randn(lin.bias.shape, generator=g, dtype=dtype))
    return lin


SGD_OPTIONS = [
    dict(momentum=m, dampening=d, weight_decay=wd, nesterov=n, maximize=mx)
    for m, d, wd, n, mx in itertools.product([0.0, 0.9], [0.0, 0.2], [0.0, 1e-2], [False, True], [False, True])
    if not (n and (m == 0 or d != 0))
]


@pytest.mark.parametrize("opts", SGD_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_sgd_class_matches_torch(opts):
    ref, ours = _model(), _model()
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.05, **opts)
    opt_ours = ft.SGD(ours.parameters(), lr=0.05, **opts)
    g = torch.Generator().manual_seed(1)
    for _ in range(30):
        x = torch.randn(8, 12, generator=g)
        y = torch.randint(0, 5, (8,), generator=g)
        for model, opt in ((ref, opt_ref), (ours, opt_ours)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_sgd_state_dict_interchangeable_with_torch():
    ref, ours = _model(), _model()
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    opt_ours = ft.SGD(ours.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    x, y = torch.randn(4, 12), torch.tensor([0, 1, 2, 3])
    for model, opt in ((ref, opt_ref), (ours, opt_ours)):
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    # torch -> fastreg and fastreg -> torch: the next step is the same either way
    ours2, ref2 = copy.deepcopy(ref), copy.deepcopy(ours)
    o2 = ft.SGD(ours2.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    o2.load_state_dict(copy.deepcopy(opt_ref.state_dict()))
    r2 = torch.optim.SGD(ref2.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    r2.load_state_dict(copy.deepcopy(opt_ours.state_dict()))
    for model, opt in ((ours2, o2), (ref2, r2), (ref, opt_ref)):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for a, b, c in zip(ours2.parameters(), ref2.parameters(), ref.parameters()):
        torch.testing.assert_close(a, c, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(b, c, rtol=1e-6, atol=1e-6)


def test_sgd_closure_and_params_without_grad():
    lin = _model()
    frozen = torch.nn.Parameter(torch.ones(3))
    opt = ft.SGD([{"params": lin.parameters()}, {"params": [frozen], "lr": 1.0}], lr=0.1)
    x, y = torch.randn(4, 12), torch.tensor([0, 1, 2, 3])

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(x), y)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert torch.isfinite(loss)
    torch.testing.assert_close(frozen.detach(), torch.ones(3))


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(lr=-1.0), "learning rate"), (dict(lr=0.1, momentum=-0.5), "momentum"),
     (dict(lr=0.1, weight_decay=-1.0), "weight_decay"), (dict(lr=0.1, nesterov=True), "Nesterov")],
)
def test_sgd_bad_hyperparameters_raise_like_torch(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ft.SGD(_model().parameters(), **kwargs)
    with pytest.raises(ValueError, match=match):
        torch.optim.SGD(_model().parameters(), **kwargs)


def test_sgd_step_hooks_fire_and_profiler_sees_step_and_zero_grad():
    lin = _model()
    opt = ft.SGD(lin.parameters(), lr=0.1)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(lambda o, args, kwargs: calls.append("global"))
    try:
        torch.nn.functional.cross_entropy(lin(torch.randn(4, 12)), torch.tensor([0, 1, 2, 3])).backward()
        before = lin.weight.detach().clone()
        opt.step()
    finally:
        handle.remove()
    assert calls == ["global", "pre", "post"]
    assert not torch.equal(lin.weight.detach(), before)  # the hooked path still steps
    with torch.profiler.profile() as prof:
        opt.step()
        opt.zero_grad()
    names = {e.name for e in prof.events()}
    assert "Optimizer.step#SGD.step" in names and "Optimizer.zero_grad#SGD.zero_grad" in names
    assert all(p.grad is None for p in lin.parameters())


def test_sgd_zero_grad_and_lr_scheduler_as_torch():
    ours, ref = _model(), _model()
    opt_ours, opt_ref = ft.SGD(ours.parameters(), lr=0.1), torch.optim.SGD(ref.parameters(), lr=0.1)
    x, y = torch.randn(4, 12), torch.tensor([0, 1, 2, 3])
    for model, opt in ((ours, opt_ours), (ref, opt_ref)):
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grads = [p.grad for p in model.parameters()]
        opt.zero_grad(set_to_none=False)  # zeroed in place, same tensors
        assert all(p.grad is g and not g.any() for p, g in zip(model.parameters(), grads))
        opt.zero_grad()
        assert all(p.grad is None for p in model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
        scheds = [torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5) for o in (opt_ours, opt_ref)]
        for _ in range(3):
            for model, opt, sched in zip((ours, ref), (opt_ours, opt_ref), scheds):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
                sched.step()
    assert opt_ours.param_groups[0]["lr"] == opt_ref.param_groups[0]["lr"] == 0.1 * 0.5**3
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_sgd_momentum_state_only_for_parameters_with_a_gradient():
    lin = _model()
    frozen = torch.nn.Parameter(torch.ones(3))
    params = [lin.weight, frozen, lin.bias]
    ours = ft.SGD(params, lr=0.1, momentum=0.9)
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    ref = torch.optim.SGD(ref_params, lr=0.1, momentum=0.9)
    x, y = torch.randn(4, 12), torch.tensor([0, 1, 2, 3])
    for _ in range(3):
        for (w, _, b), opt in ((params, ours), (ref_params, ref)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(x @ w.t() + b, y).backward()
            opt.step()
    assert ours.state_dict()["state"].keys() == ref.state_dict()["state"].keys() == {0, 2}
    for a, b in zip(params, ref_params):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_sgd_half_precision_falls_back_to_torch_with_a_warning(dtype):
    ours, ref = _model(dtype=dtype), _model(dtype=dtype)
    opt_ours = ft.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=g).to(dtype) for p in ours.parameters()]
        for model, opt in ((ours, opt_ours), (ref, opt_ref)):
            for p, gr in zip(model.parameters(), grads):
                p.grad = gr.clone()
            if opt is opt_ours:
                with pytest.warns(ft.FastregFallbackWarning, match="SGD"):
                    opt.step()
            else:
                opt.step()
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert torch.equal(a, b)
    torch.testing.assert_close(opt_ours.state_dict()["state"][0]["momentum_buffer"],
                               opt_ref.state_dict()["state"][0]["momentum_buffer"], rtol=0, atol=0)


def test_sgd_errors():
    p = torch.nn.Parameter(torch.ones(4))
    opt = ft.SGD([p], lr=0.1)
    p.grad = torch.ones(4).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    p.grad = p.detach()  # the binding refuses a gradient sharing the parameter's memory
    with pytest.raises(ValueError, match="share memory"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(4))


# ---- cross-entropy ---------------------------------------------------------------

CE_OPTIONS = [
    dict(weight=w, ignore_index=ii, reduction=r, label_smoothing=ls)
    for w, ii, r, ls in itertools.product([False, True], [-100, 1], ["mean", "sum", "none"], [0.0, 0.2])
]


def _ce_inputs(rng, dtype, n=None, c=None):
    n = int(rng.integers(1, 50)) if n is None else n
    c = int(rng.integers(2, 20)) if c is None else c
    x = torch.tensor(rng.standard_normal((n, c)) * 3, dtype=dtype)
    y = torch.tensor(rng.integers(0, c, n), dtype=torch.int64)
    w = torch.tensor(rng.uniform(0.1, 2.0, c), dtype=dtype)
    return x, y, w


@pytest.mark.parametrize("opts", CE_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cross_entropy_loss_and_grad_match_torch(rng, opts, dtype):
    x, y, w = _ce_inputs(rng, dtype)
    kwargs = dict(opts, weight=w if opts["weight"] else None)
    x_ref = x.clone().double().requires_grad_()
    x_ours = x.clone().requires_grad_()
    ref = torch.nn.functional.cross_entropy(
        x_ref, y, **dict(kwargs, weight=None if kwargs["weight"] is None else kwargs["weight"].double()))
    ours = ft.cross_entropy(x_ours, y, **kwargs)
    assert ours.dtype == dtype and ours.shape == ref.shape
    upstream = torch.tensor(rng.standard_normal(ref.shape), dtype=torch.float64)
    ref.backward(upstream)
    ours.backward(upstream.to(dtype))  # a grad_output other than 1
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-6, atol=1e-10)
    tol["equal_nan"] = True  # every row ignored: 'mean' is nan in both
    torch.testing.assert_close(ours.double(), ref.detach(), **tol)
    torch.testing.assert_close(x_ours.grad.double(), x_ref.grad, **tol)


def test_cross_entropy_module_matches_torch_module(rng):
    x, y, w = _ce_inputs(rng, torch.float32)
    for kwargs in (dict(), dict(weight=w, label_smoothing=0.1, ignore_index=0, reduction="sum")):
        a = ft.CrossEntropyLoss(**kwargs)(x, y)
        b = torch.nn.CrossEntropyLoss(**kwargs)(x, y)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert "reduction" in repr(ft.CrossEntropyLoss())


def test_cross_entropy_probability_targets(rng):
    x, _, _ = _ce_inputs(rng, torch.float64)
    p = torch.softmax(torch.tensor(rng.standard_normal(x.shape)), dim=1)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a = ft.cross_entropy(xa, p, label_smoothing=0.1)
    b = torch.nn.functional.cross_entropy(xb, p, label_smoothing=0.1)
    a.backward()
    b.backward()
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(xa.grad, xb.grad)


def test_cross_entropy_no_grad_non_contiguous_and_retain_graph(rng):
    x, y, _ = _ce_inputs(rng, torch.float32, n=16, c=7)
    with torch.no_grad():
        torch.testing.assert_close(ft.cross_entropy(x, y), torch.nn.functional.cross_entropy(x, y))
    # requires_grad=False input: a plain value, no graph
    out = ft.cross_entropy(x, y)
    assert not out.requires_grad
    # non-contiguous logits (a transposed view)
    xt = x.t().contiguous().t().requires_grad_()
    assert not xt.is_contiguous()
    xr = x.clone().requires_grad_()
    ft.cross_entropy(xt, y).backward()
    torch.nn.functional.cross_entropy(xr, y).backward()
    torch.testing.assert_close(xt.grad, xr.grad)
    # backward twice with retain_graph accumulates the same gradient twice
    x2 = x.clone().requires_grad_()
    loss = ft.cross_entropy(x2 * 2.0, y)
    loss.backward(retain_graph=True)
    first = x2.grad.clone()
    loss.backward()
    torch.testing.assert_close(x2.grad, 2 * first)


def test_cross_entropy_saved_gradient_is_never_handed_out(rng):
    """backward twice on a leaf: changing the first .grad (or a torch.autograd.grad
    result) in place must not change what the retained graph gives next time."""
    x, y, _ = _ce_inputs(rng, torch.float32, n=9, c=4)
    ref = x.clone().requires_grad_()
    torch.nn.functional.cross_entropy(ref, y).backward()
    for reduction in ("mean", "sum", "none"):
        xl = x.clone().requires_grad_()
        loss = ft.cross_entropy(xl, y, reduction=reduction)
        out = loss if reduction != "none" else loss.sum()
        out.backward(retain_graph=True)
        first = xl.grad.clone()
        xl.grad.mul_(7.0)
        xl.grad.zero_()
        out.backward(retain_graph=True)
        torch.testing.assert_close(xl.grad, first)
        (g1,) = torch.autograd.grad(out, xl, retain_graph=True)
        g1.fill_(123.0)
        (g2,) = torch.autograd.grad(out, xl)
        torch.testing.assert_close(g2, first)
    torch.testing.assert_close(first * 1, ref.grad * (1 if reduction == "mean" else 9))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_without_a_graph(rng, reduction):
    """no_grad, or an input that does not require grad: torch's value, no graph."""
    x, y, w = _ce_inputs(rng, torch.float64, n=11, c=6)
    want = torch.nn.functional.cross_entropy(x, y, weight=w, reduction=reduction, label_smoothing=0.1)
    xr = x.clone().requires_grad_()
    with torch.no_grad():
        got = ft.cross_entropy(xr, y, weight=w, reduction=reduction, label_smoothing=0.1)
    assert got.grad_fn is None and not got.requires_grad
    torch.testing.assert_close(got, want)
    got = ft.cross_entropy(x, y, weight=w, reduction=reduction, label_smoothing=0.1)
    assert got.grad_fn is None and got.dtype == x.dtype and got.shape == want.shape
    torch.testing.assert_close(got, want)
    with torch.inference_mode():
        torch.testing.assert_close(ft.cross_entropy(xr, y, weight=w, reduction=reduction, label_smoothing=0.1), want)


def test_cross_entropy_non_contiguous_target_and_weight(rng):
    x, y, w = _ce_inputs(rng, torch.float32, n=10, c=5)
    y2 = torch.stack([y, y], dim=1)[:, 0]  # a strided view
    w2 = torch.stack([w, w], dim=1)[:, 1]
    assert not y2.is_contiguous() and not w2.is_contiguous()
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a = ft.cross_entropy(xa, y2, weight=w2)
    b = torch.nn.functional.cross_entropy(xb, y, weight=w)
    a.backward()
    b.backward()
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(xa.grad, xb.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cross_entropy_half_precision_falls_back_to_torch_with_a_warning(rng, dtype):
    x, y, _ = _ce_inputs(rng, torch.float32, n=6, c=4)
    xa, xb = x.to(dtype).requires_grad_(), x.to(dtype).requires_grad_()
    with pytest.warns(ft.FastregFallbackWarning, match="cross_entropy"):
        a = ft.CrossEntropyLoss()(xa, y)
    b = torch.nn.functional.cross_entropy(xb, y)
    a.backward()
    b.backward()
    assert a.dtype == dtype and torch.equal(a, b) and torch.equal(xa.grad, xb.grad)


def test_cross_entropy_trains_through_a_linear_layer(rng):
    lin_a, lin_b = _model(), _model()
    x = torch.randn(32, 12)
    y = torch.randint(0, 5, (32,))
    ft.cross_entropy(lin_a(x), y).backward()
    torch.nn.functional.cross_entropy(lin_b(x), y).backward()
    for a, b in zip(lin_a.parameters(), lin_b.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)


def test_cross_entropy_errors_are_torchs(rng):
    x, y, _ = _ce_inputs(rng, torch.float32, n=4, c=3)
    with pytest.raises(IndexError):
        ft.cross_entropy(x, torch.tensor([0, 1, 2, 5]))
    with pytest.raises(RuntimeError, match="Long"):
        ft.cross_entropy(x, y.int())
    with pytest.raises(ValueError, match="batch_size"):
        ft.cross_entropy(x, y[:3])
    with pytest.raises(RuntimeError, match="weight"):
        ft.cross_entropy(x, y, weight=torch.ones(2))
    with pytest.raises(ValueError, match="reduction"):
        ft.CrossEntropyLoss(reduction="avg")
    # the input is never modified
    before = x.clone()
    ft.cross_entropy(x.requires_grad_(), y).backward()
    torch.testing.assert_close(x.detach(), before)


# ---- the README's drop-in swap -------------------------------------------------------

def _concise_epoch(X, y, seed, fast: bool, batch_size=256, lr=0.1):
    """d2l's concise softmax regression, one epoch; `fast` swaps in fastreg's pieces."""
    from torch.utils.data import DataLoader, TensorDataset

    import fastreg

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(X.shape[1], 10))
    net[1].weight.data.normal_(0, 0.01)
    net[1].bias.data.zero_()
    g = torch.Generator().manual_seed(seed)
    if fast:
        loader = fastreg.DataLoader(TensorDataset(X, y), batch_size=batch_size, shuffle=True, generator=g)
        loss_fn, opt = ft.CrossEntropyLoss(), ft.SGD(net.parameters(), lr=lr)
    else:
        loader = DataLoader(TensorDataset(X, y), batch_size=batch_size, shuffle=True, generator=g)
        loss_fn, opt = torch.nn.CrossEntropyLoss(), torch.optim.SGD(net.parameters(), lr=lr)
    for xb, yb in loader:
        loss = loss_fn(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in net.parameters()], g.get_state()


def test_drop_in_swap_gives_the_same_parameters_as_torch():
    gen = torch.Generator().manual_seed(3)
    X = torch.rand(3000, 784, generator=gen)
    y = torch.randint(0, 10, (3000,), generator=gen)
    ours, g_ours = _concise_epoch(X, y, seed=7, fast=True)
    ref, g_ref = _concise_epoch(X, y, seed=7, fast=False)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert torch.equal(g_ours, g_ref)  # the generator is left where torch leaves it
