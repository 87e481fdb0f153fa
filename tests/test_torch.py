"""fastreg.torch: drop-in CrossEntropyLoss / cross_entropy / SGD against torch's own."""

import copy
import itertools

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
