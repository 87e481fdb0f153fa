"""OS thread counts, for the tests that check no thread outlives its owner.

fastreg's kernels share a small worker pool (threads named "fastreg-pool") that lives
for the whole process by design; every other thread fastreg starts (prefetch workers,
epoch teams, the threads of a call that found the pool busy) must be gone when its
owner is. The counts here leave the pool's workers out.
"""

import os
import time

POOL_NAME = "fastreg-pool"


def _task_names() -> dict[str, str]:
    """{thread id: thread name} for this process."""
    task_dir = f"/proc/{os.getpid()}/task"
    names = {}
    for tid in os.listdir(task_dir):
        try:
            with open(f"{task_dir}/{tid}/comm") as f:
                names[tid] = f.read().strip()
        except OSError:  # a thread that ended since the listing
            pass
    return names


def task_ids() -> set[str]:
    """Ids of this process's OS threads, pool workers left out."""
    return {tid for tid, name in _task_names().items() if name != POOL_NAME}


def os_threads() -> int:
    """This process's OS threads (Python's and C++'s alike), pool workers left out."""
    return len(task_ids())


def pool_threads() -> int:
    return sum(name == POOL_NAME for name in _task_names().values())


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
