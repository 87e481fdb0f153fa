"""ops.* given torch tensors that require grad: a graph with torch's gradient, the _with_grad
twins' refusals, and NumPy callers that never load torch (the routing in fastreg.ops)."""

import pytest

from fastreg import ops

torch = pytest.importorskip("torch")
F = torch.nn.functional


AUTOGRAD_CASES = {
    "squared_loss": (lambda x, y: ops.squared_loss(x, y.reshape(-1)), lambda x, y: ((x - y) ** 2 / 2).mean()),
    "l1_loss_none": (lambda x, y: ops.l1_loss(x, y, reduction="none"), lambda x, y: F.l1_loss(x, y, reduction="none")),
    "huber_loss": (lambda x, y: ops.huber_loss(x, y, delta=0.5), lambda x, y: F.huber_loss(x, y, delta=0.5)),
    "smooth_l1_sum": (
        lambda x, y: ops.smooth_l1_loss(x, y, beta=2.0, reduction="sum"),
        lambda x, y: F.smooth_l1_loss(x, y, beta=2.0, reduction="sum"),
    ),
    "cross_entropy": (
        lambda x, y: ops.cross_entropy(x, (y[:, 0] > 0).int(), label_smoothing=0.1),
        lambda x, y: F.cross_entropy(x, (y[:, 0] > 0).long(), label_smoothing=0.1),
    ),
    "softmax": (lambda x, y: ops.softmax(x, 0) * y, lambda x, y: F.softmax(x, 0) * y),
    "log_softmax_all": (
        lambda x, y: ops.log_softmax(x, None) * y,
        lambda x, y: F.log_softmax(x.reshape(-1), 0).reshape(x.shape) * y,
    ),
    "softmin": (lambda x, y: ops.softmin(x) * y, lambda x, y: F.softmin(x, -1) * y),
    "logsumexp_t": (lambda x, y: ops.logsumexp(x, 1, temperature=0.3), lambda x, y: 0.3 * torch.logsumexp(x / 0.3, 1)),
    "logsumexp_t0": (lambda x, y: ops.logsumexp(x, 0, True, temperature=0), lambda x, y: x.amax(0, True)),
}


@pytest.mark.parametrize("name", list(AUTOGRAD_CASES))
def test_tensors_that_require_grad_get_a_graph(rng, name):
    """ops.* given tensors that require grad: a result with torch's gradient (was detached),
    double backward included; the same value as the kernel's under no_grad."""
    ours, ref = AUTOGRAD_CASES[name]
    x = torch.tensor(rng.standard_normal((6, 2)) * 2, requires_grad=True)
    y = torch.tensor(rng.standard_normal((6, 2)))
    got, want = ours(x, y), ref(x, y)
    assert got.requires_grad and got.shape == want.shape
    torch.testing.assert_close(got, want)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, y), want.detach())
    assert torch.autograd.gradcheck(lambda x: ours(x, y), x)
    assert torch.autograd.gradgradcheck(lambda x: ours(x, y), x)
    torch._dynamo.reset()
    compiled = torch.compile(lambda x: ours(x, y), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), want)


@pytest.mark.parametrize(
    "fn, args",
    [
        (ops.cross_entropy_with_grad, lambda x: (x, torch.zeros(6, dtype=torch.int64))),
        (ops.squared_loss_with_grad, lambda x: (x, torch.zeros(6, 2, dtype=torch.float64))),
        (ops.huber_loss_with_grad, lambda x: (x, torch.zeros(6, 2, dtype=torch.float64))),
    ],
)
def test_with_grad_twins_refuse_what_they_cannot_do(rng, fn, args):
    """Plain values for inputs that require grad (the gradient is the result); a clear error
    under a torch.func transform or torch.compile, or for an out= that autograd tracks."""
    x = torch.tensor(rng.standard_normal((6, 2)), requires_grad=True)
    loss, grad = fn(*args(x))
    assert not loss.requires_grad and not grad.requires_grad and grad.shape == x.shape
    with pytest.raises(RuntimeError, match="out= requires grad"):
        fn(*args(x.detach()), out=torch.zeros(6, 2, dtype=torch.float64, requires_grad=True))
    with pytest.raises(RuntimeError, match="torch.func transform"):
        torch.func.vmap(lambda x: fn(*args(x))[0])(x.detach()[None])
    torch._dynamo.reset()
    with pytest.raises(Exception, match="does not support automatic differentiation"):
        torch.compile(lambda x: fn(*args(x))[0], fullgraph=True, backend="eager")(x.detach())


def test_numpy_calls_never_import_torch():
    """The autograd routing only looks for tensors; NumPy callers never load torch."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from fastreg import ops; x = np.ones((3, 4)); y = np.zeros(3, np.int64)\n"
        "ops.softmax(x, dim=0); ops.softmin(x); ops.log_softmax(x, None); ops.logsumexp(x, (0, 1), True)\n"
        "ops.cross_entropy(x, y); ops.cross_entropy_with_grad(x, y); ops.squared_loss(x, x)\n"
        "ops.huber_loss_with_grad(x, x)\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
