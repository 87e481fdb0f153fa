"""OS thread counts, for the tests that check no thread outlives its owner."""

import os
import time


def os_threads() -> int:
    """This process's OS threads (Python's and C++'s alike)."""
    return len(os.listdir(f"/proc/{os.getpid()}/task"))


def wait_for_threads(limit: int, timeout: float = 5.0) -> int:
    """The thread count once it is at most `limit` (or whatever it is at the timeout).

    pthread_join returns when the kernel clears the thread's tid, a moment before the
    thread leaves /proc/<pid>/task, so a joined thread can still be listed briefly (and
    an earlier test's may still be exiting). The timeout only bounds a real leak.
    """
    deadline = time.monotonic() + timeout
    while os_threads() > limit and time.monotonic() < deadline:
        time.sleep(0.005)
    return os_threads()
