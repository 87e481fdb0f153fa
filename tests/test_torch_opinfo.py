"""PyTorch's own test inputs through fastreg's drop-in equivalents.

OpInfo ``sample_inputs`` and ``reference_inputs`` (torch.testing._internal.common_methods_invocations)
for cross_entropy, softmax, log_softmax, softmin and logsumexp; ModuleInfo inputs
(common_modules) for the loss modules; optim_db's SGD inputs (common_optimizers) through
fastreg.torch.SGD. float32 and float64, contiguous and not. Every sample either matches
torch (values and first-order gradients) or is declined: fastreg must then raise the
documented error, which the test asserts, and the sample is skipped naming the reason.
"""

import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")  # torch.testing._internal needs it

# torch's test-suite modules are slow to import: once for this file.
from torch.testing._internal.common_methods_invocations import op_db
from torch.testing._internal.common_modules import module_db
from torch.testing._internal.common_optimizers import optim_db
from torch.testing._internal.common_utils import noncontiguous_like

import fastreg.torch as ft
from fastreg import ops

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.float64: {"rtol": 1e-9, "atol": 1e-10}}

# Declined inputs: (pattern on what fastreg raises, reason). ops.* is a NumPy-level API that
# documents these limits; fastreg.torch hands everything it has no kernel for to torch.
DECLINED = {
    "k_dim_logits": (
        ValueError,
        r"logits must have shape \(N, C\) or \(C,\)",
        "fastreg.ops.cross_entropy's NumPy path takes [N, C] or [C] logits, not K-dimensional ones",
    ),
}


def _ops_fn(name):
    """fastreg's equivalent of op_db entry `name`, called as torch's is."""
    if name == "nn.functional.cross_entropy":
        return lambda x, target, **kw: ops.cross_entropy(x, target, **kw)
    if name == "logsumexp":
        return ops.logsumexp
    fn = {"softmax": ops.softmax, "log_softmax": ops.log_softmax, "nn.functional.softmin": ops.softmin}[name]
    return lambda x, dim, **kw: fn(x, dim, **kw)


OPS = ["nn.functional.cross_entropy", "softmax", "log_softmax", "nn.functional.softmin", "logsumexp"]
OPINFOS = [op for op in op_db if op.name in OPS]
assert {op.name for op in OPINFOS} == set(OPS)


def _samples(op, dtype):
    seen = []
    for kind in ("sample_inputs", "reference_inputs"):
        for i, s in enumerate(getattr(op, kind)("cpu", dtype, requires_grad=True)):
            seen.append((f"{kind}[{i}]", s))
    return seen


def _leaf(t):
    return t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t


def _run(fn, sample, contiguous: bool):
    """fn(sample) and the gradient of sum(out * cotangent) w.r.t. the input, on fresh leaves."""
    s = sample if contiguous else sample.noncontiguous()
    x = _leaf(s.input)
    args = [_leaf(a) for a in s.args]
    kwargs = {k: _leaf(v) for k, v in s.kwargs.items()}
    out = fn(x, *args, **kwargs)
    grad = None
    if x.requires_grad and out.requires_grad and out.numel():
        cot = torch.linspace(-1, 2, out.numel(), dtype=out.dtype).reshape(out.shape)
        (grad,) = torch.autograd.grad((out * cot).sum(), x)
    return out, grad


def _check(op_name, sample, dtype, contiguous, via):
    ref, ref_grad = _run(torch_fn(op_name), sample, contiguous)
    fn = ft.cross_entropy if via == "fastreg.torch" else _ops_fn(op_name)
    got, got_grad = _run(fn, sample, contiguous)
    assert got.dtype == ref.dtype and got.shape == ref.shape, (got.dtype, got.shape, ref.dtype, ref.shape)
    torch.testing.assert_close(got, ref.detach(), equal_nan=True, **TOL[dtype])
    assert (got_grad is None) == (ref_grad is None)
    if ref_grad is not None:
        torch.testing.assert_close(got_grad, ref_grad, equal_nan=True, **TOL[dtype])
    # The same values with no graph: the kernels themselves (ops sends tensors that require
    # grad through fastreg.torch, which hands K-dimensional logits to torch).
    with torch.no_grad():
        if via == "ops" and op_name == "nn.functional.cross_entropy" and sample.input.dim() > 2:
            err, pattern, reason = DECLINED["k_dim_logits"]
            with pytest.raises(err, match=pattern):
                _run(fn, sample, contiguous)
            pytest.skip(reason)
        plain, _ = _run(fn, sample, contiguous)
    torch.testing.assert_close(plain, ref.detach(), equal_nan=True, **TOL[dtype])


def torch_fn(op_name):
    op = next(o for o in OPINFOS if o.name == op_name)
    return op.op


def _op_cases():
    for op in OPINFOS:
        vias = ["ops", "fastreg.torch"] if op.name == "nn.functional.cross_entropy" else ["ops"]
        for via in vias:
            yield pytest.param(op, via, id=f"{op.name}.{op.variant_test_name or 'default'}-{via}")


@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "noncontiguous"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op, via", list(_op_cases()))
def test_opinfo_samples(op, via, dtype, contiguous):
    declined = []
    for where, sample in _samples(op, dtype):
        try:
            _check(op.name, sample, dtype, contiguous, via)
        except pytest.skip.Exception as skip:
            declined.append(f"{where}: {skip.msg}")
        except Exception as err:
            raise AssertionError(
                f"{op.name} {where} {sample.summary() if hasattr(sample, 'summary') else sample} via {via}: {err}"
            ) from err
    if declined:  # every sample ran; the declined ones raised the documented error
        reasons = sorted({d.split(": ", 1)[1] for d in declined})
        assert reasons == [DECLINED["k_dim_logits"][2]], reasons


# ---- ModuleInfo: the loss modules ----------------------------------------------------------

MODULES = {
    torch.nn.CrossEntropyLoss: ft.CrossEntropyLoss,
    torch.nn.L1Loss: ft.L1Loss,
    torch.nn.MSELoss: ft.MSELoss,
    torch.nn.HuberLoss: ft.HuberLoss,
    torch.nn.SmoothL1Loss: ft.SmoothL1Loss,
}
MODULE_INFOS = [m for m in module_db if m.module_cls in MODULES]
assert {m.module_cls for m in MODULE_INFOS} == set(MODULES)


def _module_run(cls, module_input, contiguous):
    ctor, fwd = module_input.constructor_input, module_input.forward_input
    module = cls(*ctor.args, **ctor.kwargs)
    args = [_leaf(a if contiguous or not isinstance(a, torch.Tensor) else noncontiguous_like(a)) for a in fwd.args]
    out = module(*args, **fwd.kwargs)
    x = args[0]
    cot = torch.linspace(-1, 2, out.numel(), dtype=out.dtype).reshape(out.shape)
    grads = torch.autograd.grad(
        (out * cot).sum(), [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad], allow_unused=True
    )
    assert x.requires_grad
    return out, grads


@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "noncontiguous"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("info", MODULE_INFOS, ids=lambda m: m.module_cls.__name__)
def test_moduleinfo_loss_inputs(info, dtype, contiguous):
    inputs = info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True, training=True)
    assert inputs
    for mi in inputs:
        ref, ref_grads = _module_run(info.module_cls, mi, contiguous)
        got, got_grads = _module_run(MODULES[info.module_cls], mi, contiguous)
        where = f"{info.module_cls.__name__} {mi.desc!r}"
        assert got.dtype == ref.dtype and got.shape == ref.shape, where
        torch.testing.assert_close(got, ref, equal_nan=True, msg=where, **TOL[dtype])
        for g, r in zip(got_grads, ref_grads):
            assert (g is None) == (r is None), where
            if r is not None:
                torch.testing.assert_close(g, r, equal_nan=True, msg=where, **TOL[dtype])


# ---- optim_db: SGD ---------------------------------------------------------------------------

SGD_INFO = next(o for o in optim_db if o.optim_cls is torch.optim.SGD)
# torch's implementation flags (SGD_INFO.supported_impls): fastreg accepts foreach and fused
# (its update is one fused call either way); differentiable is tested in tests/test_torch.py.
IMPLS = [{}, {"foreach": False}, {"foreach": True}, {"fused": True}]
assert set(SGD_INFO.supported_impls) == {"foreach", "differentiable", "fused"}


def _params(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (7,), (3, 7), (3,)]
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in shapes]


_COEFS = {}


def _closure(params, opt, step):
    """A fixed smooth loss of the parameters that changes every step (cheap: 900 steps a test)."""
    key = (params[0].dtype, step % 5)
    if key not in _COEFS:
        g = torch.Generator().manual_seed(100 + step % 5)
        _COEFS[key] = [
            (torch.rand(p.shape, generator=g, dtype=p.dtype) + 0.5, torch.randn(p.shape, generator=g, dtype=p.dtype))
            for p in params
        ]
    coefs = _COEFS[key]

    def closure():
        opt.zero_grad()
        loss = sum(((a * p * p).sum() / 2 + (b * torch.sin(p)).sum()) for p, (a, b) in zip(params, coefs))
        loss.backward()
        return loss

    return closure


def _kwargs(kwargs):
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


@pytest.mark.parametrize("impl", IMPLS, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "default")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_optim_db_sgd_inputs(dtype, impl):
    inputs = SGD_INFO.optim_inputs_func(device="cpu", dtype=dtype)
    assert len(inputs) >= 9
    # torch's fused CPU step costs ~90 ms here (2 loaded cores); it computes the same update as
    # its default one, so fastreg's fused=True (which changes nothing) is compared with that.
    ref_impl = {} if impl.get("fused") else impl
    for oi in inputs:
        kw, kw_ref = dict(oi.kwargs, **impl), dict(oi.kwargs, **ref_impl)
        ours, ref = _params(dtype), _params(dtype)
        opt_ours, opt_ref = ft.SGD(ours, **_kwargs(kw)), torch.optim.SGD(ref, **_kwargs(kw_ref))
        assert opt_ours.defaults.keys() == opt_ref.defaults.keys()
        assert opt_ours.param_groups[0].keys() == opt_ref.param_groups[0].keys()
        for step in range(50):
            if step == 25:  # state_dict both ways, each loaded into a fresh optimizer of the other kind
                sd_ours, sd_ref = copy.deepcopy(opt_ours.state_dict()), copy.deepcopy(opt_ref.state_dict())
                opt_ours, opt_ref = ft.SGD(ours, **_kwargs(kw)), torch.optim.SGD(ref, **_kwargs(kw_ref))
                opt_ours.load_state_dict(sd_ref)
                opt_ref.load_state_dict(sd_ours)
                for group in opt_ref.param_groups:  # keep torch on the implementation chosen above
                    group.update((k, v) for k, v in ref_impl.items())
                    if impl.get("fused"):
                        group["fused"] = None
            loss_ours = opt_ours.step(_closure(ours, opt_ours, step))
            loss_ref = opt_ref.step(_closure(ref, opt_ref, step))
            torch.testing.assert_close(loss_ours, loss_ref, rtol=1e-5, atol=1e-6, msg=f"{oi.desc} step {step}")
        for a, b in zip(ours, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=oi.desc)
        for a, b in zip(ours, ref):
            sa, sb = opt_ours.state.get(a, {}), opt_ref.state.get(b, {})
            assert sa.keys() == sb.keys(), oi.desc
            if "momentum_buffer" in sa:
                torch.testing.assert_close(sa["momentum_buffer"], sb["momentum_buffer"], rtol=1e-5, atol=1e-6)


def test_optim_db_sgd_error_inputs():
    """torch's own bad-construction inputs for SGD raise the same error from fastreg.torch.SGD."""
    cases = SGD_INFO.optim_error_inputs_func(device="cpu", dtype=torch.float32)
    checked = 0
    for ei in cases:
        oi = ei.optimizer_error_input
        if ei.error_on.name != "CONSTRUCTION_ERROR":
            continue
        params = oi.params if oi.params is not None else _params(torch.float32)
        with pytest.raises(ei.error_type, match=ei.error_regex):
            ft.SGD(params, **oi.kwargs)
        checked += 1
    assert checked >= 1
