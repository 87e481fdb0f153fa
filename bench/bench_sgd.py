"""SGD update: fastreg.optim.sgd_step vs torch.optim.SGD.step on the same tensors.

Floors (float32): plain moves 12 B per parameter (read param + grad, write param), so
10M is 120 MB, ~2.5 ms at ~48 GB/s (two threads); momentum moves 20 B (120 + 80 MB).
The 7850-parameter cases are pure per-call overhead (94 KB fits in L2).
"numpy" (plain cases only) is NumPy's best in-place form, two passes:
np.multiply(g, -lr, out=tmp); np.add(p, tmp, out=p).
"""

import numpy as np
import pytest

from fastreg.optim import sgd_step

torch = pytest.importorskip("torch")

CASES = {
    # name: (shapes, options)
    "10M-momentum-wd": ([(10_000_000,)], dict(momentum=0.9, weight_decay=1e-4)),
    "10M-plain": ([(10_000_000,)], dict()),
    "softmax-7850": ([(784, 10), (10,)], dict()),
    # d2l's softmax model with momentum: the per-step overhead case plus a buffer per tensor.
    "softmax-7850-momentum": ([(784, 10), (10,)], dict(momentum=0.9)),
}


def _setup(shapes, opts, foreach=None):
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(*s, generator=gen, requires_grad=True) for s in shapes]
    for p in params:
        p.grad = torch.randn(*p.shape, generator=gen) * 1e-3
    opt = torch.optim.SGD(params, lr=1e-3, foreach=foreach, **opts)
    return params, opt


def _check_once(shapes, opts):
    ref, opt = _setup(shapes, opts)
    ours, _ = _setup(shapes, opts)
    opt.step()
    opt.step()
    bufs = [None] * len(ours)
    for _ in range(2):
        sgd_step(ours, [p.grad for p in ours], bufs, lr=1e-3, **opts)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("impl", ["fastreg", "torch-default", "torch-foreach", "torch-for-loop", "numpy"])
def test_sgd_step(benchmark, case, impl):
    shapes, opts = CASES[case]
    benchmark.group = f"sgd {case}"
    if impl == "fastreg":
        _check_once(shapes, opts)
        params, _ = _setup(shapes, opts)
        grads = [p.grad for p in params]
        bufs = [None] * len(params)
        benchmark(lambda: sgd_step(params, grads, bufs, lr=1e-3, **opts))
    elif impl == "numpy":
        if opts:
            pytest.skip("the NumPy baseline covers the plain update only")
        params, _ = _setup(shapes, opts)
        arrays = [(p.detach().numpy(), p.grad.numpy(), np.empty(p.shape, np.float32)) for p in params]

        def step():
            for p, g, tmp in arrays:
                np.multiply(g, -1e-3, out=tmp)
                np.add(p, tmp, out=p)

        benchmark(step)
    else:
        foreach = {"torch-default": None, "torch-foreach": True, "torch-for-loop": False}[impl]
        _, opt = _setup(shapes, opts, foreach=foreach)
        benchmark(opt.step)
