"""How fastreg routes CUDA arrays, checked on the CPU: which objects count as CUDA
arrays, how a __cuda_array_interface__ is read, and that without a usable CUDA module
or GPU every CUDA path says why it cannot run (never a crash, never a silent CPU run)."""

import numpy as np
import pytest

import fastreg
from fastreg import _cuda_ops, cuda

no_gpu = pytest.mark.skipif(cuda.is_available(), reason="a GPU is available: these check the no-GPU answers")


class FakeCudaArray:
    """Only the interface: a pointer nothing may dereference (the kernels never run here)."""

    def __init__(self, shape, typestr="<f4", strides=None, ptr=0x1000, readonly=False):
        self.__cuda_array_interface__ = {
            "shape": shape,
            "typestr": typestr,
            "data": (ptr, readonly),
            "strides": strides,
            "version": 3,
        }


class FakeDLPack:
    def __init__(self, device_type):
        self.device_type = device_type

    def __dlpack__(self, stream=None):
        raise AssertionError("not to be exported here")

    def __dlpack_device__(self):
        return (self.device_type, 0)


def test_which_objects_are_cuda_arrays():
    torch = pytest.importorskip("torch")
    assert not _cuda_ops.is_cuda_array(np.zeros(3))
    assert not _cuda_ops.is_cuda_array(torch.zeros(3))
    assert not _cuda_ops.is_cuda_array([1.0, 2.0])
    assert _cuda_ops.is_cuda_array(FakeCudaArray((2, 3)))
    assert _cuda_ops.is_cuda_array(FakeDLPack(2))  # kDLCUDA
    assert not _cuda_ops.is_cuda_array(FakeDLPack(1))  # kDLCPU


def test_cuda_array_interface_is_read_with_layout_and_dtype():
    d = _cuda_ops._Dev(FakeCudaArray((4, 5)), "x")
    assert (d.shape, d.dtype, d.contiguous, d.ptr, d.readonly) == ((4, 5), "float32", True, 0x1000, False)
    assert d.code("x") == 0
    assert _cuda_ops._Dev(FakeCudaArray((4, 5), strides=(20, 4)), "x").contiguous  # explicit C strides
    assert not _cuda_ops._Dev(FakeCudaArray((4, 5), strides=(4, 16)), "x").contiguous  # Fortran order
    assert _cuda_ops._Dev(FakeCudaArray((4, 5), "<f2"), "x").code("x") == 1
    assert _cuda_ops._Dev(FakeCudaArray((3,), "<i8", readonly=True), "t").readonly
    with pytest.raises(TypeError, match="float32, float16 or bfloat16.*float64"):
        _cuda_ops._Dev(FakeCudaArray((4, 5), "<f8"), "logits").code("logits")
    with pytest.raises(TypeError, match="must be a CUDA array"):
        _cuda_ops._Dev(object(), "logits")


@no_gpu
def test_array_paths_without_gpu_say_why():
    x, t = FakeCudaArray((4, 5)), FakeCudaArray((4,), "<i8")
    for call in (
        lambda: fastreg.ops.cross_entropy_with_grad(x, t),
        lambda: fastreg.ops.cross_entropy(x, t),
        lambda: fastreg.optim.sgd_step([x], [FakeCudaArray((4, 5))], lr=0.1),
        lambda: cuda.check_errors(),
    ):
        with pytest.raises(RuntimeError, match="fastreg CUDA kernels are unavailable: .+"):
            call()


@no_gpu
def test_host_paths_unchanged_by_the_hooks(rng):
    # NumPy inputs never reach the CUDA module (results as before the hooks).
    x = rng.standard_normal((6, 4)).astype(np.float32)
    t = rng.integers(0, 4, 6)
    loss, g = fastreg.ops.cross_entropy_with_grad(x, t)
    assert isinstance(g, np.ndarray) and np.isfinite(loss)
    p = [rng.standard_normal(5).astype(np.float32)]
    before = p[0].copy()
    fastreg.optim.sgd_step(p, [np.ones(5, np.float32)], lr=0.5)
    np.testing.assert_allclose(p[0], before - 0.5)


def test_cuda_cross_entropy_rejects_cpu_tensors_and_bad_options():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="takes CUDA tensors, got cpu"):
        cuda.cross_entropy(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction"):
        _cuda_ops._check_options("avg", 0.0, 0.0, -100)
    with pytest.raises(ValueError, match="lse_square_scale"):
        _cuda_ops._check_options("mean", 0.0, -1.0, -100)
    with pytest.raises(TypeError, match="ignore_index"):
        _cuda_ops._check_options("mean", 0.0, 0.0, 1.5)
