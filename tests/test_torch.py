"""fastreg.torch: drop-in CrossEntropyLoss / cross_entropy / SGD against torch's own."""

import copy
import itertools
import warnings

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
    [
        (dict(lr=-1.0), "learning rate"),
        (dict(lr=0.1, momentum=-0.5), "momentum"),
        (dict(lr=0.1, weight_decay=-1.0), "weight_decay"),
        (dict(lr=0.1, nesterov=True), "Nesterov"),
    ],
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
    torch.testing.assert_close(
        opt_ours.state_dict()["state"][0]["momentum_buffer"],
        opt_ref.state_dict()["state"][0]["momentum_buffer"],
        rtol=0,
        atol=0,
    )


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
        x_ref, y, **dict(kwargs, weight=None if kwargs["weight"] is None else kwargs["weight"].double())
    )
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


# ---- every autograd mode: the custom ops and torch's formula where the kernel has none --------

import torch.autograd.forward_ad as fwAD  # noqa: E402

F = torch.nn.functional
# torch's first forward-mode AD call scripts its jvp decompositions, which warns (torch's own).
_TORCH_JVP_WARNING = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def _loss_cases(rng):
    """(name, fastreg loss of x, torch's loss of x) on float64 [7, 5] logits/predictions."""
    t = torch.tensor(rng.integers(0, 5, 7))
    t[2] = 1
    w = torch.tensor(rng.uniform(0.2, 2.0, 5))
    p = torch.softmax(torch.tensor(rng.standard_normal((7, 5))), 1)
    y = torch.tensor(rng.standard_normal((7, 5)))
    return [
        ("ce", lambda x: ft.cross_entropy(x, t), lambda x: F.cross_entropy(x, t)),
        (
            "ce_all_options",
            lambda x: ft.cross_entropy(x, t, weight=w, ignore_index=1, label_smoothing=0.2),
            lambda x: F.cross_entropy(x, t, weight=w, ignore_index=1, label_smoothing=0.2),
        ),
        (
            "ce_none",
            lambda x: ft.cross_entropy(x, t, reduction="none"),
            lambda x: F.cross_entropy(x, t, reduction="none"),
        ),
        (
            "ce_probs_sum",
            lambda x: ft.cross_entropy(x, p, reduction="sum"),
            lambda x: F.cross_entropy(x, p, reduction="sum"),
        ),
        ("mse", lambda x: ft.mse_loss(x, y), lambda x: F.mse_loss(x, y)),
        ("l1_none", lambda x: ft.l1_loss(x, y, reduction="none"), lambda x: F.l1_loss(x, y, reduction="none")),
        ("huber", lambda x: ft.huber_loss(x, y, delta=0.7), lambda x: F.huber_loss(x, y, delta=0.7)),
        (
            "smooth_l1_sum",
            lambda x: ft.smooth_l1_loss(x, y, reduction="sum", beta=0.5),
            lambda x: F.smooth_l1_loss(x, y, reduction="sum", beta=0.5),
        ),
        ("squared", lambda x: ft.squared_loss(x, y), lambda x: F.mse_loss(x, y) / 2),
    ]


CASE_NAMES = ["ce", "ce_all_options", "ce_none", "ce_probs_sum", "mse", "l1_none", "huber", "smooth_l1_sum", "squared"]


def _case(rng, name):
    return next(c for c in _loss_cases(rng) if c[0] == name)[1:]


def _x(rng):
    return torch.tensor(rng.standard_normal((7, 5)) * 2, requires_grad=True)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_fused_losses_gradcheck_and_gradgradcheck(rng, name):
    ours, _ = _case(rng, name)
    x = _x(rng)
    assert type(ours(x).grad_fn).__name__.startswith("Fused_")  # the fused kernel, not torch's
    assert torch.autograd.gradcheck(ours, x)
    assert torch.autograd.gradgradcheck(ours, x)  # create_graph=True: torch's formula, with a graph


@pytest.mark.parametrize("name", CASE_NAMES)
def test_fused_losses_double_backward_matches_torch(rng, name):
    """A gradient penalty: d/dx |d loss/dx|^2 (was silently 0 before: no graph)."""
    ours, ref = _case(rng, name)
    xa, xb = _x(rng), None
    xb = xa.detach().clone().requires_grad_()
    for f, x in ((ours, xa), (ref, xb)):
        (g,) = torch.autograd.grad(f(x).sum(), x, create_graph=True)
        assert g.requires_grad
        (g.pow(2).sum() + f(x).sum()).backward()
    torch.testing.assert_close(xa.grad, xb.grad)


@_TORCH_JVP_WARNING
@pytest.mark.parametrize("name", CASE_NAMES)
def test_fused_losses_forward_mode_and_torch_func(rng, name):
    ours, ref = _case(rng, name)
    x = _x(rng).detach()
    v = torch.tensor(rng.standard_normal(x.shape))
    with fwAD.dual_level():  # forward-mode AD: was a None tangent
        got = fwAD.unpack_dual(ours(fwAD.make_dual(x, v))).tangent
        want = fwAD.unpack_dual(ref(fwAD.make_dual(x, v))).tangent
    assert got is not None
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.func.jvp(ours, (x,), (v,)), torch.func.jvp(ref, (x,), (v,)))

    def summed(f):
        return lambda x: f(x).sum()

    torch.testing.assert_close(torch.func.grad(summed(ours))(x), torch.func.grad(summed(ref))(x))
    torch.testing.assert_close(torch.func.hessian(summed(ours))(x), torch.func.hessian(summed(ref))(x))
    xb = torch.tensor(rng.standard_normal((3, *x.shape)))
    torch.testing.assert_close(torch.func.vmap(ours)(xb), torch.func.vmap(ref)(xb))
    assert torch.autograd.gradcheck(ours, x.clone().requires_grad_(), check_forward_ad=True, check_batched_grad=True)


@pytest.mark.parametrize("name", ["ce", "ce_none", "huber", "l1_none"])
def test_fused_losses_compile_without_graph_breaks(rng, name):
    ours, ref = _case(rng, name)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(ours, fullgraph=True, backend=backend)
    x = _x(rng)
    xr = x.detach().clone().requires_grad_()
    got = compiled(x)
    want = ref(xr)
    torch.testing.assert_close(got, want)
    assert any("fastreg" in g for g in graphs), graphs  # traced as the custom op
    got.sum().backward()
    want.sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    torch._dynamo.reset()
    aot = torch.compile(ours, fullgraph=True, backend="aot_eager")
    x.grad = None
    aot(x).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    with torch.no_grad():
        torch.testing.assert_close(aot(x), want.detach())


@_TORCH_JVP_WARNING
def test_custom_op_called_directly(rng):
    """torch.ops.fastreg.* itself: autograd (both want_grad settings), vmap, and a clear error
    for dual tensors instead of a dropped tangent."""
    op = torch.ops.fastreg.cross_entropy
    x = _x(rng)
    t = torch.tensor(rng.integers(0, 5, 7))
    for want_grad in (True, False):
        f = lambda x, want_grad=want_grad: op(x, t, None, -100, "mean", 0.0, want_grad)[0]  # noqa: E731
        assert torch.autograd.gradcheck(f, x) and torch.autograd.gradgradcheck(f, x)
    loss, grad = op(x.detach(), t, None, -100, "sum", 0.0, True)
    xr = x.detach().clone().requires_grad_()
    F.cross_entropy(xr, t, reduction="sum").backward()
    torch.testing.assert_close(grad, xr.grad)
    xb = torch.tensor(rng.standard_normal((4, 7, 5)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "performance drop" fallback warning: a vmap rule exists
        got = torch.vmap(lambda x: op(x, t, None, -100, "none", 0.0, False)[0])(xb)
    torch.testing.assert_close(got, torch.vmap(lambda x: F.cross_entropy(x, t, reduction="none"))(xb))
    with fwAD.dual_level(), pytest.raises(RuntimeError, match="no forward-mode AD formula"):
        op(fwAD.make_dual(x.detach(), torch.ones_like(x)), t, None, -100, "mean", 0.0, False)


def test_fused_backward_keeps_the_fast_path_and_checks_saved_inputs(rng):
    """Ordinary backward uses the saved fused gradient (no recomputation); an input changed in
    place before a create_graph backward is torch's version error, never a stale graph."""
    x = _x(rng)
    t = torch.tensor(rng.integers(0, 5, 7))
    loss = ft.cross_entropy(x * 1.0, t)
    (g,) = torch.autograd.grad(loss, x, retain_graph=True)
    assert not g.requires_grad
    xr = x.detach().clone().requires_grad_()
    F.cross_entropy(xr, t).backward()
    torch.testing.assert_close(g, xr.grad)
    h = x * 1.0
    loss = ft.cross_entropy(h, t)
    with torch.no_grad():
        h.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(loss, x, create_graph=True)


def test_ignore_index_with_probability_targets_raises_as_torch(rng):
    x = _x(rng)
    p = torch.softmax(torch.randn(7, 5, dtype=torch.float64), 1)
    for ii in (0, 3):
        with pytest.raises(RuntimeError, match="ignore_index is not supported for floating point target"):
            ft.cross_entropy(x, p, ignore_index=ii)
        with pytest.raises(RuntimeError, match="ignore_index is not supported for floating point target"):
            F.cross_entropy(x, p, ignore_index=ii)
    torch.testing.assert_close(ft.cross_entropy(x, p, ignore_index=-1), F.cross_entropy(x, p, ignore_index=-1))


def test_regression_modules_match_torch(rng):
    x = _x(rng)
    y = torch.tensor(rng.standard_normal((7, 5)))
    for ours, ref in (
        (ft.L1Loss(), torch.nn.L1Loss()),
        (ft.MSELoss(reduction="sum"), torch.nn.MSELoss(reduction="sum")),
        (ft.HuberLoss(delta=0.3), torch.nn.HuberLoss(delta=0.3)),
        (ft.SmoothL1Loss(beta=2.0, reduction="none"), torch.nn.SmoothL1Loss(beta=2.0, reduction="none")),
    ):
        xa, xb = x.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
        a, b = ours(xa, y), ref(xb, y)
        torch.testing.assert_close(a, b)
        a.sum().backward()
        b.sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad)
    # what the kernel does not cover is torch's: a broadcast target (torch warns), an int input
    with pytest.warns(UserWarning, match="target size"):
        ft.mse_loss(x, y[:1, :1].reshape(1))
    with pytest.raises(ValueError, match="reduction"):
        ft.L1Loss(reduction="avg")(x, y)


# ---- SGD: torch's newer arguments -------------------------------------------------------------


def test_sgd_defaults_and_param_groups_carry_torchs_keys():
    ours, ref = ft.SGD(_model().parameters()), torch.optim.SGD(_model().parameters())
    assert ours.defaults == ref.defaults
    assert ours.param_groups[0].keys() == ref.param_groups[0].keys()


@pytest.mark.parametrize(
    "flags",
    [
        dict(foreach=True),
        dict(foreach=False),
        dict(fused=True),
        dict(fused=False),
        dict(differentiable=False),
        dict(foreach=None, fused=None),
    ],
)
def test_sgd_foreach_and_fused_flags_are_accepted_and_change_nothing(flags):
    ref, ours = _model(), _model()
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    opt_ours = ft.SGD(ours.parameters(), lr=0.05, momentum=0.9, **flags)
    assert all(opt_ours.param_groups[0][k] == v for k, v in flags.items())
    x, y = torch.randn(8, 12), torch.randint(0, 5, (8,))
    for _ in range(5):
        for model, opt in ((ref, opt_ref), (ours, opt_ours)):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_sgd_flag_conflicts_raise_as_torch():
    for kwargs, match in (
        (dict(fused=True, foreach=True), "cannot be `True` together"),
        (dict(fused=True, differentiable=True), "does not support `differentiable`"),
    ):
        for cls in (ft.SGD, torch.optim.SGD):
            with pytest.raises(RuntimeError, match=match):
                cls(_model().parameters(), **kwargs)
    with pytest.raises(ValueError, match="1-element"):
        ft.SGD(_model().parameters(), lr=torch.tensor([0.1, 0.2]))


def test_sgd_tensor_lr_and_torch_state_dict_with_a_tensor_lr():
    ref, ours = _model(), _model()
    lr_ref, lr_ours = torch.tensor(0.1), torch.tensor(0.1)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=lr_ref, momentum=0.5)
    opt_ours = ft.SGD(ours.parameters(), lr=lr_ours, momentum=0.5)
    x, y = torch.randn(8, 12), torch.randint(0, 5, (8,))

    def steps(n):
        for _ in range(n):
            for model, opt in ((ref, opt_ref), (ours, opt_ours)):
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()

    steps(3)
    lr_ref.fill_(0.01)  # changed in place: the next step uses it (torch reads it at each step)
    lr_ours.fill_(0.01)
    steps(3)
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    sd = copy.deepcopy(opt_ref.state_dict())
    assert isinstance(sd["param_groups"][0]["lr"], torch.Tensor)
    opt_ours = ft.SGD(ours.parameters(), lr=0.5)
    opt_ours.load_state_dict(sd)
    opt_ref2 = torch.optim.SGD(ref.parameters(), lr=0.5)
    opt_ref2.load_state_dict(copy.deepcopy(opt_ours.state_dict()))
    opt_ref = opt_ref2
    steps(2)
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_sgd_differentiable_step_is_torchs():
    """differentiable=True: the step is torch's own differentiable update, so a gradient flows
    through it (to the gradient and the momentum buffer), as with torch.optim.SGD."""

    def step(cls, p, grad, buf):
        p = p.clone()  # differentiable optimizers take non-leaf parameters
        p.grad = grad
        opt = cls([p], lr=0.1, momentum=0.9, weight_decay=0.01, differentiable=True)
        opt.state[p]["momentum_buffer"] = buf.clone()
        opt.step()
        return p, opt.state[p]["momentum_buffer"]

    g = torch.Generator().manual_seed(0)
    args = [torch.rand(6, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    for a, b in zip(step(ft.SGD, *args), step(torch.optim.SGD, *args)):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda *a: step(ft.SGD, *a), args)


def test_cross_entropy_positional_arguments_are_torchs(rng):
    """torch's order: (input, target, weight, size_average, ignore_index, reduce, reduction,
    label_smoothing); the legacy size_average/reduce pair maps to a reduction as in torch."""
    x = _x(rng)
    t = torch.tensor([1, 0, 1, 2, 1, 3, 4])
    w = torch.rand(5, dtype=torch.float64) + 0.5
    for args in (
        (w, None, 1),
        (None, None, 1, None, "sum"),
        (w, None, -100, None, "none", 0.3),
        (None, False),
        (None, None, 1, False),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's size_average/reduce deprecation
            torch.testing.assert_close(ft.cross_entropy(x, t, *args), F.cross_entropy(x, t, *args))
