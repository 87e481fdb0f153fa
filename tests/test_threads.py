"""Threads: kernels release the GIL, concurrent calls on disjoint buffers equal
sequential ones, a process forked after kernels ran can use them, and DataLoader
iterators survive many threads, abandonment, KeyboardInterrupt and fork. Every
test is bounded in time (thread joins and subprocesses have timeouts)."""

import gc
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import fastreg
from _proc import os_threads, wait_for_threads
from fastreg import _core

# Generous bounds: they only turn a deadlock into a failure (ASan runs ~3x slower).
JOIN_TIMEOUT = 60.0
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")


def _run_threads(targets) -> None:
    """Start one thread per callable, join each within JOIN_TIMEOUT, re-raise the first error."""
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported to the test below
                errors.append(e)

        return run

    threads = [threading.Thread(target=wrap(fn), daemon=True) for fn in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + JOIN_TIMEOUT
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "threads still running: deadlock?"
    if errors:
        raise errors[0]


def _run_child(code: str, timeout: float = JOIN_TIMEOUT, cwd=None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], timeout=timeout, capture_output=True, text=True, cwd=cwd
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Exception ignored" not in proc.stderr, proc.stderr  # e.g. a lost KeyboardInterrupt
    return proc


def _runs_without_gil(long_call) -> bool:
    """True if a Python thread makes progress while `long_call` runs in another."""
    stamps, window, done = [], [], threading.Event()

    def ticker():
        while not done.is_set():
            stamps.append(time.perf_counter())

    def worker():
        window.append(time.perf_counter())
        long_call()
        window.append(time.perf_counter())

    t1 = threading.Thread(target=ticker)
    t1.start()
    time.sleep(0.01)
    t2 = threading.Thread(target=worker)
    t2.start()
    t2.join()
    done.set()
    t1.join()
    start, end = window
    # Look only at the middle of the call: a thread holding the GIL still lets the
    # ticker run just before it starts and just after it returns.
    lo, hi = start + 0.25 * (end - start), start + 0.75 * (end - start)
    return sum(lo < s < hi for s in stamps) > 100


def test_sgd_kernel_releases_the_gil():
    n = 20_000_000
    p, g = np.zeros(n, np.float32), np.ones(n, np.float32)

    def call():
        for _ in range(5):
            _core.sgd_update(p, g, None, lr=1e-3)

    assert _runs_without_gil(call)


def test_concurrent_calls_on_disjoint_buffers_match_sequential():
    rng = np.random.default_rng(0)
    inputs = [
        (rng.standard_normal(300_000), rng.standard_normal(300_000), rng.standard_normal(300_000)) for _ in range(4)
    ]
    expected = []
    for p, g, b in inputs:
        p, b = p.copy(), b.copy()
        for _ in range(20):
            _core.sgd_update(p, g, b, lr=1e-2, momentum=0.9, weight_decay=1e-3)
        expected.append((p, b))
    work = [(p.copy(), g, b.copy()) for p, g, b in inputs]

    def run(i):
        p, g, b = work[i]
        for _ in range(20):
            _core.sgd_update(p, g, b, lr=1e-2, momentum=0.9, weight_decay=1e-3)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (p, _, b), (ep, eb) in zip(work, expected):
        np.testing.assert_array_equal(p, ep)
        np.testing.assert_array_equal(b, eb)


def test_kernels_work_in_a_forked_child():
    code = textwrap.dedent(
        """
        import os, numpy as np, fastreg
        from fastreg import _core
        fastreg.set_num_threads(2)
        p, g = np.zeros(2_000_000), np.ones(2_000_000)
        _core.sgd_update(p, g, None, lr=1.0)          # uses worker threads
        pid = os.fork()
        if pid == 0:
            _core.sgd_update(p, g, None, lr=1.0)      # threads again, in the child
            os._exit(0 if p[0] == -2.0 and p[-1] == -2.0 else 3)
        _, status = os.waitpid(pid, 0)
        raise SystemExit(os.waitstatus_to_exitcode(status))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@needs_proc
def test_kernels_reuse_one_small_pool():
    # Helpers come from one process-wide pool (a fresh process, so the count is known):
    # no Python threads, no thread per call, num_threads - 1 workers, grown when more
    # threads are asked for and partly used when fewer are, nothing else left behind.
    _run_child(
        """
        import threading, numpy as np, fastreg
        from fastreg import _core
        from _proc import os_threads, pool_threads, wait_for_threads
        fastreg.set_num_threads(2)
        p, g = np.zeros(2_000_000), np.ones(2_000_000)
        _core.sgd_update(p, g, None, lr=1.0)
        others = os_threads()
        assert threading.active_count() == 1
        assert pool_threads() == _core.pool_workers() == 1, (pool_threads(), _core.pool_workers())
        for _ in range(20):
            _core.sgd_update(p, g, None, lr=1.0)
        assert pool_threads() == 1 and wait_for_threads(others) <= others
        np.testing.assert_array_equal(p, np.full(2_000_000, -21.0))
        fastreg.set_num_threads(4)
        _core.sgd_update(p, g, None, lr=1.0)
        assert pool_threads() == _core.pool_workers() == 3
        for n in (1, 3, 2):
            fastreg.set_num_threads(n)
            _core.sgd_update(p, g, None, lr=1.0)
        assert pool_threads() == 3 and wait_for_threads(others) <= others
        np.testing.assert_array_equal(p, np.full(2_000_000, -25.0))
        """,
        cwd=os.path.dirname(__file__),
    )


def test_pool_in_a_forked_child_that_exits_normally():
    # The parent's pool workers do not exist in a child: the child makes its own, and
    # exits through the interpreter's normal shutdown (atexit, sanitizer leak checks).
    _run_child(
        """
        import os, numpy as np, fastreg
        from fastreg import _core
        fastreg.set_num_threads(2)
        p, g = np.zeros(2_000_000), np.ones(2_000_000)
        _core.sgd_update(p, g, None, lr=1.0)
        assert _core.pool_workers() >= 1
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                assert _core.pool_workers() == 0
                for _ in range(3):
                    _core.sgd_update(p, g, None, lr=1.0)
                assert p[0] == -4.0 and p[-1] == -4.0 and _core.pool_workers() >= 1
            except BaseException:
                code = 3
            raise SystemExit(code)  # normal interpreter exit in the child
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        _core.sgd_update(p, g, None, lr=1.0)  # the parent's pool still works
        assert p[0] == -2.0
        """
    )


# pthread_create that fails with EAGAIN (as when a container's thread limit is hit)
# once shim_allow_threads(n) is called, after n more threads have been started.
_NO_THREADS_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
static int allowed = -1; /* -1: no limit */
void shim_allow_threads(int n) { __atomic_store_n(&allowed, n, __ATOMIC_SEQ_CST); }
int pthread_create(pthread_t* t, const pthread_attr_t* a, void* (*f)(void*), void* arg) {
  static int (*real)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
  int left = __atomic_load_n(&allowed, __ATOMIC_SEQ_CST);
  while (left >= 0) {
    if (left == 0) return EAGAIN;
    if (__atomic_compare_exchange_n(&allowed, &left, left - 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) break;
  }
  if (!real) real = (int (*)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*))dlsym(RTLD_NEXT, "pthread_create");
  return real(t, a, f, arg);
}
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("cc") is None,
    reason="needs Linux and a C compiler (LD_PRELOAD shim)",
)
@pytest.mark.parametrize("allow", [0, 1])
def test_kernels_and_loader_when_no_thread_can_start(tmp_path, allow):
    # Threads are an optimisation: when the OS refuses them, every kernel, the epoch
    # loop and a prefetching DataLoader run on the threads they have (the caller's
    # at least) with the same results, instead of raising or aborting the process.
    src, lib = tmp_path / "shim.c", tmp_path / "no_threads.so"
    src.write_text(_NO_THREADS_SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src), "-ldl"], check=True, timeout=60)
    preload = " ".join(p for p in (os.environ.get("LD_PRELOAD", ""), str(lib)) if p)  # after ASan's, if any
    code = f"""
        import ctypes, numpy as np, fastreg
        from fastreg import _core
        shim = ctypes.CDLL(None)
        rng = np.random.default_rng(0)
        X = rng.normal(size=(4000, 24)).astype(np.float32)
        y = rng.integers(0, 6, 4000)
        fastreg.set_num_threads(4)
        shim.shim_allow_threads({allow})
        p, g = np.zeros(2_000_000), np.ones(2_000_000)
        for _ in range(3):
            _core.sgd_update(p, g, None, lr=1.0)
        np.testing.assert_array_equal(p, np.full(2_000_000, -3.0))
        assert _core.pool_workers() == {allow}, _core.pool_workers()
        fit = lambda: fastreg.SoftmaxRegression(lr=0.1, batch_size=64, epochs=2, random_state=0).fit(X, y)
        m = fit()
        batches = list(fastreg.DataLoader((X, y), batch_size=100, shuffle=False, prefetch=True))
        np.testing.assert_array_equal(np.concatenate([b for b, _ in batches]), X)
        np.testing.assert_array_equal(np.concatenate([t for _, t in batches]), y)
        shim.shim_allow_threads(-1)
        ref = fit()  # threads again: the same model, bit for bit
        np.testing.assert_array_equal(m.coef_, ref.coef_)
        np.testing.assert_array_equal(m.intercept_, ref.intercept_)
        """
    env = {**os.environ, "LD_PRELOAD": preload, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], timeout=JOIN_TIMEOUT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


# ----------------------------------------------------------- every kernel family
# Each entry: make(rng) -> (call, result); call() runs the kernel once on buffers of
# its own and result() reads what it produced. Big enough to run for a while (GIL
# check), used small in the concurrency check.


def _sgd_case(rng, n):
    p, g, b = rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(n)

    def call():
        _core.sgd_update(p, g, b, lr=1e-2, momentum=0.9, weight_decay=1e-3)

    return call, lambda: np.concatenate([p, b])


def _gather_case(rng, n):
    src = rng.standard_normal((n // 16, 16)).astype(np.float32)
    idx = rng.integers(0, len(src), len(src))
    out = []

    def call():
        out[:] = [_core.gather_rows(src, idx)]

    return call, lambda: out[0]


def _gather_u8_case(rng, n):
    src = rng.integers(0, 256, (n // 64, 64), dtype=np.uint8)
    idx = rng.integers(0, len(src), len(src))
    out = []

    def call():
        out[:] = [_core.gather_rows(src, idx, to_float32=True, scale=1 / 255)]

    return call, lambda: out[0]


def _permutation_case(rng, n):
    seed, out = int(rng.integers(2**63)), []

    def call():
        out[:] = [_core.random_permutation(n // 4, seed, 3)]

    return call, lambda: out[0]


def _loader_case(rng, n):
    X = rng.standard_normal((n // 64, 64)).astype(np.float32)
    loader = fastreg.DataLoader(X, 4096, shuffle=True, seed=int(rng.integers(2**63)), prefetch=False)
    loader.set_epoch(0)
    out = []

    def call():
        out[:] = [np.concatenate(list(loader))]

    return call, lambda: out[0]


def _linear_case(rng, n):
    from fastreg.linear import linear_backward

    X = rng.standard_normal((n // 64, 64)).astype(np.float32)
    W = rng.standard_normal((10, 64)).astype(np.float32)
    gy = rng.standard_normal((n // 64, 10)).astype(np.float32)
    out = []

    def call():
        out[:] = [np.concatenate([g.ravel() for g in linear_backward(X, W, gy, input_grad=True)])]

    return call, lambda: out[0]


def _fit_case(rng, n):
    X = rng.standard_normal((n // 64, 64)).astype(np.float32)
    y = rng.integers(0, 10, len(X))
    out = []

    def call():
        out[:] = [fastreg.SoftmaxRegression(epochs=1, batch_size=256, random_state=0).fit(X, y).coef_]

    return call, lambda: out[0]


KERNEL_FAMILIES = {
    "linear_backward": _linear_case,
    "SoftmaxRegression.fit": _fit_case,
    "sgd_update": _sgd_case,
    "gather_rows": _gather_case,
    "gather_rows_u8_to_f32": _gather_u8_case,
    "random_permutation": _permutation_case,
    "DataLoader": _loader_case,
}


@pytest.mark.parametrize("family", sorted(KERNEL_FAMILIES))
def test_each_kernel_family_releases_the_gil(family, rng):
    call, _ = KERNEL_FAMILIES[family](rng, 4_000_000)
    fastreg.set_num_threads(1)  # one core's worth of work: the other is free for the ticker
    try:
        # Up to 3 tries: a loaded machine can starve the ticker once; a kernel that
        # holds the GIL fails every try.
        assert any(_runs_without_gil(lambda: [call() for _ in range(3)]) for _ in range(3))
    finally:
        fastreg.set_num_threads(fastreg._core.default_num_threads())


@pytest.mark.parametrize("family", sorted(KERNEL_FAMILIES))
def test_each_kernel_family_concurrent_equals_sequential(family):
    def cases():
        rngs = [np.random.default_rng(1000 + i) for i in range(4)]
        return [KERNEL_FAMILIES[family](r, 400_000) for r in rngs]

    sequential = cases()
    expected = []
    for call, result in sequential:
        for _ in range(5):
            call()
        expected.append(result().copy())
    concurrent = cases()
    _run_threads([lambda c=c: [c() for _ in range(5)] for c, _ in concurrent])
    for (_, result), want in zip(concurrent, expected):
        np.testing.assert_array_equal(result(), want)


# ------------------------------------------------------------------- DataLoader


def _prefetching_loader(rng, n=3000, d=96, batch_size=256, seed=0):
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = np.arange(n, dtype=np.int64)
    return X, y, fastreg.DataLoader((X, y), batch_size, shuffle=True, seed=seed, prefetch=True)


@needs_proc
def test_many_iterators_in_several_threads(rng):
    X, y, _ = _prefetching_loader(rng)
    before = os_threads()

    def consume(seed):
        # Three live prefetching iterators per thread, advanced in turn.
        loaders = [
            fastreg.DataLoader((X, y), 100 + 37 * j, shuffle=True, seed=seed + j, prefetch=True) for j in range(3)
        ]
        its = [iter(dl) for dl in loaders]
        got = [[] for _ in its]
        live = set(range(len(its)))
        while live:
            for j in sorted(live):
                try:
                    xb, yb = next(its[j])
                except StopIteration:
                    live.discard(j)
                    continue
                np.testing.assert_array_equal(xb, X[yb])
                got[j].append(yb)
        for j, parts in enumerate(got):
            order = _core.random_permutation(len(X), seed + j, 0)
            np.testing.assert_array_equal(np.concatenate(parts), order)

    _run_threads([lambda s=s: consume(10 * s) for s in range(4)])
    gc.collect()
    assert wait_for_threads(before) <= before  # none left behind (an earlier test's may still be exiting)


@needs_proc
def test_one_iterator_shared_by_threads_never_crashes(rng):
    X, y, loader = _prefetching_loader(rng, n=6000, batch_size=64)
    it = iter(loader)
    seen, busy = [], []

    def pull():
        while True:
            try:
                xb, yb = next(it)
            except StopIteration:
                return
            except RuntimeError as e:  # another thread is inside next(): a clean refusal
                assert "already being advanced" in str(e)
                busy.append(1)
                time.sleep(0)
                continue
            np.testing.assert_array_equal(xb, X[yb])
            seen.append(yb)

    _run_threads([pull] * 4)
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), y)


@needs_proc
def test_iterators_abandoned_mid_epoch_leave_no_thread(rng):
    X, y, loader = _prefetching_loader(rng)
    before = os_threads()

    def abandon():
        for k in range(20):
            it = iter(loader)
            for _ in range(k % 4):
                next(it)
            if k % 3 == 0:
                it.close()  # explicit close, else just dropped
            del it

    _run_threads([abandon] * 3)
    gc.collect()
    assert wait_for_threads(before) <= before  # none left behind (an earlier test's may still be exiting)
    # A cycle keeping an iterator alive: collected later, or closed at exit.
    holder = {"it": iter(loader)}
    next(holder["it"])
    holder["self"] = holder
    del holder
    gc.collect()
    assert wait_for_threads(before) <= before  # none left behind (an earlier test's may still be exiting)


@needs_proc
def test_close_from_another_thread_while_consumer_waits(rng):
    X, y, loader = _prefetching_loader(rng, n=20000, d=256, batch_size=2048)
    before = os_threads()
    for _ in range(5):
        it = iter(loader)
        next(it)
        got = []

        def consume():  # noqa: B023 -- runs (in _run_threads) before the loop rebinds it
            for xb, yb in it:  # noqa: B023, F821 -- ends cleanly (StopIteration) once closed
                np.testing.assert_array_equal(xb, X[yb])
                got.append(len(yb))  # noqa: B023

        _run_threads([consume, it.close])
        assert it.done
        del it
    gc.collect()
    assert wait_for_threads(before) <= before  # none left behind (an earlier test's may still be exiting)


def test_dropping_an_iterator_runs_no_python_code(rng):
    # Regression: a WeakSet of live iterators ran a Python callback at every
    # iterator's death, and a Ctrl-C landing there was printed and lost.
    _, _, loader = _prefetching_loader(rng)
    it = iter(loader)
    next(it)
    calls = []
    sys.setprofile(lambda frame, event, arg: calls.append((event, frame.f_code.co_name)) if event == "call" else None)
    try:
        del it
    finally:
        sys.setprofile(None)
    assert calls == []


def test_keyboard_interrupt_while_prefetching():
    # In a child so a stray SIGINT can never reach pytest itself.
    _run_child(
        """
        import gc, os, signal, threading, time
        import numpy as np, fastreg

        def os_threads():
            return len(os.listdir("/proc/self/task"))

        X = np.random.default_rng(0).standard_normal((20000, 256)).astype(np.float32)
        y = np.arange(20000)
        loader = fastreg.DataLoader((X, y), 2048, shuffle=True, seed=1, prefetch=True)
        before = os_threads()
        interrupted = 0
        rounds = 20
        for round in range(rounds):
            timer = threading.Timer(0.001 * (round % 7 + 1), os.kill, (os.getpid(), signal.SIGINT))
            try:
                timer.start()
                for epoch in range(1000):
                    for xb, yb in loader:
                        assert np.array_equal(xb, X[yb])
                raise SystemExit("no KeyboardInterrupt came")
            except KeyboardInterrupt:
                interrupted += 1
            finally:
                timer.join()
        gc.collect()
        deadline = time.monotonic() + 5
        while os_threads() != before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os_threads() <= before, (os_threads(), before)
        # The loader still works after the interrupts.
        ys = np.concatenate([yb for _, yb in loader])
        assert np.array_equal(np.sort(ys), y)
        assert interrupted == rounds
        """
    )


@needs_fork
def test_dataloader_used_in_a_forked_child():
    # Fork after import and while the parent has a prefetching iterator mid-epoch:
    # the child iterates a new loader, finishes the inherited iterator (regression:
    # closing it used to join threads that do not exist in the child -> abort) and
    # exits normally, which runs the atexit hook closing live iterators.
    _run_child(
        """
        import os, sys, time
        import numpy as np, fastreg
        from fastreg import _core

        X = np.random.default_rng(0).standard_normal((4000, 256)).astype(np.float32)
        y = np.arange(4000)
        loader = fastreg.DataLoader((X, y), 128, shuffle=True, seed=5, prefetch=True)
        order = _core.random_permutation(4000, 5, 0)
        it = iter(loader)
        xb, yb = next(it)
        assert it.prefetching
        # The worker has queued the whole epoch (4 MB) well before this; waiting for it
        # keeps malloc out of the fork: the sanitizer CI run's allocator (GCC 12's ASan)
        # does not lock itself around fork(), so a parent thread inside malloc at that
        # moment leaves a lock held in the child (glibc's malloc has no such problem).
        time.sleep(0.5)
        assert it.prefetching
        pid = os.fork()
        if pid == 0:
            fresh = fastreg.DataLoader((X, y), 100, shuffle=True, seed=7, prefetch=True)
            ys = np.concatenate([yb for xb, yb in fresh if np.array_equal(xb, X[yb])])
            assert np.array_equal(ys, _core.random_permutation(4000, 7, 0)), "fresh loader"
            rest = np.concatenate([yb for xb, yb in it if np.array_equal(xb, X[yb])])
            assert np.array_equal(rest, order[128:]), "inherited iterator"
            kept = iter(loader)  # left open: closed by the atexit hook
            next(kept)
            sys.exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, os.waitstatus_to_exitcode(status)
        rest = np.concatenate([yb for _, yb in it])  # the parent's iterator is unaffected
        assert np.array_equal(rest, order[128:])
        """
    )


def test_dataloader_in_multiprocessing_fork_workers():
    _run_child(
        """
        import multiprocessing as mp
        import time
        import numpy as np, fastreg
        from fastreg import _core

        X = np.random.default_rng(0).standard_normal((3000, 64)).astype(np.float32)
        y = np.arange(3000)

        def work(seed):
            loader = fastreg.DataLoader((X, y), 256, shuffle=True, seed=seed, prefetch=True)
            ys = [yb for xb, yb in loader if np.array_equal(xb, X[yb])]
            return np.array_equal(np.concatenate(ys), _core.random_permutation(3000, seed, 0))

        if __name__ == "__main__":
            it = iter(fastreg.DataLoader((X, y), 256, shuffle=True, seed=1, prefetch=True))
            next(it)  # the parent's prefetching iterator is alive while forking
            time.sleep(0.5)  # its worker done queueing: no malloc across fork (see above)
            with mp.get_context("fork").Pool(2) as pool:
                assert all(pool.map(work, range(6)))
        """
    )
