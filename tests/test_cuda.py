import pytest

import fastreg
from fastreg import cuda

needs_gpu = pytest.mark.skipif(not cuda.is_available(), reason=f"no GPU: {cuda.unavailable_reason()}")


def test_availability_is_consistent():
    assert isinstance(cuda.is_available(), bool)
    if cuda.is_available():
        assert cuda.device_count() > 0 and cuda.unavailable_reason() is None
    else:
        assert isinstance(cuda.unavailable_reason(), str) and cuda.unavailable_reason()


@pytest.mark.skipif(cuda.is_available(), reason="a GPU is available")
def test_cuda_call_without_gpu_raises_clear_runtime_error():
    torch = pytest.importorskip("torch")
    x = torch.zeros(4)
    with pytest.raises(RuntimeError, match="fastreg CUDA kernels are unavailable"):
        cuda.device_copy(x, x)


@pytest.mark.gpu
@needs_gpu
def test_device_copy_matches_source():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    for n, dtype in [(0, torch.float32), (1, torch.uint8), (1_000_003, torch.float32), (4097, torch.float64)]:
        src = (
            torch.randn(n, device="cuda").to(dtype)
            if dtype != torch.uint8
            else torch.randint(0, 255, (n,), device="cuda", dtype=dtype)
        )
        dst = torch.full_like(src, 7)
        cuda.device_copy(dst, src)
        torch.cuda.synchronize()
        assert torch.equal(dst, src)
    # a misaligned view takes the byte path
    base = torch.arange(1001, device="cuda", dtype=torch.uint8)
    dst = torch.zeros(1000, device="cuda", dtype=torch.uint8)
    cuda.device_copy(dst, base[1:])
    assert torch.equal(dst, base[1:])
    with pytest.raises(ValueError, match="must match"):
        cuda.device_copy(dst, base)
    assert fastreg.cuda.is_built()
