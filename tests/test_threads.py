"""Threads: kernels release the GIL, concurrent calls on disjoint buffers equal
sequential ones, and a process forked after kernels ran can use them."""

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np

import fastreg
from fastreg import _core


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
    inputs = [(rng.standard_normal(300_000), rng.standard_normal(300_000), rng.standard_normal(300_000))
              for _ in range(4)]
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


def test_no_threads_left_after_kernels():
    before = threading.active_count()
    p, g = np.zeros(2_000_000), np.ones(2_000_000)
    _core.sgd_update(p, g, None, lr=1.0)
    assert threading.active_count() == before
    # OS-level threads too: the kernel joins its workers before returning.
    tasks = os.listdir(f"/proc/{os.getpid()}/task")
    _core.sgd_update(p, g, None, lr=1.0)
    assert len(os.listdir(f"/proc/{os.getpid()}/task")) == len(tasks)
    assert fastreg.get_num_threads() >= 1
