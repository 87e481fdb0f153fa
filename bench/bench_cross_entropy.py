"""Fused softmax cross-entropy (forward + backward): fastreg.ops vs torch F.cross_entropy
and the d2l chapter's naive softmax + cross_entropy (torch autograd), float32.

Also times np.copyto on the (4096, 1000) logits in the same group: the kernel moves
2 reads + 1 write of [N, C] (at most; the second read usually hits cache), a copy 1 + 1,
so ``copy_time * 3 / 2 / fastreg_time`` is the fraction of copy bandwidth reached."""

import numpy as np
import pytest

from fastreg import ops

torch = pytest.importorskip("torch")
F = torch.nn.functional

CASES = {"256x10": (256, 10), "4096x1000": (4096, 1000), "65536x10": (65536, 10), "8192x32000": (8192, 32000)}
SMOKE = {"8192x32000": (64, 32000)}  # 1 GB of logits per array: keep --benchmark-disable light


def _data(shape):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    y = rng.integers(0, shape[1], shape[0])
    return x, y


def _naive(X, y):
    """d2l 3.6: softmax by exp / sum, then -log of the picked probability."""
    X_exp = torch.exp(X)
    y_hat = X_exp / X_exp.sum(1, keepdim=True)
    return -torch.log(y_hat[range(len(y_hat)), y]).mean()


def _torch_step(fn, xt, yt):
    def step():
        xt.grad = None
        loss = fn(xt, yt)
        loss.backward()
        return loss

    return step


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("impl", ["fastreg", "torch", "d2l-naive", "numpy-copy"])
def test_cross_entropy_fwd_bwd(benchmark, case, impl):
    shape = SMOKE.get(case, CASES[case]) if benchmark.disabled else CASES[case]
    if impl == "numpy-copy" and case != "4096x1000":
        pytest.skip("the copy floor is measured on 4096x1000")
    if impl == "d2l-naive" and case == "8192x32000":
        pytest.skip("the naive version needs several GB at this size")
    benchmark.group = f"cross_entropy fwd+bwd {case}"
    x, y = _data(shape)
    if impl == "numpy-copy":
        dst = np.empty_like(x)
        benchmark(np.copyto, dst, x)
        np.testing.assert_array_equal(dst, x)
        return
    if impl == "fastreg":
        grad = np.empty_like(x)
        xt = torch.from_numpy(x.copy()).requires_grad_()
        ref = F.cross_entropy(xt, torch.from_numpy(y))
        ref.backward()
        loss, _ = ops.cross_entropy_with_grad(x, y, out=grad)
        assert abs(float(loss) - ref.item()) <= 1e-5 * abs(ref.item())
        np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-4, atol=1e-5 / shape[0])
        del xt, ref
        benchmark(ops.cross_entropy_with_grad, x, y, out=grad)
    else:
        fn = F.cross_entropy if impl == "torch" else _naive
        xt = torch.from_numpy(x).requires_grad_()
        yt = torch.from_numpy(y)
        step = _torch_step(fn, xt, yt)
        loss = step()
        assert abs(loss.item() - float(ops.cross_entropy(x, y))) <= 1e-4 * abs(loss.item())
        benchmark(step)
