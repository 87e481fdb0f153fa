"""d2l's chapter-3 training code, run unchanged on torch's pieces and on fastreg's.

The d2l source below is copied verbatim (d2l cannot be installed here: it pins old
versions of torch and numpy). Each block is exec'd twice: once with its names bound to
torch's pieces (torch.utils.data.DataLoader, torch.nn.functional.cross_entropy,
torch.optim.SGD, d2l.sgd) and once to fastreg's (fastreg.DataLoader,
fastreg.torch.cross_entropy, fastreg.torch.SGD, fastreg.optim.sgd), on small synthetic
data, from the same torch.manual_seed (and, where said, the same torch.Generator seed).
Both runs must end with the same parameters and metrics, and leave torch's global RNG
in the same state.

d2l (https://github.com/d2l-ai/d2l-en), Copyright 2019 Amazon.com, Inc. or its
affiliates. Its sample code, which is what is copied here, is under a modified MIT
licence without the attribution clause (the wheels' METADATA says "License: MIT-0";
LICENSE-SAMPLECODE):

    Permission is hereby granted, free of charge, to any person obtaining a copy of this
    software and associated documentation files (the "Software"), to deal in the Software
    without restriction, including without limitation the rights to use, copy, modify,
    merge, publish, distribute, sublicense, and/or sell copies of the Software, and to
    permit persons to whom the Software is furnished to do so.

    THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
    INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A
    PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT
    HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION
    OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE
    SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""

import inspect
import types

import numpy as np
import pytest

import fastreg

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import fastreg.torch as frt  # noqa: E402

# d2l 0.17.6's train_epoch_ch3 calls float(l.sum()) on a loss that requires grad, which
# torch 2.13 warns about (once per process) whichever loss computed it.
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True to a scalar")

# --- d2l 0.17.6, d2l/torch.py (the wheel d2l-0.17.6-py3-none-any.whl), verbatim ---
D2L_0_17_6 = '''
def sgd(params, lr, batch_size):
    """Minibatch stochastic gradient descent.

    Defined in :numref:`sec_linear_scratch`"""
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()

def load_array(data_arrays, batch_size, is_train=True):
    """Construct a PyTorch data iterator.

    Defined in :numref:`sec_linear_concise`"""
    dataset = data.TensorDataset(*data_arrays)
    return data.DataLoader(dataset, batch_size, shuffle=is_train)

def get_dataloader_workers():
    """Use 4 processes to read the data.

    Defined in :numref:`sec_fashion_mnist`"""
    return 4

def accuracy(y_hat, y):
    """Compute the number of correct predictions.

    Defined in :numref:`sec_softmax_scratch`"""
    if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
        y_hat = d2l.argmax(y_hat, axis=1)
    cmp = d2l.astype(y_hat, y.dtype) == y
    return float(d2l.reduce_sum(d2l.astype(cmp, y.dtype)))

def evaluate_accuracy(net, data_iter):
    """Compute the accuracy for a model on a dataset.

    Defined in :numref:`sec_softmax_scratch`"""
    if isinstance(net, torch.nn.Module):
        net.eval()  # Set the model to evaluation mode
    metric = Accumulator(2)  # No. of correct predictions, no. of predictions

    with torch.no_grad():
        for X, y in data_iter:
            metric.add(accuracy(net(X), y), d2l.size(y))
    return metric[0] / metric[1]

class Accumulator:
    """For accumulating sums over `n` variables."""
    def __init__(self, n):
        """Defined in :numref:`sec_softmax_scratch`"""
        self.data = [0.0] * n

    def add(self, *args):
        self.data = [a + float(b) for a, b in zip(self.data, args)]

    def reset(self):
        self.data = [0.0] * len(self.data)

    def __getitem__(self, idx):
        return self.data[idx]

def train_epoch_ch3(net, train_iter, loss, updater):
    """The training loop defined in Chapter 3.

    Defined in :numref:`sec_softmax_scratch`"""
    # Set the model to training mode
    if isinstance(net, torch.nn.Module):
        net.train()
    # Sum of training loss, sum of training accuracy, no. of examples
    metric = Accumulator(3)
    for X, y in train_iter:
        # Compute gradients and update parameters
        y_hat = net(X)
        l = loss(y_hat, y)
        if isinstance(updater, torch.optim.Optimizer):
            # Using PyTorch in-built optimizer & loss criterion
            updater.zero_grad()
            l.mean().backward()
            updater.step()
        else:
            # Using custom built optimizer & loss criterion
            l.sum().backward()
            updater(X.shape[0])
        metric.add(float(l.sum()), accuracy(y_hat, y), y.numel())
    # Return training loss and training accuracy
    return metric[0] / metric[2], metric[1] / metric[2]

def train_ch3(net, train_iter, test_iter, loss, num_epochs, updater):
    """Train a model (defined in Chapter 3).

    Defined in :numref:`sec_softmax_scratch`"""
    animator = Animator(xlabel='epoch', xlim=[1, num_epochs], ylim=[0.3, 0.9],
                        legend=['train loss', 'train acc', 'test acc'])
    for epoch in range(num_epochs):
        train_metrics = train_epoch_ch3(net, train_iter, loss, updater)
        test_acc = evaluate_accuracy(net, test_iter)
        animator.add(epoch + 1, train_metrics + (test_acc,))
    train_loss, train_acc = train_metrics
    assert train_loss < 0.5, train_loss
    assert train_acc <= 1 and train_acc > 0.7, train_acc
    assert test_acc <= 1 and test_acc > 0.7, test_acc

size = lambda x, *args, **kwargs: x.numel(*args, **kwargs)
reshape = lambda x, *args, **kwargs: x.reshape(*args, **kwargs)
reduce_sum = lambda x, *args, **kwargs: x.sum(*args, **kwargs)
argmax = lambda x, *args, **kwargs: x.argmax(*args, **kwargs)
astype = lambda x, *args, **kwargs: x.type(*args, **kwargs)
'''

# --- d2l 1.0.3, d2l/torch.py (the wheel d2l-1.0.3-py3-none-any.whl), verbatim: the
# HyperParameters, Module, DataModule, Trainer (its CPU definitions), SyntheticRegressionData,
# LinearRegression, Classifier and SoftmaxRegression classes, cpu(), and the aliases they use
# (nn_Module from the top of the file, the others from its end) ---
D2L_1_0_3 = '''
nn_Module = nn.Module

class HyperParameters:
    """The base class of hyperparameters."""
    def save_hyperparameters(self, ignore=[]):
        """Defined in :numref:`sec_oo-design`"""
        raise NotImplemented

    def save_hyperparameters(self, ignore=[]):
        """Save function arguments into class attributes.

        Defined in :numref:`sec_utils`"""
        frame = inspect.currentframe().f_back
        _, _, _, local_vars = inspect.getargvalues(frame)
        self.hparams = {k:v for k, v in local_vars.items()
                        if k not in set(ignore+['self']) and not k.startswith('_')}
        for k, v in self.hparams.items():
            setattr(self, k, v)


class Module(d2l.nn_Module, d2l.HyperParameters):
    """The base class of models.

    Defined in :numref:`sec_oo-design`"""
    def __init__(self, plot_train_per_epoch=2, plot_valid_per_epoch=1):
        super().__init__()
        self.save_hyperparameters()
        self.board = ProgressBoard()

    def loss(self, y_hat, y):
        raise NotImplementedError

    def forward(self, X):
        assert hasattr(self, 'net'), 'Neural network is defined'
        return self.net(X)

    def plot(self, key, value, train):
        """Plot a point in animation."""
        assert hasattr(self, 'trainer'), 'Trainer is not inited'
        self.board.xlabel = 'epoch'
        if train:
            x = self.trainer.train_batch_idx / \\
                self.trainer.num_train_batches
            n = self.trainer.num_train_batches / \\
                self.plot_train_per_epoch
        else:
            x = self.trainer.epoch + 1
            n = self.trainer.num_val_batches / \\
                self.plot_valid_per_epoch
        self.board.draw(x, d2l.numpy(d2l.to(value, d2l.cpu())),
                        ('train_' if train else 'val_') + key,
                        every_n=int(n))

    def training_step(self, batch):
        l = self.loss(self(*batch[:-1]), batch[-1])
        self.plot('loss', l, train=True)
        return l

    def validation_step(self, batch):
        l = self.loss(self(*batch[:-1]), batch[-1])
        self.plot('loss', l, train=False)

    def configure_optimizers(self):
        raise NotImplementedError

    def configure_optimizers(self):
        """Defined in :numref:`sec_classification`"""
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def apply_init(self, inputs, init=None):
        """Defined in :numref:`sec_lazy_init`"""
        self.forward(*inputs)
        if init is not None:
            self.net.apply(init)


class DataModule(d2l.HyperParameters):
    """The base class of data.

    Defined in :numref:`subsec_oo-design-models`"""
    def __init__(self, root='../data', num_workers=4):
        self.save_hyperparameters()

    def get_dataloader(self, train):
        raise NotImplementedError

    def train_dataloader(self):
        return self.get_dataloader(train=True)

    def val_dataloader(self):
        return self.get_dataloader(train=False)

    def get_tensorloader(self, tensors, train, indices=slice(0, None)):
        """Defined in :numref:`sec_synthetic-regression-data`"""
        tensors = tuple(a[indices] for a in tensors)
        dataset = torch.utils.data.TensorDataset(*tensors)
        return torch.utils.data.DataLoader(dataset, self.batch_size,
                                           shuffle=train)


class Trainer(d2l.HyperParameters):
    """The base class for training models with data.

    Defined in :numref:`subsec_oo-design-models`"""
    def __init__(self, max_epochs, num_gpus=0, gradient_clip_val=0):
        self.save_hyperparameters()
        assert num_gpus == 0, 'No GPU support yet'

    def prepare_data(self, data):
        self.train_dataloader = data.train_dataloader()
        self.val_dataloader = data.val_dataloader()
        self.num_train_batches = len(self.train_dataloader)
        self.num_val_batches = (len(self.val_dataloader)
                                if self.val_dataloader is not None else 0)

    def prepare_model(self, model):
        model.trainer = self
        model.board.xlim = [0, self.max_epochs]
        self.model = model

    def fit(self, model, data):
        self.prepare_data(data)
        self.prepare_model(model)
        self.optim = model.configure_optimizers()
        self.epoch = 0
        self.train_batch_idx = 0
        self.val_batch_idx = 0
        for self.epoch in range(self.max_epochs):
            self.fit_epoch()

    def fit_epoch(self):
        raise NotImplementedError

    def prepare_batch(self, batch):
        """Defined in :numref:`sec_linear_scratch`"""
        return batch

    def fit_epoch(self):
        """Defined in :numref:`sec_linear_scratch`"""
        self.model.train()
        for batch in self.train_dataloader:
            loss = self.model.training_step(self.prepare_batch(batch))
            self.optim.zero_grad()
            with torch.no_grad():
                loss.backward()
                if self.gradient_clip_val > 0:  # To be discussed later
                    self.clip_gradients(self.gradient_clip_val, self.model)
                self.optim.step()
            self.train_batch_idx += 1
        if self.val_dataloader is None:
            return
        self.model.eval()
        for batch in self.val_dataloader:
            with torch.no_grad():
                self.model.validation_step(self.prepare_batch(batch))
            self.val_batch_idx += 1


class SyntheticRegressionData(d2l.DataModule):
    """Synthetic data for linear regression.

    Defined in :numref:`sec_synthetic-regression-data`"""
    def __init__(self, w, b, noise=0.01, num_train=1000, num_val=1000,
                 batch_size=32):
        super().__init__()
        self.save_hyperparameters()
        n = num_train + num_val
        self.X = d2l.randn(n, len(w))
        noise = d2l.randn(n, 1) * noise
        self.y = d2l.matmul(self.X, d2l.reshape(w, (-1, 1))) + b + noise

    def get_dataloader(self, train):
        """Defined in :numref:`sec_synthetic-regression-data`"""
        i = slice(0, self.num_train) if train else slice(self.num_train, None)
        return self.get_tensorloader((self.X, self.y), train, i)

class LinearRegression(d2l.Module):
    """The linear regression model implemented with high-level APIs.

    Defined in :numref:`sec_linear_concise`"""
    def __init__(self, lr):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.LazyLinear(1)
        self.net.weight.data.normal_(0, 0.01)
        self.net.bias.data.fill_(0)

    def forward(self, X):
        """Defined in :numref:`sec_linear_concise`"""
        return self.net(X)

    def loss(self, y_hat, y):
        """Defined in :numref:`sec_linear_concise`"""
        fn = nn.MSELoss()
        return fn(y_hat, y)

    def configure_optimizers(self):
        """Defined in :numref:`sec_linear_concise`"""
        return torch.optim.SGD(self.parameters(), self.lr)

class Classifier(d2l.Module):
    """The base class of classification models.

    Defined in :numref:`sec_classification`"""
    def validation_step(self, batch):
        Y_hat = self(*batch[:-1])
        self.plot('loss', self.loss(Y_hat, batch[-1]), train=False)
        self.plot('acc', self.accuracy(Y_hat, batch[-1]), train=False)

    def accuracy(self, Y_hat, Y, averaged=True):
        """Compute the number of correct predictions.

        Defined in :numref:`sec_classification`"""
        Y_hat = d2l.reshape(Y_hat, (-1, Y_hat.shape[-1]))
        preds = d2l.astype(d2l.argmax(Y_hat, axis=1), Y.dtype)
        compare = d2l.astype(preds == d2l.reshape(Y, -1), d2l.float32)
        return d2l.reduce_mean(compare) if averaged else compare

    def loss(self, Y_hat, Y, averaged=True):
        """Defined in :numref:`sec_softmax_concise`"""
        Y_hat = d2l.reshape(Y_hat, (-1, Y_hat.shape[-1]))
        Y = d2l.reshape(Y, (-1,))
        return F.cross_entropy(
            Y_hat, Y, reduction='mean' if averaged else 'none')


class SoftmaxRegression(d2l.Classifier):
    """The softmax regression model.

    Defined in :numref:`sec_softmax_concise`"""
    def __init__(self, num_outputs, lr):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Flatten(),
                                 nn.LazyLinear(num_outputs))

    def forward(self, X):
        return self.net(X)

def cpu():
    """Get the CPU device.

    Defined in :numref:`sec_use_gpu`"""
    return torch.device('cpu')

randn = torch.randn
matmul = torch.matmul
float32 = torch.float32
numpy = lambda x, *args, **kwargs: x.detach().numpy(*args, **kwargs)
reshape = lambda x, *args, **kwargs: x.reshape(*args, **kwargs)
to = lambda x, *args, **kwargs: x.to(*args, **kwargs)
argmax = lambda x, *args, **kwargs: x.argmax(*args, **kwargs)
astype = lambda x, *args, **kwargs: x.type(*args, **kwargs)
reduce_mean = lambda x, *args, **kwargs: x.mean(*args, **kwargs)
'''
# --- end of the d2l copies ---


class _Override:
    """A module with some attributes replaced (fastreg's pieces), the rest the real ones."""

    def __init__(self, real, **replace):
        self._real, self._replace = real, replace

    def __getattr__(self, name):
        if name in self._replace:
            return self._replace[name]
        return getattr(self._real, name)


class _Recorder:
    """Stands in for d2l's matplotlib Animator / ProgressBoard: records what would be drawn."""

    def __init__(self, *args, **kwargs):
        self.points = []

    def add(self, x, y):
        self.points.append((x, tuple(float(v) for v in y)))

    def draw(self, x, y, label, every_n=1):
        self.points.append((label, float(x), float(y)))


def _torch_loader_in_process(*args, num_workers=0, **kwargs):
    """torch's DataLoader without worker processes: its batches and its draws from the RNGs
    are the same with workers (the sampler and the base seed run in the main process);
    d2l's 4 workers would only be slow here and warn on a 2-core machine."""
    return torch.utils.data.DataLoader(*args, **kwargs)


def _d2l(source: str, use_fastreg: bool) -> types.ModuleType:
    """d2l's code exec'd as a module named d2l (as in d2l, where ``d2l`` is the module
    itself), its names bound to torch's or fastreg's pieces."""
    if use_fastreg:
        data = _Override(torch.utils.data, DataLoader=fastreg.DataLoader)
        torch_ = _Override(torch, utils=_Override(torch.utils, data=data), optim=_Override(torch.optim, SGD=frt.SGD))
        functional = _Override(F, cross_entropy=frt.cross_entropy)
    else:
        data = _Override(torch.utils.data, DataLoader=_torch_loader_in_process)
        torch_ = _Override(torch, utils=_Override(torch.utils, data=data))
        functional = F
    d2l = types.ModuleType("d2l")
    d2l.__dict__.update(
        torch=torch_,
        nn=nn,
        F=functional,
        data=data,
        d2l=d2l,
        inspect=inspect,
        np=np,
        Animator=_Recorder,
        ProgressBoard=_Recorder,
    )
    exec(compile(source, f"<d2l {'fastreg' if use_fastreg else 'torch'}>", "exec"), d2l.__dict__)
    return d2l


def _classification_data(seed, n_train=320, n_test=96, classes=10, shape=(1, 4, 5)):
    """Well separated clusters (d2l's train_ch3 asserts accuracy > 0.7 and loss < 0.5)."""
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    centers = rng.standard_normal((classes, d)) * 2.0
    y = rng.integers(0, classes, n_train + n_test)
    X = (centers[y] + 0.5 * rng.standard_normal((len(y), d))).astype(np.float32).reshape(-1, *shape)
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    return (X[:n_train], y[:n_train]), (X[n_train:], y[n_train:])


def _close(a, b, what):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"{what}: {m}")


def _compare_runs(run, **kw):
    """run(use_fastreg, **kw) -> (params, metrics) after torch.manual_seed; both runs must
    agree and leave torch's global RNG in the same state."""
    results = []
    for use_fastreg in (False, True):
        torch.manual_seed(0)
        params, metrics = run(use_fastreg, **kw)
        results.append((params, metrics, torch.rand(4)))
    (p_ref, m_ref, tail_ref), (p, m, tail) = results
    assert len(p) == len(p_ref) and len(m) == len(m_ref)
    for i, (a, b) in enumerate(zip(p, p_ref)):
        _close(a.detach(), b.detach(), f"parameter {i}")
    _close(torch.tensor(m, dtype=torch.float64), torch.tensor(m_ref, dtype=torch.float64), "metrics")
    assert torch.equal(tail, tail_ref), "torch's global RNG was drawn differently"


# ------------------------------------------------------------------ d2l 0.17.6


def _load_data(d2l, train, test, batch_size, generator):
    """load_data_fashion_mnist's two DataLoader calls (num_workers=get_dataloader_workers()),
    over in-memory tensors instead of the torchvision dataset."""
    data = d2l.data
    kw = {} if generator is None else {"generator": generator}
    return (
        data.DataLoader(
            data.TensorDataset(*train), batch_size, shuffle=True, num_workers=d2l.get_dataloader_workers(), **kw
        ),
        data.DataLoader(
            data.TensorDataset(*test), batch_size, shuffle=False, num_workers=d2l.get_dataloader_workers(), **kw
        ),
    )


def _softmax_concise(use_fastreg, use_generator):
    """Section 3.7 (concise softmax regression), trained with d2l 0.17.6's train_ch3."""
    d2l = _d2l(D2L_0_17_6, use_fastreg)
    train, test = _classification_data(1)
    g = torch.Generator().manual_seed(3) if use_generator else None
    train_iter, test_iter = _load_data(d2l, train, test, 32, g)
    net = nn.Sequential(nn.Flatten(), nn.Linear(20, 10))

    def init_weights(m):
        if type(m) == nn.Linear:  # noqa: E721 (the book's code)
            nn.init.normal_(m.weight, std=0.01)

    net.apply(init_weights)
    loss = (frt.CrossEntropyLoss if use_fastreg else nn.CrossEntropyLoss)(reduction="none")
    trainer = (frt.SGD if use_fastreg else torch.optim.SGD)(net.parameters(), lr=0.1)
    metrics = [d2l.train_epoch_ch3(net, train_iter, loss, trainer) for _ in range(3)]
    metrics.append(d2l.evaluate_accuracy(net, test_iter))
    d2l.train_ch3(net, train_iter, test_iter, loss, 5, trainer)  # its own accuracy asserts
    return list(net.parameters()), [x for m in metrics for x in (m if isinstance(m, tuple) else (m,))]


def _softmax_scratch(use_fastreg, use_generator):
    """Section 3.6 (softmax regression from scratch) with d2l 0.17.6's train_epoch_ch3; on
    fastreg, the chapter's softmax + cross_entropy become fastreg.torch.cross_entropy and
    d2l.sgd fastreg.optim.sgd (d2l's signature)."""
    d2l = _d2l(D2L_0_17_6, use_fastreg)
    train, test = _classification_data(2)
    g = torch.Generator().manual_seed(4) if use_generator else None
    train_iter, test_iter = _load_data(d2l, train, test, 32, g)
    num_inputs, num_outputs, lr = 20, 10, 0.1
    # the chapter's code:
    W = torch.normal(0, 0.01, size=(num_inputs, num_outputs), requires_grad=True)
    b = torch.zeros(num_outputs, requires_grad=True)

    def softmax(X):
        X_exp = torch.exp(X)
        partition = X_exp.sum(1, keepdim=True)
        return X_exp / partition  # The broadcasting mechanism is applied here

    def logits(X):
        return torch.matmul(X.reshape((-1, W.shape[0])), W) + b

    if use_fastreg:
        net = logits  # argmax (accuracy) is the same on logits as on their softmax

        def loss(y_hat, y):
            return frt.cross_entropy(y_hat, y, reduction="none")

        def updater(batch_size):
            return fastreg.optim.sgd([W, b], lr, batch_size)
    else:

        def net(X):
            return softmax(logits(X))

        def loss(y_hat, y):  # the chapter's cross_entropy
            return -torch.log(y_hat[range(len(y_hat)), y])

        def updater(batch_size):
            return d2l.sgd([W, b], lr, batch_size)

    metrics = [d2l.train_epoch_ch3(net, train_iter, loss, updater) for _ in range(4)]
    metrics.append(d2l.evaluate_accuracy(net, test_iter))
    return [W, b], [x for m in metrics for x in (m if isinstance(m, tuple) else (m,))]


@pytest.mark.parametrize("use_generator", [False, True])
def test_d2l_0_17_6_softmax_concise(use_generator):
    _compare_runs(_softmax_concise, use_generator=use_generator)


@pytest.mark.parametrize("use_generator", [False, True])
def test_d2l_0_17_6_softmax_scratch(use_generator):
    _compare_runs(_softmax_scratch, use_generator=use_generator)


def test_d2l_0_17_6_load_array_is_fastreg_load_array():
    """d2l's load_array run on fastreg's DataLoader, fastreg.load_array and torch's give the
    same batches and draw the same from torch's global RNG."""
    X, y = torch.randn(50, 3), torch.arange(50)
    runs = []
    for make in (_d2l(D2L_0_17_6, False).load_array, _d2l(D2L_0_17_6, True).load_array, fastreg.data.load_array):
        torch.manual_seed(7)
        batches = [[b.clone() for b in batch] for _ in range(2) for batch in make((X, y), 8)]
        runs.append((batches, torch.rand(2)))
    for batches, tail in runs[1:]:
        assert torch.equal(tail, runs[0][1])
        assert len(batches) == len(runs[0][0])
        for a, b in zip(batches, runs[0][0]):
            assert type(a) is type(b) and all(torch.equal(u, v) for u, v in zip(a, b))


# ------------------------------------------------------------------- d2l 1.0.3


class _Clusters:
    """A DataModule over _classification_data: its get_dataloader is FashionMNIST's
    (d2l 1.0.3), over in-memory tensors, with an optional generator."""

    @staticmethod
    def make(d2l, generator):
        class Clusters(d2l.DataModule):
            def __init__(self, batch_size=32):
                super().__init__()
                self.save_hyperparameters()
                self.train, self.val = _classification_data(5)

            def get_dataloader(self, train):
                data = self.train if train else self.val
                kw = {} if generator is None else {"generator": generator}
                return d2l.torch.utils.data.DataLoader(
                    d2l.torch.utils.data.TensorDataset(*data),
                    self.batch_size,
                    shuffle=train,
                    num_workers=self.num_workers,
                    **kw,
                )

        return Clusters()


def _trainer_softmax(use_fastreg, use_generator):
    """d2l 1.0.3's Trainer fitting its SoftmaxRegression (LazyLinear: initialised at the
    first batch, after the loader's draws from the global RNG)."""
    d2l = _d2l(D2L_1_0_3, use_fastreg)
    g = torch.Generator().manual_seed(6) if use_generator else None
    data = _Clusters.make(d2l, g)
    model = d2l.SoftmaxRegression(num_outputs=10, lr=0.1)
    trainer = d2l.Trainer(max_epochs=3)
    trainer.fit(model, data)
    points = [p[-1] for p in model.board.points]
    return list(model.parameters()), points


def _trainer_linear(use_fastreg):
    """d2l 1.0.3's Trainer fitting LinearRegression on SyntheticRegressionData (its
    get_tensorloader: a plain DataLoader(TensorDataset, batch_size, shuffle=train))."""
    d2l = _d2l(D2L_1_0_3, use_fastreg)
    data = d2l.SyntheticRegressionData(w=torch.tensor([2, -3.4]), b=4.2, num_train=200, num_val=50)
    model = d2l.LinearRegression(lr=0.03)
    trainer = d2l.Trainer(max_epochs=3)
    trainer.fit(model, data)
    return list(model.parameters()), [p[-1] for p in model.board.points]


@pytest.mark.parametrize("use_generator", [False, True])
def test_d2l_1_0_3_trainer_softmax_regression(use_generator):
    _compare_runs(_trainer_softmax, use_generator=use_generator)


def test_d2l_1_0_3_trainer_linear_regression():
    _compare_runs(_trainer_linear)
